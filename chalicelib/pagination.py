"""Opaque list cursors: signed, and bound to the tenant and the query they came from."""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from chalicelib import errors
from chalicelib.auth.crypto import keyed_hash

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def parse_limit(raw: str | None) -> int:
    """`limit` from the query string: default 50, at most 200 (400 above, saying so)."""
    if raw is None:
        return DEFAULT_LIMIT
    # isdigit() alone admits digits int() refuses ("²"): ASCII digits only.
    if not (raw.isascii() and raw.isdigit()):
        raise errors.BadRequest("limit must be a positive integer")
    significant = raw.lstrip("0")
    # int() refuses more than 4,300 digits; any number that long is simply too large.
    value = int(significant or "0") if len(significant) <= 9 else MAX_LIMIT + 1
    if value < 1:
        raise errors.BadRequest("limit must be a positive integer")
    if value > MAX_LIMIT:
        raise errors.BadRequest(f"limit must be at most {MAX_LIMIT}")
    return value


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


def time_keyset(query: Mapping[str, str], *, binding: str) -> tuple[int, tuple[datetime, str] | None]:
    """`limit` and the (time, id) position after which a newest-first page starts, from a query string that
    may hold only `limit` and `cursor` (400 for anything else)."""
    for name in query.keys() - {"limit", "cursor"}:
        raise errors.BadRequest(f"unknown query parameter {name}")
    limit = parse_limit(query.get("limit"))
    if not query.get("cursor"):
        return limit, None
    at, last_id = decode(query["cursor"], binding=binding)
    return limit, (datetime.fromisoformat(str(at)), str(last_id))


def time_cursor(at: datetime, record_id: object, *, binding: str) -> str:
    """The cursor of the page after the row at (at, record_id) (see time_keyset)."""
    return encode([at.isoformat(), str(record_id)], binding=binding)
