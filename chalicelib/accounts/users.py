"""Operator accounts (created at a first sign-in, by app.redeem_login_token or _code)."""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg

from chalicelib import errors
from chalicelib.accounts.models import UserOut, WorkspaceOut
from chalicelib.db import queries
from chalicelib.db.types import Conn

Q = queries.load(__package__)


def _user(row: tuple[object, ...] | None) -> UserOut:
    if row is None:
        raise errors.NotFound("no such user")
    return UserOut(id=row[0], email=row[1], display_name=row[2], created_at=row[3])


def get(conn: Conn, *, user_id: uuid.UUID) -> UserOut:
    """One user."""
    return _user(conn.execute(Q["user_get"], (user_id,)).fetchone())


def set_display_name(conn: Conn, *, user_id: uuid.UUID, display_name: str | None,
                     now: datetime) -> UserOut:
    """Change the display name (empty clears it)."""
    return _user(conn.execute(Q["user_set_display_name"], (display_name or None, now, user_id)).fetchone())


def change_email(conn: Conn, *, user_id: uuid.UUID, email: str, now: datetime) -> UserOut:
    """Move the account to a confirmed new address (409 if another account has it)."""
    try:
        # No savepoint (tenant_tx pipelines its transaction): a conflict aborts the whole request.
        row = conn.execute(Q["user_change_email"], (email, now, user_id)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise errors.Conflict("another account already uses this address") from None
    return _user(row)


def my_workspaces(conn: Conn) -> list[WorkspaceOut]:
    """Workspaces of the user bound to this transaction (bind_user), with their role, newest first."""
    rows = conn.execute(Q["my_workspaces"]).fetchall()
    return [WorkspaceOut(id=r[0], name=r[1], role=r[2], created_at=r[3], updated_at=r[4],
                         deleted_at=r[5], atlas_enabled=r[6]) for r in rows]
