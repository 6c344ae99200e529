"""Standard Webhooks signatures: `whsec_` secrets and `v1,<base64 HMAC-SHA256 of id.timestamp.body>`.

Written from the spec (https://www.standardwebhooks.com): a receiver verifies us with the spec's reference
libraries (the tests do, with the `standardwebhooks` package). During a rotation's grace period a delivery
carries one signature per valid secret, space-separated, as the spec allows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable

PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec allows 24-64 random bytes


def webhook_id(message_id: uuid.UUID) -> str:
    """The webhook-id of a message: the same on every attempt and replay (receivers deduplicate on it)."""
    return f"msg_{message_id.hex}"


def new_secret() -> str:
    """A new signing secret: whsec_ followed by base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise ValueError("a signing secret starts with whsec_")
    key = base64.b64decode(secret[len(PREFIX):], validate=True)
    if not 24 <= len(key) <= 64:
        raise ValueError("a signing secret holds 24 to 64 bytes")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,` signature of a message."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(valid_secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: one signature per secret, space-separated."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in valid_secrets)
