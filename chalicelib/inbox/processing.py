"""The worker side: turn a stored inbound event into contacts, conversations, messages, statuses.

Runs asynchronously (SQS handler in production, an in-process thread locally) in the event's tenant
transaction. Idempotent: an event is processed once (processed_at), a message once (its provider id).
A failure leaves the event stored with its attempt count; after MAX_ATTEMPTS it is parked (dead letter).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import TupleRow

from chalicelib.db.tenancy import tenant_tx
from chalicelib.inbox.providers import whatsapp
from chalicelib.observability import log_event

Conn = Connection[TupleRow]
log = logging.getLogger("crm.inbox.worker")
MAX_ATTEMPTS = 5


def process_event(tenant_id: uuid.UUID, event_id: uuid.UUID) -> None:
    """Process one stored event (no-op when it was already processed or is being processed)."""
    try:
        with tenant_tx(tenant_id) as conn:
            row = conn.execute("SELECT provider, kind, channel_id, payload FROM inbound_events WHERE id = %s"
                               " AND processed_at IS NULL FOR UPDATE SKIP LOCKED", (event_id,)).fetchone()
            if row is None:
                return
            provider, kind, channel_id, payload = row
            if provider == "whatsapp" and kind == "message":
                _whatsapp_message(conn, tenant_id, channel_id, payload)
            elif provider == "whatsapp" and kind == "status":
                _whatsapp_status(conn, payload)
            elif provider == "mailgun" and kind == "message":
                from chalicelib.inbox.email_inbound import file_message

                file_message(conn, tenant_id, channel_id, payload)
            elif provider == "twilio":
                from chalicelib.inbox import calls

                calls.process(conn, tenant_id, event_id, kind, payload)
            conn.execute("UPDATE inbound_events SET processed_at = now(), attempts = attempts + 1 WHERE id = %s",
                         (event_id,))
    except Exception as exc:
        _record_failure(tenant_id, event_id, exc)
        raise
    log_event(log, "event processed", event_id=str(event_id))


def _record_failure(tenant_id: uuid.UUID, event_id: uuid.UUID, exc: Exception) -> None:
    with tenant_tx(tenant_id) as conn:
        # The error's type only: its message may quote the payload.
        conn.execute("UPDATE inbound_events SET attempts = attempts + 1, last_error = %s,"
                     " processed_at = CASE WHEN attempts + 1 >= %s THEN now() END WHERE id = %s",
                     (type(exc).__name__, MAX_ATTEMPTS, event_id))


def contact_for_phone(conn: Conn, tenant_id: uuid.UUID, phone: str, name: str | None) -> uuid.UUID:
    """The workspace's contact with this E.164 number, created when unknown (one per number)."""
    # Two events from a new number at once must not create two contacts.
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7301552))", (f"{tenant_id}:{phone}",))
    found = conn.execute("SELECT id FROM contacts WHERE phone = %s ORDER BY created_at LIMIT 1", (phone,)).fetchone()
    if found is not None:
        return uuid.UUID(str(found[0]))
    first, _, last = (name or "").partition(" ")
    row = conn.execute("INSERT INTO contacts (tenant_id, first_name, last_name, phone) VALUES (%s, %s, %s, %s)"
                       " RETURNING id", (tenant_id, first or None, last or None, phone)).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def conversation_for(conn: Conn, tenant_id: uuid.UUID, channel_id: uuid.UUID, thread_key: str,
                     contact_id: uuid.UUID | None, at: datetime, subject: str | None = None) -> uuid.UUID:
    """The open-or-closed conversation of a thread, created on first message; last_message_at advanced."""
    row = conn.execute(
        "INSERT INTO conversations (tenant_id, channel_id, thread_key, contact_id, subject, last_message_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, channel_id, thread_key) DO UPDATE SET"
        " last_message_at = greatest(conversations.last_message_at, EXCLUDED.last_message_at),"
        " status = 'open', updated_at = now() RETURNING id",
        (tenant_id, channel_id, thread_key, contact_id, subject, at)).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _timestamp(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)


def _whatsapp_message(conn: Conn, tenant_id: uuid.UUID, channel_id: uuid.UUID, message: dict[str, Any]) -> None:
    from chalicelib.crm.values import normalize_phone

    phone = normalize_phone("+" + str(message.get("from", "")).lstrip("+"))
    at = _timestamp(message.get("timestamp"))
    contact = contact_for_phone(conn, tenant_id, phone, message.get("profile_name"))
    conversation = conversation_for(conn, tenant_id, channel_id, phone, contact, at)
    row = conn.execute(
        "INSERT INTO messages (tenant_id, conversation_id, direction, kind, body, provider_message_id, status,"
        " sent_at) VALUES (%s, %s, 'in', %s, %s, %s, 'received', %s)"
        " ON CONFLICT (tenant_id, provider_message_id) DO NOTHING RETURNING id",
        (tenant_id, conversation, str(message.get("type", "text")), whatsapp.body_of(message), message.get("id"),
         at)).fetchone()
    media = whatsapp.media_of(message)
    if row is not None and media is not None:
        from chalicelib.inbox import channels
        from chalicelib.inbox.media import fetch_and_store
        from chalicelib.outbound import OutboundRefused

        loaded = channels.load(conn, tenant_id=tenant_id, channel_id=channel_id)
        try:
            if loaded is not None:
                fetch_and_store(conn, tenant=tenant_id, message_id=uuid.UUID(str(row[0])), secrets=loaded[1],
                                media=media)
        except OutboundRefused as exc:
            # The message is kept; the missing media is said on it (the reason has no payload data).
            log_event(log, "media not fetched", reason=str(exc)[:80])
            conn.execute("UPDATE messages SET error = 'media_unavailable' WHERE id = %s", (row[0],))


def _whatsapp_status(conn: Conn, status: dict[str, Any]) -> None:
    state = str(status["status"])
    rank = whatsapp.STATUS_RANK[state]
    error = None
    if state == "failed":
        errors = status.get("errors") or [{}]
        error = str(errors[0].get("code", "failed")) if isinstance(errors[0], dict) else "failed"
    # Only forward: a late "delivered" after "read" changes nothing.
    conn.execute("UPDATE messages SET status = %s, status_rank = %s, error = coalesce(%s, error)"
                 " WHERE provider_message_id = %s AND status_rank < %s",
                 (state, rank, error, status.get("id"), rank))
