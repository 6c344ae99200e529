"""The worker side: turn a stored inbound event into contacts, conversations, messages, calls.

Runs asynchronously (SQS handler in production, an in-process thread locally) in the event's tenant
transaction, through the provider that stored it. Idempotent: an event is processed once
(processed_at), a message once (its provider id). A failure leaves the event stored with its attempt
count; after MAX_ATTEMPTS it is parked (dead letter). Outgoing-webhook events the processing stored wake
the dispatcher once its transaction has committed.
"""

from __future__ import annotations

import logging
import uuid

from chalicelib.db import queries
from chalicelib.db.tenancy import tenant_tx
from chalicelib.inbox.providers import PROVIDERS
from chalicelib.inbox.providers.base import StoredEvent
from chalicelib.observability import log_event
from chalicelib.outgoing import events, trigger

log = logging.getLogger("crm.inbox.worker")
MAX_ATTEMPTS = 5
Q = queries.load(__package__)


def process_event(tenant_id: uuid.UUID, event_id: uuid.UUID) -> None:
    """Process one stored event (no-op when it was already processed or is being processed)."""
    events.discard_emitted()
    try:
        with tenant_tx(tenant_id) as conn:
            row = conn.execute(Q["inbound_event_claim"], (event_id,)).fetchone()
            if row is None:
                return
            provider, kind, channel_id, payload = row
            PROVIDERS[provider].process(conn, StoredEvent(event_id, tenant_id, channel_id, kind, payload))
            conn.execute(Q["inbound_event_processed"], (event_id,))
    except Exception as exc:
        events.discard_emitted()  # rolled back: nothing was stored
        _record_failure(tenant_id, event_id, exc)
        raise
    # The webhook events the processing stored (a new contact, conversation, message, a call ended) go out now.
    trigger.after_commit(events.take_emitted())
    log_event(log, "event processed", event_id=str(event_id))


def _record_failure(tenant_id: uuid.UUID, event_id: uuid.UUID, exc: Exception) -> None:
    with tenant_tx(tenant_id) as conn:
        # The error's type only: its message may quote the payload.
        conn.execute(Q["inbound_event_failed"], (type(exc).__name__, MAX_ATTEMPTS, event_id))
