"""Replies from the inbox, through the provider that serves the conversation's channel.

The message is recorded as queued BEFORE the provider is called and updated afterwards, so a failed or
interrupted send is never lost: it stays on the conversation with status failed (or queued) and why. The
outcome emits message.sent or message.failed in the transaction that records it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from chalicelib import errors
from chalicelib.db import queries
from chalicelib.db.tenancy import tenant_tx
from chalicelib.inbox import channels, conversations
from chalicelib.inbox.providers import for_channel, mailgun
from chalicelib.inbox.providers.base import Reply
from chalicelib.mail import new_message_id
from chalicelib.outbound import OutboundRefused

Q = queries.load(__package__)


def record(tenant: uuid.UUID, conversation_id: uuid.UUID, body: str, author: uuid.UUID | None) -> Reply:
    """Store the reply as queued (committed before any provider call)."""
    now = datetime.now(UTC)
    with tenant_tx(tenant) as conn:
        conversation = conn.execute(Q["reply_conversation"], (conversation_id,)).fetchone()
        if conversation is None:
            raise errors.NotFound("no such conversation")
        loaded = channels.load(conn, tenant_id=tenant, channel_id=conversation[0])
        if loaded is None:
            raise errors.NotFound("no such conversation")
        channel, secrets = loaded
        contact = conn.execute(Q["reply_contact_addresses"], (conversation[1],)).fetchone()
        references = [str(r[0]) for r in conn.execute(Q["reply_references"], (conversation_id,))]
        # The one id of this reply: stored here and sent as its Message-ID, so an answer that quotes it
        # (In-Reply-To/References) finds this conversation.
        email_id = new_message_id(mailgun.mail_domain(channel)) if channel.type == "email" else None
        message = uuid.uuid4()
        conn.execute(Q["reply_message_insert"], (tenant, message, conversation_id, body, now, email_id))
        conn.execute(Q["reply_conversation_touch"], (now, now, conversation_id))
        to = (contact[1] if channel.type == "whatsapp" else contact[0]) if contact else None
        if channel.type == "whatsapp" and to is None:
            to = str(conversation[2])  # the thread key of a WhatsApp conversation is the number
    return Reply(message, conversation_id, channel, secrets, to, conversation[3], references, email_id)


def send(tenant: uuid.UUID, reply: Reply, body: str) -> tuple[str, str | None]:
    """Call the provider; record sent (with its id) or failed (with why). Returns (status, error)."""
    provider_id: str | None = None
    email_id = reply.email_message_id
    status: Literal["sent", "failed"]
    try:
        if reply.to is None:
            raise OutboundRefused("the conversation has no address to answer")
        sent = for_channel(reply.channel.type).send_reply(reply, body)
        provider_id, email_id = sent.provider_message_id, sent.email_message_id or email_id
        status, error = "sent", None
    except OutboundRefused as exc:
        status, error = "failed", str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 - recorded on the message, whatever the provider did
        status, error = "failed", type(exc).__name__
    with tenant_tx(tenant) as conn:
        conn.execute(Q["reply_message_outcome"],
                     (status, 1 if status == "sent" else 4, error, provider_id, email_id, reply.message_id))
        conversations.send_result(conn, tenant, reply.message_id, status)
    return status, error
