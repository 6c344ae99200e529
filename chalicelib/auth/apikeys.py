"""Workspace API keys: `crm_<prefix>_<secret>`, shown once, stored as an HMAC, looked up under RLS."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from chalicelib.auth.crypto import keyed_hash
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.settings import Settings

Q = queries.load(__package__)
KEY_SHAPE = re.compile(r"^crm_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}$")
TOUCH_EVERY = timedelta(seconds=60)


def new_key() -> tuple[str, str]:
    """A new key and its display prefix."""
    prefix = "".join(secrets.choice("abcdefghijkmnpqrstuvwxyz23456789") for _ in range(8))
    return f"crm_{prefix}_{secrets.token_urlsafe(32)}", prefix


def create(conn: Conn, *, tenant_id: uuid.UUID, name: str, role: str,
           expires_at: datetime | None, created_by: uuid.UUID | None, now: datetime,
           settings: Settings) -> tuple[str, tuple[Any, ...]]:
    """Create a key; returns the key (the only time it exists in clear) and its stored row."""
    key, prefix = new_key()
    row = conn.execute(
        Q["api_key_create"],
        (tenant_id, name, prefix, keyed_hash("api-key", key, settings), role, created_by, now,
         expires_at)).fetchone()
    assert row is not None
    return key, row


def authorize_pending(conn: Conn, *, key: str, now: datetime, roles: list[str],
                      allow_deleted: bool, settings: Settings) -> Callable[[], tuple[Any, ...] | None]:
    """Queue the authorization of a key of the CURRENT tenant (RLS: another workspace's key simply is not
    there); the result gives (key_id, role). A refusal fails the statement (app.authorize_api_key), which
    makes PostgreSQL skip every statement queued after it."""
    cursor = conn.execute(Q["api_key_authorize"],
                          (keyed_hash("api-key", key, settings), now, now - TOUCH_EVERY, roles, allow_deleted))
    return cursor.fetchone


def list_keys_pending(conn: Conn) -> Callable[[], list[tuple[Any, ...]]]:
    """Queue the read of the current workspace's live and revoked keys (never the key or its hash)."""
    return conn.execute(Q["api_keys_list"]).fetchall


def revoke(conn: Conn, *, key_id: uuid.UUID, now: datetime) -> bool:
    """Revoke at once; False when there is no such live key in this workspace."""
    rows = conn.execute(Q["api_key_revoke"], (now, key_id)).fetchall()
    return bool(rows)
