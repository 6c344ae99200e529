"""WhatsApp Cloud API: signed deliveries, their messages and statuses, media, and replies.

A delivery holds `entry[].changes[].value` objects with `metadata.phone_number_id`, `messages[]`
(text, image, audio, video, document, sticker, location, contacts, interactive, button, reaction) and
`statuses[]` (sent, delivered, read, failed). Each becomes one inbound event, keyed by the provider's
id so a redelivery is recognised. Media is fetched from Meta's hosts only, over the SSRF-safe client
(no private addresses, no redirects, a size cap) and must match the SHA-256 Meta announces. Replies go
out through the Graph API with the channel's access token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from chalicelib.blobs import get_blobs
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.inbox import channels, conversations
from chalicelib.inbox.providers.base import Delivery, Event, Reply, Sent, StoredEvent
from chalicelib.inbox.refusals import BadSignature, ForeignSender, Malformed, UnknownSource
from chalicelib.observability import log_event
from chalicelib.outbound import OutboundRefused, request
from chalicelib.settings import get_settings

log = logging.getLogger("crm.inbox.whatsapp")
MEDIA_HOSTS = (".fbcdn.net", ".fbsbx.com", ".whatsapp.net", ".facebook.com")
MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})
STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
MAX_ITEMS = 1000
Q = queries.load(__package__)


class MalformedDelivery(Malformed):
    """The body is not a WhatsApp Cloud API delivery."""


@dataclass(frozen=True)
class Item:
    """One event of a delivery: a message or a status change."""

    kind: str  # "message" | "status"
    event_id: str  # unique per provider: wamid, or wamid + status
    phone_number_id: str
    payload: dict[str, Any]


def parse(raw: bytes) -> list[Item]:
    """The events of a delivery (MalformedDelivery when it is not one)."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # RecursionError: a deeply nested body must be a 400, not a crash.
        raise MalformedDelivery("not JSON") from None
    if not isinstance(document, dict) or document.get("object") != "whatsapp_business_account":
        raise MalformedDelivery("not a WhatsApp Business delivery")
    items: list[Item] = []
    for entry in _list(document.get("entry")):
        for change in _list(_dict(entry).get("changes")):
            value = _dict(_dict(change).get("value"))
            number = str(_dict(value.get("metadata")).get("phone_number_id") or "")
            if not number:
                raise MalformedDelivery("no phone_number_id")
            names = {str(_dict(c).get("wa_id")): _dict(_dict(c).get("profile")).get("name")
                     for c in _list(value.get("contacts"))}
            for message in _list(value.get("messages")):
                message = _dict(message)
                wamid = _text(message.get("id"))
                items.append(Item("message", wamid, number, {**message, "profile_name": names.get(
                    str(message.get("from")))}))
            for status in _list(value.get("statuses")):
                status = _dict(status)
                state = _text(status.get("status"))
                if state not in STATUS_RANK:
                    raise MalformedDelivery("unknown status")
                items.append(Item("status", f"{_text(status.get('id'))}:{state}", number, status))
    if len(items) > MAX_ITEMS:
        raise MalformedDelivery("too many events in one delivery")
    return items


def body_of(message: dict[str, Any]) -> str | None:
    """The text a person would read for one inbound message of any type."""
    kind = message.get("type")
    if kind == "contacts":
        names = [_dict(_dict(c).get("name")).get("formatted_name") for c in _list(message.get("contacts"))]
        return ", ".join(str(n) for n in names if n) or None
    part = message.get(str(kind))
    part = part if isinstance(part, dict) else {}
    if kind == "text":
        return _optional(part.get("body"))
    if kind in MEDIA_TYPES:
        return _optional(part.get("caption") or part.get("filename"))
    if kind == "location":
        label = " ".join(str(part[k]) for k in ("name", "address") if part.get(k))
        return f"{label} ({part.get('latitude')}, {part.get('longitude')})".strip()
    if kind == "interactive":
        reply = _dict(part.get("button_reply") or part.get("list_reply"))
        return _optional(reply.get("title"))
    if kind == "button":
        return _optional(part.get("text"))
    if kind == "reaction":
        return _optional(part.get("emoji"))
    return None


def media_of(message: dict[str, Any]) -> dict[str, Any] | None:
    """The media object (id, mime_type, sha256, filename) of a media message."""
    kind = message.get("type")
    if kind not in MEDIA_TYPES:
        return None
    part = _dict(message.get(str(kind)))
    return part if part.get("id") else None


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedDelivery("expected a list")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedDelivery("expected an object")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise MalformedDelivery("expected an id")
    return value


def _optional(value: Any) -> str | None:
    return str(value)[:10_000] if value else None


def signature_valid(app_secret: str, raw_body: bytes, header: str | None) -> bool:
    """Meta's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>` (constant-time compare)."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())


class WhatsApp:
    """The WhatsApp Cloud API provider (channel type "whatsapp")."""

    name = "whatsapp"
    channel_type: str | None = "whatsapp"

    def screen(self, delivery: Delivery) -> None:
        """Nothing to check before the signature (the route admits application/json only)."""

    def verify(self, conn: Conn, delivery: Delivery, screened: object) -> channels.ChannelOut:
        """X-Hub-Signature-256 over the raw bytes with the channel's app secret; returns the channel."""
        assert delivery.tenant is not None and delivery.channel is not None
        found = channels.load(conn, tenant_id=delivery.tenant, channel_id=delivery.channel)
        if found is None or found[0].type != "whatsapp" or found[1].app_secret is None:
            raise UnknownSource()
        # The signature first: nothing of the body is parsed before it is proven to come from Meta.
        if not signature_valid(found[1].app_secret.get_secret_value(), delivery.raw,
                               delivery.header("x-hub-signature-256")):
            raise BadSignature()
        return found[0]

    def events(self, conn: Conn, delivery: Delivery, verified: object) -> list[Event]:
        """The delivery's messages and statuses, each for this channel's number."""
        assert isinstance(verified, channels.ChannelOut)
        items = parse(delivery.raw)
        # A shared Meta app secret does not prove the tenant: the number must be this channel's.
        if any(item.phone_number_id != verified.phone_number_id for item in items):
            raise ForeignSender(reason="foreign_number")
        return [Event(item.kind, item.event_id, item.payload) for item in items]

    def stored(self, conn: Conn, delivery: Delivery, verified: object, new: list[uuid.UUID]) -> None:
        """Nothing more to keep: media is fetched by the worker."""

    def process(self, conn: Conn, event: StoredEvent) -> None:
        """A message joins its number's conversation (media fetched); a status moves a sent message forward."""
        if event.kind == "message":
            assert event.channel is not None  # a message arrives through a channel
            _message(conn, event.tenant, event.channel, event.payload)
        elif event.kind == "status":
            _status(conn, event.tenant, event.payload)

    def send_reply(self, reply: Reply, body: str) -> Sent:
        """POST /{phone_number_id}/messages at the Graph API; Meta's message id comes back."""
        settings = get_settings()
        assert reply.secrets.access_token is not None and reply.to is not None
        payload = {"messaging_product": "whatsapp", "to": reply.to.lstrip("+"), "type": "text",
                   "text": {"body": body}}
        response = request("POST", f"{settings.graph_base_url}/{reply.channel.phone_number_id}/messages",
                           headers={"Authorization": f"Bearer {reply.secrets.access_token.get_secret_value()}",
                                    "Content-Type": "application/json"},
                           body=json.dumps(payload).encode(), allow=settings.outbound_allow,
                           max_bytes=65536)
        if response.status >= 300:
            raise OutboundRefused(f"the Graph API answered {response.status}")
        try:
            return Sent(str(json.loads(response.body)["messages"][0]["id"]), None)
        except (ValueError, KeyError, IndexError, TypeError):
            raise OutboundRefused("the Graph API answer has no message id") from None


PROVIDER = WhatsApp()


def _timestamp(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)


def _message(conn: Conn, tenant_id: uuid.UUID, channel_id: uuid.UUID, message: dict[str, Any]) -> None:
    from chalicelib.crm.values import normalize_phone

    phone = normalize_phone("+" + str(message.get("from", "")).lstrip("+"))
    at = _timestamp(message.get("timestamp"))
    contact = conversations.contact_for_phone(conn, tenant_id, phone, message.get("profile_name"))
    conversation = conversations.conversation_for(conn, tenant_id, channel_id, phone, contact, at)
    row = conn.execute(Q["whatsapp_message_insert"], (tenant_id, conversation, str(message.get("type", "text")),
                                                      body_of(message), message.get("id"), at)).fetchone()
    if row is None:
        return  # a redelivery: filed (and announced) the first time
    media = media_of(message)
    if media is not None:
        loaded = channels.load(conn, tenant_id=tenant_id, channel_id=channel_id)
        try:
            if loaded is not None:
                fetch_media(conn, tenant=tenant_id, message_id=uuid.UUID(str(row[0])), secrets=loaded[1],
                            media=media)
        except OutboundRefused as exc:
            # The message is kept; the missing media is said on it (the reason has no payload data).
            log_event(log, "media not fetched", reason=str(exc)[:80])
            conn.execute(Q["message_media_unavailable"], (row[0],))
    conversations.received(conn, tenant_id, uuid.UUID(str(row[0])))


def _status(conn: Conn, tenant_id: uuid.UUID, status: dict[str, Any]) -> None:
    state = str(status["status"])
    rank = STATUS_RANK[state]
    error = None
    if state == "failed":
        errors = status.get("errors") or [{}]
        error = str(errors[0].get("code", "failed")) if isinstance(errors[0], dict) else "failed"
    # Only forward: a late "delivered" after "read" changes nothing.
    moved = conn.execute(Q["message_status_forward"], (state, rank, error, status.get("id"), rank))
    if state == "failed":
        # Meta could not deliver a reply it had accepted (message.sent went out then): a failure all the same.
        # Only a failure waits for the ids (the other statuses stay queued, no round trip of their own).
        for (message_id,) in moved.fetchall():
            conversations.send_result(conn, tenant_id, message_id, "failed")


def _digest_matches(data: bytes, announced: str | None) -> bool:
    if not announced:
        return True
    digest = hashlib.sha256(data).digest()
    return announced.lower() == digest.hex() or announced == base64.b64encode(digest).decode()


def fetch_media(conn: Conn, *, tenant: uuid.UUID, message_id: uuid.UUID, secrets: channels.ChannelSecrets,
                media: dict[str, Any]) -> uuid.UUID:
    """Look the media id up at the Graph API, download it from Meta's host, store it as the message's attachment."""
    settings = get_settings()
    allow = settings.outbound_allow
    assert secrets.access_token is not None
    bearer = {"Authorization": f"Bearer {secrets.access_token.get_secret_value()}"}
    lookup = request("GET", f"{settings.graph_base_url}/{media['id']}", headers=bearer, allow=allow, max_bytes=65536)
    if lookup.status != 200:
        raise OutboundRefused(f"media lookup answered {lookup.status}")
    info = json.loads(lookup.body)
    url = str(info.get("url", ""))
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host.endswith(MEDIA_HOSTS) and f"{host}:{parts.port}" not in allow:
        raise OutboundRefused("media is not on a Meta host")
    # The bearer token goes to the Meta host only; request() never follows a redirect elsewhere.
    download = request("GET", url, headers=bearer, allow=allow, max_bytes=settings.max_media_bytes)
    if download.status != 200:
        raise OutboundRefused(f"media download answered {download.status}")
    if not _digest_matches(download.body, info.get("sha256") or media.get("sha256")):
        raise OutboundRefused("media checksum mismatch")
    attachment = uuid.uuid4()
    key = f"tenants/{tenant}/attachments/{message_id}/{attachment}"
    get_blobs().put_bytes(key, download.body)
    conn.execute(Q["whatsapp_attachment_insert"],
                 (tenant, attachment, message_id, media.get("filename"),
                  str(info.get("mime_type") or media.get("mime_type") or "application/octet-stream"),
                  len(download.body), hashlib.sha256(download.body).hexdigest(), key))
    return attachment
