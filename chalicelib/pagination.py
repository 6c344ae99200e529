"""Opaque list cursors: signed, and bound to the tenant and the query they came from."""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

from chalicelib import errors
from chalicelib.auth.crypto import keyed_hash

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def parse_limit(raw: str | None) -> int:
    """`limit` from the query string: default 50, at most 200 (400 above, saying so)."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or int(raw) < 1:
        raise errors.BadRequest("limit must be a positive integer")
    if int(raw) > MAX_LIMIT:
        raise errors.BadRequest(f"limit must be at most {MAX_LIMIT}")
    return int(raw)


def encode(position: list[Any], *, binding: str) -> str:
    """A cursor for `position`, valid only for the same binding (tenant + filters + sort)."""
    payload = json.dumps(position, separators=(",", ":"), default=str)
    mac = keyed_hash("cursor", f"{binding}|{payload}")[:16]
    return base64.urlsafe_b64encode(mac + payload.encode()).rstrip(b"=").decode()


def decode(cursor: str, *, binding: str) -> list[Any]:
    """The position of a cursor made by encode() with the same binding; tampered or foreign -> 400."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        mac, payload = raw[:16], raw[16:].decode()
        valid = hmac.compare_digest(mac, keyed_hash("cursor", f"{binding}|{payload}")[:16])
        position = json.loads(payload) if valid else None
    except (ValueError, UnicodeDecodeError):
        position = None
    if not isinstance(position, list):
        raise errors.BadRequest("the cursor is invalid for this list")
    return position
