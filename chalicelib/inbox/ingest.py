"""The webhook side: authenticate a delivery, store its events once, enqueue them, acknowledge.

Every webhook route calls `accept` with its provider's name. Nothing of a refused delivery is stored
(only a counter per day, provider and reason); an accepted one is stored before it is acknowledged, so
nothing is lost if processing fails later.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

from psycopg.types.json import Jsonb

from chalicelib.db import queries
from chalicelib.db.tenancy import tenant_tx
from chalicelib.db.types import Conn
from chalicelib.inbox.processing import process_event
from chalicelib.inbox.providers import PROVIDERS
from chalicelib.inbox.providers.base import Delivery, Event
from chalicelib.inbox.queue import EventQueue, LocalQueue, SqsQueue
from chalicelib.inbox.refusals import Refused
from chalicelib.inbox.webhook_records import count_rejection
from chalicelib.settings import get_settings

Q = queries.load(__package__)


def accept(provider_name: str, delivery: Delivery) -> list[uuid.UUID]:
    """Screen, verify and store one delivery, then enqueue its new events; returns their ids (none for a
    redelivery). A refusal is counted and re-raised (chalicelib.http answers it)."""
    provider = PROVIDERS[provider_name]
    try:
        screened = provider.screen(delivery)
        assert delivery.tenant is not None  # the screen refuses a delivery without a workspace
        with tenant_tx(delivery.tenant) as conn:
            verified = provider.verify(conn, delivery, screened)
            new = store_events(conn, tenant_id=delivery.tenant, channel_id=delivery.channel, provider=provider.name,
                               events=provider.events(conn, delivery, verified))
            provider.stored(conn, delivery, verified, new)
    except Refused as refused:
        count_rejection(provider.name, refused.reason)
        raise
    if new:
        get_queue().enqueue(delivery.tenant, new)
    return new


def store_events(conn: Conn, *, tenant_id: uuid.UUID, channel_id: uuid.UUID | None, provider: str,
                 events: Sequence[Event]) -> list[uuid.UUID]:
    """Insert events; returns the ids of the new ones (duplicates: none).

    The unique (tenant, provider, provider_event_id) key makes a redelivery, or two concurrent copies
    of one delivery, store one event: ON CONFLICT DO NOTHING, never a second message.
    """
    new: list[uuid.UUID] = []
    for event in events:
        rows = conn.execute(Q["inbound_event_insert"], (tenant_id, channel_id, provider, event.event_id, event.kind,
                                                        Jsonb(event.payload))).fetchall()
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
                # Locally the worker runs in this process (processing never imports the webhook side).
                _State.queue = LocalQueue(process_event)
        return _State.queue
