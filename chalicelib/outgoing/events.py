"""Emitting an event: one statement queued in the change's own transaction (no round trip of its own).

app.emit_webhook / app.emit_webhook_row (migrations 0021, 0022) store the event only when an enabled
endpoint of the workspace subscribes to its type; a workspace without endpoints pays one index probe, planned
once per session. The change's transaction writes the event's one row; the dispatcher fans it out to its
endpoints (delivery.py). After the transaction commits, `take_emitted()` names the workspaces whose events
are waiting, and the caller wakes the dispatcher for them (SQS in production, a thread locally; trigger.py).

This module imports nothing of the CRM or the inbox, so any write path can call it.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from chalicelib.db import queries
from chalicelib.db.types import Conn

Q = queries.load(__package__)

# Every event type a workspace can subscribe to (catalogue.py describes each and its data's JSON Schema).
EVENT_TYPES = frozenset({
    "contact.created", "contact.updated", "contact.deleted",
    "company.created", "company.updated", "company.deleted",
    "lead.created", "lead.updated", "lead.deleted", "lead.stage_changed", "lead.won", "lead.lost",
    "note.created",
    "conversation.created",
    "message.received", "message.sent", "message.failed",
    "call.completed",
    "proposal.sent", "proposal.signed", "proposal.paid",
    "member.added", "member.removed",
    "endpoint.disabled",
})
# Tables whose rows an event may carry as a snapshot (rendered like the API's GET when delivered).
RESOURCE_TABLES = frozenset({"contacts", "companies", "leads", "notes", "conversations", "messages", "calls"})

Pending = Callable[[], bool]
_EMITTED: contextvars.ContextVar[tuple[tuple[uuid.UUID, Pending], ...]] = contextvars.ContextVar(
    "webhook_events_emitted", default=())


def _check(event_type: str) -> None:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type}")


def _remember(tenant_id: uuid.UUID, fetch: Callable[[], tuple[Any, ...] | None]) -> None:
    def stored() -> bool:
        row = fetch()
        return bool(row and row[0])

    _EMITTED.set((*_EMITTED.get(), (tenant_id, stored)))


def emit(conn: Conn, *, tenant_id: uuid.UUID, event_type: str, data: Mapping[str, Any]) -> None:
    """Queue an event whose `data` is given (JSON-ready values) in the caller's transaction."""
    _check(event_type)
    cursor = conn.execute(Q["webhook_emit"], (tenant_id, event_type, None, Jsonb(dict(data))))
    _remember(tenant_id, cursor.fetchone)


def emit_row(conn: Conn, *, tenant_id: uuid.UUID, event_type: str, table: str, record_id: uuid.UUID) -> None:
    """Queue an event carrying a row of `table` as it stands at this point of the transaction (queue it
    after the statements that write the row)."""
    _check(event_type)
    if table not in RESOURCE_TABLES:
        raise ValueError(f"{table} is not a webhook resource table")
    cursor = conn.execute(Q["webhook_emit_row"], (tenant_id, event_type, table, record_id))
    _remember(tenant_id, cursor.fetchone)


def emit_rows(conn: Conn, *, tenant_id: uuid.UUID, event_type: str, table: str,
              record_ids: list[uuid.UUID]) -> None:
    """emit_row for many rows of one table in one statement (a bulk import)."""
    _check(event_type)
    if table not in RESOURCE_TABLES:
        raise ValueError(f"{table} is not a webhook resource table")
    if record_ids:
        cursor = conn.execute(Q["webhook_emit_rows"], (tenant_id, event_type, table, record_ids))
        _remember(tenant_id, cursor.fetchone)


def emit_deleted(conn: Conn, *, tenant_id: uuid.UUID, event_type: str, record_id: uuid.UUID) -> None:
    """Queue a `*.deleted` event: its data is the id of what was deleted."""
    emit(conn, tenant_id=tenant_id, event_type=event_type, data={"id": str(record_id)})


def take_emitted() -> set[uuid.UUID]:
    """The workspaces that stored events since the last call (call after their transactions committed)."""
    emitted = _EMITTED.get()
    _EMITTED.set(())
    tenants = set()
    for tenant_id, stored in emitted:
        # A statement of a rolled-back transaction has no result (or an error): nothing was stored.
        with contextlib.suppress(psycopg.Error):
            if stored():
                tenants.add(tenant_id)
    return tenants


def discard_emitted() -> None:
    """Forget what was emitted (the transaction was rolled back, or a new request begins)."""
    _EMITTED.set(())
