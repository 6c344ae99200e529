"""Workspace API keys: `crm_<prefix>_<secret>`, shown once, stored as an HMAC, looked up under RLS."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib import errors, versions
from chalicelib.auth.crypto import keyed_hash
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.settings import Settings

Q = queries.load(__package__)
KEY_SHAPE = re.compile(r"^crm_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}$")
TOUCH_EVERY = timedelta(seconds=60)


class ApiKeyPatch(BaseModel):
    """A key's new name (its role, expiry and secret never change: create another key instead)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)


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


def get_pending(conn: Conn, key_id: uuid.UUID) -> Callable[[], tuple[Any, ...] | None]:
    """Queue the read of one key of the current workspace as listed; call the result for it (or None)."""
    return conn.execute(Q["api_key_get"], (key_id,)).fetchone


def etag(row: tuple[Any, ...]) -> str:
    """A strong validator of what the API can change of a key (its name, its revocation), not its last use."""
    revoked = row[7].isoformat() if row[7] is not None else None
    digest = hashlib.sha256(json.dumps([str(row[0]), row[1], revoked]).encode()).hexdigest()[:20]
    return f'"{digest}"'


def rename(conn: Conn, *, key_id: uuid.UUID, name: str, expected: frozenset[str] | None) -> tuple[Any, ...]:
    """Rename a key (live or revoked) of the current workspace; 404 when there is none, 412 on a stale If-Match."""
    row = conn.execute(Q["api_key_lock"], (key_id,)).fetchone()
    if row is None:
        raise errors.NotFound("no such API key")
    versions.check(expected, etag(row), "API key")
    renamed = conn.execute(Q["api_key_rename"], (name, key_id)).fetchone()
    assert renamed is not None
    return renamed
