"""Inbound email: accept a Mailgun delivery (webhook side) and file it into a conversation (worker side)."""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from psycopg import Connection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from chalicelib.blobs import get_blobs
from chalicelib.db.tenancy import tenant_tx
from chalicelib.inbox import channels
from chalicelib.inbox.ingest import Rejected, store_events
from chalicelib.inbox.providers import mailgun
from chalicelib.inbox.providers.signatures import mailgun_valid

Conn = Connection[TupleRow]


def accept(tenant: uuid.UUID, channel_id: uuid.UUID, raw: bytes, content_type: str) -> list[uuid.UUID]:
    """Authenticate and store one delivery; returns the new event ids (none for a duplicate)."""
    try:
        # Mailgun signs timestamp + token (form fields), not the body: the form is parsed to read them,
        # and nothing else of it is used before the check.
        delivery = mailgun.parse(raw, content_type)
    except mailgun.MalformedDelivery:
        raise Rejected("malformed", 400) from None
    fields = delivery.fields
    with tenant_tx(tenant) as conn:
        found = channels.load(conn, tenant_id=tenant, channel_id=channel_id)
        if found is None or found[0].type != "email" or found[1].signing_key is None:
            raise Rejected("unknown_channel", 404)
        if not mailgun_valid(found[1].signing_key.get_secret_value(), fields.get("timestamp", ""),
                             fields.get("token", ""), fields.get("signature", ""), datetime.now(UTC)):
            raise Rejected("bad_signature", 401)
        # A token is good once: a captured delivery replayed within the 5 minutes is refused.
        seen = conn.execute("INSERT INTO webhook_replay_tokens (provider, token_hash) VALUES ('mailgun', %s)"
                            " ON CONFLICT DO NOTHING RETURNING 1",
                            (hashlib.sha256(fields["token"].encode()).digest(),)).fetchall()
        if not seen:
            raise Rejected("replayed", 401)
        key = delivery.message_id or "token:" + hashlib.sha256(fields["token"].encode()).hexdigest()
        payload: dict[str, Any] = {
            "sender": fields.get("sender") or fields.get("from") or fields.get("From"),
            "recipient": fields.get("recipient"), "subject": fields.get("subject") or fields.get("Subject"),
            "text": fields.get("stripped-text") or fields.get("body-plain"), "message_id": delivery.message_id,
            "references": delivery.references(),
        }
        new = store_events(conn, tenant_id=tenant, channel_id=channel_id, provider="mailgun",
                           events=[("message", key, payload)])
        if new and delivery.files:
            files = _store_files(tenant, new[0], delivery.files)
            conn.execute("UPDATE inbound_events SET payload = payload || %s WHERE id = %s",
                         (Jsonb({"files": files}), new[0]))
    return new


def _store_files(tenant: uuid.UUID, event_id: uuid.UUID, files: list[mailgun.File]) -> list[dict[str, Any]]:
    blobs, stored = get_blobs(), []
    with tempfile.TemporaryDirectory() as tmp:
        for index, item in enumerate(files):
            key = f"tenants/{tenant}/attachments/{event_id}/{index}"
            path = Path(tmp) / str(index)
            path.write_bytes(item.data)
            blobs.put_file(key, path)
            stored.append({"filename": (item.filename or "")[:255] or None, "content_type": item.content_type,
                           "size": len(item.data), "sha256": hashlib.sha256(item.data).hexdigest(), "blob_key": key})
    return stored


def file_message(conn: Conn, tenant: uuid.UUID, channel_id: uuid.UUID, payload: dict[str, Any]) -> None:
    """Worker side: contact by address, conversation by thread, the message and its attachments."""
    from chalicelib.auth.addresses import normalize_email
    from chalicelib.inbox.processing import conversation_for

    address = parseaddr(str(payload.get("sender") or ""))[1]
    try:
        email = normalize_email(address)
    except ValueError:
        email = None
    contact = _contact_for_email(conn, tenant, email) if email else None
    at = datetime.now(UTC)
    references = [str(r) for r in payload.get("references") or []]
    earlier = conn.execute("SELECT conversation_id FROM messages WHERE email_message_id = ANY(%s)"
                           " ORDER BY sent_at LIMIT 1", (references,)).fetchone() if references else None
    message_id = str(payload.get("message_id") or uuid.uuid4())
    if earlier is None:
        # Answers sent to a signed reply address (reply+<conversation>.<sig>@…) join that conversation.
        from chalicelib.inbox.replies import conversation_of_reply_address

        named = conversation_of_reply_address(parseaddr(str(payload.get("recipient") or ""))[1])
        if named is not None:
            earlier = conn.execute("SELECT id FROM conversations WHERE id = %s", (named,)).fetchone()
    if earlier is not None:
        conversation = uuid.UUID(str(earlier[0]))
        conn.execute("UPDATE conversations SET last_message_at = %s, status = 'open' WHERE id = %s",
                     (at, conversation))
    else:
        conversation = conversation_for(conn, tenant, channel_id, message_id, contact, at,
                                        subject=(payload.get("subject") or None))
    row = conn.execute(
        "INSERT INTO messages (tenant_id, conversation_id, direction, kind, body, provider_message_id,"
        " email_message_id, status, sent_at) VALUES (%s, %s, 'in', 'email', %s, %s, %s, 'received', %s)"
        " ON CONFLICT (tenant_id, provider_message_id) DO NOTHING RETURNING id",
        (tenant, conversation, payload.get("text"), "email:" + message_id, message_id, at)).fetchone()
    if row is None:
        return
    for item in payload.get("files") or []:
        conn.execute("INSERT INTO attachments (tenant_id, message_id, filename, content_type, size_bytes, sha256,"
                     " blob_key) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                     (tenant, row[0], item["filename"], item["content_type"], item["size"], item["sha256"],
                      item["blob_key"]))


def _contact_for_email(conn: Conn, tenant: uuid.UUID, email: str) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO contacts (tenant_id, email) VALUES (%s, %s)"
        " ON CONFLICT (tenant_id, lower(email)) WHERE email IS NOT NULL DO UPDATE SET email = contacts.email"
        " RETURNING id", (tenant, email)).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))
