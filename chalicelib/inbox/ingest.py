"""The webhook side: authenticate a delivery, store its events once, enqueue them, acknowledge.

Nothing of a rejected delivery is stored (only a counter per day, provider and reason); an accepted
one is stored before it is acknowledged, so nothing is lost if processing fails later.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from psycopg import Connection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from chalicelib.db.tenancy import user_tx
from chalicelib.inbox.queue import EventQueue, LocalQueue, SqsQueue
from chalicelib.observability import log_event
from chalicelib.settings import get_settings

Conn = Connection[TupleRow]
log = logging.getLogger("crm.inbox")


class Rejected(Exception):
    """A delivery we refuse; `reason` is a short fixed word (counted, logged), never payload data."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def count_rejection(provider: str, reason: str) -> None:
    """Count a rejected delivery (its own transaction: the request itself is refused)."""
    with user_tx() as conn:
        conn.execute("INSERT INTO webhook_rejections (day, provider, reason, count) VALUES (%s, %s, %s, 1)"
                     " ON CONFLICT (day, provider, reason) DO UPDATE SET count = webhook_rejections.count + 1",
                     (datetime.now(UTC).date(), provider, reason))
    log_event(log, "webhook rejected", provider=provider, reason=reason)


def store_events(conn: Conn, *, tenant_id: uuid.UUID, channel_id: uuid.UUID | None, provider: str,
                 events: Sequence[tuple[str, str, dict[str, object]]]) -> list[uuid.UUID]:
    """Insert (kind, provider id, payload) events; returns the ids of the new ones (duplicates: none).

    The unique (tenant, provider, provider_event_id) key makes a redelivery, or two concurrent copies
    of one delivery, store one event: ON CONFLICT DO NOTHING, never a second message.
    """
    new: list[uuid.UUID] = []
    for kind, provider_id, payload in events:
        rows = conn.execute(
            "INSERT INTO inbound_events (tenant_id, channel_id, provider, provider_event_id, kind, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, provider, provider_event_id) DO NOTHING"
            " RETURNING id", (tenant_id, channel_id, provider, provider_id, kind, Jsonb(payload))).fetchall()
        new.extend(r[0] for r in rows)
    return new


class _State:
    lock = threading.Lock()
    queue: EventQueue | None = None


def use_queue(event_queue: EventQueue | None) -> None:
    """Install the process-wide queue (tests install a LocalQueue they can drain)."""
    with _State.lock:
        _State.queue = event_queue


def get_queue() -> EventQueue:
    """The queue the settings describe, built on first use."""
    with _State.lock:
        if _State.queue is None:
            settings = get_settings()
            if settings.queue_backend == "sqs":
                assert settings.queue_url is not None
                _State.queue = SqsQueue(settings.queue_url)
            else:
                from chalicelib.inbox.processing import process_event

                _State.queue = LocalQueue(process_event)
        return _State.queue
