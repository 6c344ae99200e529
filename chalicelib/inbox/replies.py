"""Replies from the inbox: WhatsApp through the Graph API, email through SES (the outbox locally).

The message is recorded as queued BEFORE the provider is called and updated afterwards, so a failed or
interrupted send is never lost: it stays on the conversation with status failed (or queued) and why.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from chalicelib import errors
from chalicelib.auth.crypto import keyed_token
from chalicelib.db.tenancy import tenant_tx
from chalicelib.inbox import channels
from chalicelib.mail import delivered_message_id, new_message_id, send_email
from chalicelib.outbound import OutboundRefused, request
from chalicelib.settings import get_settings


@dataclass(frozen=True)
class Pending:
    """A reply recorded as queued, with what sending it needs."""

    message_id: uuid.UUID
    channel: channels.ChannelOut
    secrets: channels.ChannelSecrets
    to: str | None
    subject: str | None
    references: list[str]
    email_message_id: str | None


def reply_address(conversation_id: uuid.UUID, domain: str) -> str:
    """A Reply-To that leads answers back to this conversation (signed: it cannot be forged for another)."""
    signature = keyed_token("reply-address", str(conversation_id))[:16].lower().replace("_", "x").replace("-", "y")
    return f"reply+{conversation_id}.{signature}@{domain}"


def conversation_of_reply_address(address: str) -> uuid.UUID | None:
    """The conversation a signed reply address names, or None when it is not one of ours."""
    local = address.split("@", 1)[0]
    if not local.startswith("reply+") or "." not in local:
        return None
    raw_id, _, signature = local.removeprefix("reply+").partition(".")
    try:
        conversation = uuid.UUID(raw_id)
    except ValueError:
        return None
    expected = reply_address(conversation, "x").split("@")[0].rsplit(".", 1)[1]
    from chalicelib.auth.crypto import same

    return conversation if same(signature, expected) else None


def record(tenant: uuid.UUID, conversation_id: uuid.UUID, body: str, author: uuid.UUID | None) -> Pending:
    """Store the reply as queued (committed before any provider call)."""
    now = datetime.now(UTC)
    with tenant_tx(tenant) as conn:
        conversation = conn.execute("SELECT channel_id, contact_id, thread_key, subject FROM conversations"
                                    " WHERE id = %s", (conversation_id,)).fetchone()
        if conversation is None:
            raise errors.NotFound("no such conversation")
        loaded = channels.load(conn, tenant_id=tenant, channel_id=conversation[0])
        if loaded is None:
            raise errors.NotFound("no such conversation")
        channel, secrets = loaded
        contact = conn.execute("SELECT email, phone FROM contacts WHERE id = %s", (conversation[1],)).fetchone()
        references = [str(r[0]) for r in conn.execute(
            "SELECT email_message_id FROM messages WHERE conversation_id = %s AND email_message_id IS NOT NULL"
            " ORDER BY sent_at, created_at", (conversation_id,))]
        # The one id of this reply: stored here and sent as its Message-ID, so an answer that quotes it
        # (In-Reply-To/References) finds this conversation.
        email_id = new_message_id(_mail_domain(channel)) if channel.type == "email" else None
        message = uuid.uuid4()
        conn.execute("INSERT INTO messages (tenant_id, id, conversation_id, direction, kind, body, status, sent_at,"
                     " email_message_id) VALUES (%s, %s, %s, 'out', 'text', %s, 'queued', %s, %s)",
                     (tenant, message, conversation_id, body, now, email_id))
        conn.execute("UPDATE conversations SET last_message_at = %s, updated_at = %s WHERE id = %s",
                     (now, now, conversation_id))
        to = (contact[1] if channel.type == "whatsapp" else contact[0]) if contact else None
        if channel.type == "whatsapp" and to is None:
            to = str(conversation[2])  # the thread key of a WhatsApp conversation is the number
    return Pending(message, channel, secrets, to, conversation[3], references, email_id)


def send(tenant: uuid.UUID, conversation_id: uuid.UUID, pending: Pending, body: str) -> tuple[str, str | None]:
    """Call the provider; record sent (with its id) or failed (with why). Returns (status, error)."""
    settings = get_settings()
    provider_id: str | None = None
    email_id = pending.email_message_id
    try:
        if pending.to is None:
            raise OutboundRefused("the conversation has no address to answer")
        if pending.channel.type == "whatsapp":
            allow = frozenset(settings.outbound_allow_hosts)
            provider_id = _send_whatsapp(pending, body, settings.graph_base_url, allow)
        else:
            assert email_id is not None  # record() gives every email reply its id
            headers = {"Reply-To": reply_address(conversation_id, _mail_domain(pending.channel))}
            if pending.references:
                headers["In-Reply-To"] = f"<{pending.references[-1]}>"
                headers["References"] = " ".join(f"<{r}>" for r in pending.references[-20:])
            sent = send_email(to=pending.to, subject="Re: " + (pending.subject or "your message"), text=body,
                              sender=pending.channel.address or settings.mail_from, headers=headers,
                              settings=settings, message_id=email_id)
            email_id = delivered_message_id(sent, email_id, settings)
        status, error = "sent", None
    except OutboundRefused as exc:
        status, error = "failed", str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 - recorded on the message, whatever the provider did
        status, error = "failed", type(exc).__name__
    with tenant_tx(tenant) as conn:
        conn.execute("UPDATE messages SET status = %s, status_rank = %s, error = %s, provider_message_id = %s,"
                     " email_message_id = %s WHERE id = %s",
                     (status, 1 if status == "sent" else 4, error, provider_id, email_id, pending.message_id))
    return status, error


def _mail_domain(channel: channels.ChannelOut) -> str:
    """The domain of the channel's address: our Message-IDs and signed reply addresses live under it."""
    return (channel.address or "crm.localhost").split("@")[-1]


def _send_whatsapp(pending: Pending, body: str, graph: str, allow: frozenset[str]) -> str:
    assert pending.secrets.access_token is not None and pending.to is not None
    payload = {"messaging_product": "whatsapp", "to": pending.to.lstrip("+"), "type": "text",
               "text": {"body": body}}
    response = request("POST", f"{graph}/{pending.channel.phone_number_id}/messages",
                       headers={"Authorization": f"Bearer {pending.secrets.access_token.get_secret_value()}",
                                "Content-Type": "application/json"},
                       body=json.dumps(payload).encode(), allow=allow, max_bytes=65536)
    if response.status >= 300:
        raise OutboundRefused(f"the Graph API answered {response.status}")
    try:
        return str(json.loads(response.body)["messages"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise OutboundRefused("the Graph API answer has no message id") from None
