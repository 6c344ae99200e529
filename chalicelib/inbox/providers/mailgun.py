"""Mailgun inbound email: signed, replay-protected deliveries; the email filed into its thread; replies.

A delivery is form fields (urlencoded, or multipart with attachment-N files) or body-mime. In a multipart
delivery only file parts (those with a filename) are attachments: Mailgun's own fields beside them, such
as attachment-count and content-id-map, are plain form fields. Parsing uses the standard library's
`email` package (multipart/form-data and RFC 5322 MIME alike); only the fields Mailgun signs are read
before the signature check. Replies to an email conversation go out through SES (chalicelib.mail) with
the Message-ID stored on the reply, so an answer that quotes it finds the conversation again.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from psycopg.types.json import Jsonb

from chalicelib.auth.crypto import keyed_token, same
from chalicelib.blobs import get_blobs
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.inbox import channels, conversations
from chalicelib.inbox.providers.base import Delivery, Event, Reply, Sent, StoredEvent
from chalicelib.inbox.refusals import BadSignature, Malformed, Replayed, UnknownSource
from chalicelib.inbox.webhook_records import first_use
from chalicelib.settings import get_settings

MAX_AGE = timedelta(minutes=5)
MAX_ATTACHMENTS = 20
Q = queries.load(__package__)


class MalformedDelivery(Malformed):
    """The body is not a Mailgun delivery."""


@dataclass(frozen=True)
class File:
    """An attached file."""

    filename: str | None
    content_type: str
    data: bytes = field(repr=False)


@dataclass
class Form:
    """What one inbound email delivery carries."""

    fields: dict[str, str]
    files: list[File]

    @property
    def message_id(self) -> str | None:
        """The email's Message-Id (angle brackets removed)."""
        return _bare(self.fields.get("Message-Id") or self.fields.get("message-id"))

    def references(self) -> list[str]:
        """Message-Ids this email answers (In-Reply-To first, then References)."""
        ids = [_bare(self.fields.get("In-Reply-To"))]
        ids += [_bare(part) for part in (self.fields.get("References") or "").split()]
        return [i for i in dict.fromkeys(ids) if i]


def _bare(value: str | None) -> str | None:
    if not value:
        return None
    return value.strip().strip("<>").strip()[:998] or None


def parse(raw: bytes, content_type: str) -> Form:
    """Fields and files of a delivery (MalformedDelivery for anything else)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            raise MalformedDelivery("bad form") from None
        delivery = Form({k: v[0] for k, v in form.items()}, [])
    elif kind == "multipart/form-data":
        delivery = _multipart(raw, content_type)
    else:
        raise MalformedDelivery("unsupported content type")
    if "body-mime" in delivery.fields:
        _from_mime(delivery, delivery.fields["body-mime"].encode())
    if len(delivery.files) > MAX_ATTACHMENTS:
        raise MalformedDelivery("too many attachments")
    return delivery


def _multipart(raw: bytes, content_type: str) -> Form:
    head = f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n".encode()
    message = email.message_from_bytes(head + raw, policy=email.policy.default)
    if not message.is_multipart():
        raise MalformedDelivery("not multipart")
    fields: dict[str, str] = {}
    files: list[File] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        # A file part, whatever its field name: "attachment-count" is a field, never a 1-byte text file.
        if filename is not None:
            files.append(File(filename, part.get_content_type(), data))
        else:
            fields[name] = data.decode(part.get_content_charset() or "utf-8", errors="replace")
    return Form(fields, files)


def _from_mime(delivery: Form, mime: bytes) -> None:
    """Fill subject, ids, text and attachments from a raw RFC 5322 message (body-mime)."""
    message = email.message_from_bytes(mime, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    for header in ("Message-Id", "In-Reply-To", "References", "Subject", "From"):
        if message[header] is not None:
            delivery.fields.setdefault(header, str(message[header]))
    delivery.fields.setdefault("subject", str(message["Subject"] or ""))
    delivery.fields.setdefault("sender", str(message["From"] or ""))
    body = message.get_body(preferencelist=("plain",))
    if body is not None and "body-plain" not in delivery.fields:
        delivery.fields["body-plain"] = body.get_content()
    for attachment in message.iter_attachments():
        payload = attachment.get_payload(decode=True)
        delivery.files.append(File(attachment.get_filename(), attachment.get_content_type(),
                                   payload if isinstance(payload, bytes) else b""))


def signature_valid(signing_key: str, timestamp: str, token: str, signature: str, now: datetime) -> bool:
    """Mailgun's `signature` = hex HMAC-SHA256(signing key, timestamp + token), timestamp within 5 minutes.

    The caller must also refuse a token it has seen before (replay), which this pure check cannot know.
    """
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12 and token and signature):
        return False
    if abs(now.timestamp() - int(timestamp)) > MAX_AGE.total_seconds():
        return False
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


class Mailgun:
    """The Mailgun inbound provider (channel type "email")."""

    name = "mailgun"
    channel_type: str | None = "email"

    def screen(self, delivery: Delivery) -> Form:
        """The form: Mailgun signs timestamp + token (form fields), not the body, so it is parsed to read
        them; nothing else of it is used before the signature check."""
        return parse(delivery.raw, delivery.header("content-type") or "")

    def verify(self, conn: Conn, delivery: Delivery, screened: object) -> Form:
        """The channel's signing key over timestamp + token, and the token's first use; returns the form."""
        assert delivery.tenant is not None and delivery.channel is not None and isinstance(screened, Form)
        form, fields = screened, screened.fields
        found = channels.load(conn, tenant_id=delivery.tenant, channel_id=delivery.channel)
        if found is None or found[0].type != "email" or found[1].signing_key is None:
            raise UnknownSource()
        if not signature_valid(found[1].signing_key.get_secret_value(), fields.get("timestamp", ""),
                               fields.get("token", ""), fields.get("signature", ""), datetime.now(UTC)):
            raise BadSignature()
        # A token is good once: a captured delivery replayed within the 5 minutes is refused.
        if not first_use(conn, self.name, fields["token"]):
            raise Replayed()
        return form

    def events(self, conn: Conn, delivery: Delivery, verified: object) -> list[Event]:
        """One message event, keyed by its Message-Id (or its token when it has none)."""
        assert isinstance(verified, Form)
        fields = verified.fields
        key = verified.message_id or "token:" + hashlib.sha256(fields["token"].encode()).hexdigest()
        payload: dict[str, Any] = {
            "sender": fields.get("sender") or fields.get("from") or fields.get("From"),
            "recipient": fields.get("recipient"), "subject": fields.get("subject") or fields.get("Subject"),
            "text": fields.get("stripped-text") or fields.get("body-plain"), "message_id": verified.message_id,
            "references": verified.references(),
        }
        return [Event("message", key, payload)]

    def stored(self, conn: Conn, delivery: Delivery, verified: object, new: list[uuid.UUID]) -> None:
        """The files of a new email go to the blob store; the event lists them (never their bytes)."""
        assert isinstance(verified, Form)
        if new and verified.files:
            assert delivery.tenant is not None
            files = _store_files(delivery.tenant, new[0], verified.files)
            conn.execute(Q["inbound_event_add_files"], (Jsonb({"files": files}), new[0]))

    def process(self, conn: Conn, event: StoredEvent) -> None:
        """Contact by address, conversation by thread (headers, then a signed reply address), message, files."""
        if event.kind == "message":
            assert event.channel is not None  # an email arrives through a channel
            _file_message(conn, event.tenant, event.channel, event.payload)

    def send_reply(self, reply: Reply, body: str) -> Sent:
        """Through SES (the local outbox when not on AWS), threaded with In-Reply-To / References."""
        from chalicelib.mail import delivered_message_id, send_email

        settings = get_settings()
        # Every email reply gets its id when it is recorded; send() refuses a reply with no address.
        assert reply.email_message_id is not None and reply.to is not None
        headers = {"Reply-To": reply_address(reply.conversation_id, mail_domain(reply.channel))}
        if reply.references:
            headers["In-Reply-To"] = f"<{reply.references[-1]}>"
            headers["References"] = " ".join(f"<{r}>" for r in reply.references[-20:])
        sent = send_email(to=reply.to, subject="Re: " + (reply.subject or "your message"), text=body,
                          sender=reply.channel.address or settings.mail_from, headers=headers,
                          settings=settings, message_id=reply.email_message_id)
        return Sent(None, delivered_message_id(sent, reply.email_message_id, settings))


PROVIDER = Mailgun()


def mail_domain(channel: channels.ChannelOut) -> str:
    """The domain of the channel's address: our Message-IDs and signed reply addresses live under it."""
    return (channel.address or "crm.localhost").split("@")[-1]


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
    return conversation if same(signature, expected) else None


def _store_files(tenant: uuid.UUID, event_id: uuid.UUID, files: list[File]) -> list[dict[str, Any]]:
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


def _file_message(conn: Conn, tenant: uuid.UUID, channel_id: uuid.UUID, payload: dict[str, Any]) -> None:
    from chalicelib.auth.addresses import normalize_email

    address = parseaddr(str(payload.get("sender") or ""))[1]
    try:
        sender = normalize_email(address)
    except ValueError:
        sender = None
    contact = conversations.contact_for_email(conn, tenant, sender) if sender else None
    at = datetime.now(UTC)
    references = [str(r) for r in payload.get("references") or []]
    earlier = conn.execute(Q["conversation_by_email_reference"], (references,)).fetchone() if references else None
    message_id = str(payload.get("message_id") or uuid.uuid4())
    if earlier is None:
        # Answers sent to a signed reply address (reply+<conversation>.<sig>@…) join that conversation.
        named = conversation_of_reply_address(parseaddr(str(payload.get("recipient") or ""))[1])
        if named is not None:
            earlier = conn.execute(Q["conversation_by_id"], (named,)).fetchone()
    if earlier is not None:
        conversation = uuid.UUID(str(earlier[0]))
        conn.execute(Q["conversation_reopen"], (at, conversation))
    else:
        conversation = conversations.conversation_for(conn, tenant, channel_id, message_id, contact, at,
                                                      subject=(payload.get("subject") or None))
    row = conn.execute(Q["email_message_insert"],
                       (tenant, conversation, payload.get("text"), "email:" + message_id, message_id, at)).fetchone()
    if row is None:
        return
    for item in payload.get("files") or []:
        conn.execute(Q["email_attachment_insert"],
                     (tenant, row[0], item["filename"], item["content_type"], item["size"], item["sha256"],
                      item["blob_key"]))
    conversations.received(conn, tenant, uuid.UUID(str(row[0])))
