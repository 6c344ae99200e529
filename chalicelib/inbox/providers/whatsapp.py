"""WhatsApp Cloud API deliveries: what a (signature-checked) webhook body contains.

A delivery holds `entry[].changes[].value` objects with `metadata.phone_number_id`, `messages[]`
(text, image, audio, video, document, sticker, location, contacts, interactive, button, reaction) and
`statuses[]` (sent, delivered, read, failed). Each becomes one inbound event, keyed by the provider's
id so a redelivery is recognised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})
STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
MAX_ITEMS = 1000


class MalformedDelivery(ValueError):
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
