"""Server-side sessions: an opaque cookie value, stored only as an HMAC; idle and absolute expiry."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.audit import Actor, clean_ip
from chalicelib.auth.crypto import keyed_hash, keyed_token, new_token
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.settings import Settings

Q = queries.load(__package__)

# last_seen_at is written at most once a minute per session: the idle timeout needs no finer grain,
# and most requests then stay read-only.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class SessionInfo:
    """A live session as an account request sees it (workspace requests use authorize_pending)."""

    session_id: uuid.UUID
    user_id: uuid.UUID


def csrf_token(session_token: str, settings: Settings) -> str:
    """The CSRF token of a session: derived from its cookie, so nothing extra is stored."""
    return keyed_token("csrf", session_token, settings)


def create(conn: Conn, *, user_id: uuid.UUID, actor: Actor, now: datetime,
           settings: Settings) -> str:
    """Start a session; returns the cookie value (shown once, stored only as an HMAC)."""
    token = new_token()
    conn.execute(
        Q["session_create"],
        (keyed_hash("session", token, settings), user_id, now, now,
         now + timedelta(seconds=settings.session_absolute_timeout_s), clean_ip(actor.ip),
         (actor.user_agent or "")[:512] or None))
    return token


def resolve(conn: Conn, *, token: str, now: datetime, settings: Settings) -> SessionInfo | None:
    """Find a live session by its cookie, whoever's it is (app.live_session; one statement), and slide its
    idle expiry forward at most once per TOUCH_EVERY. The caller decides whether to bind its user."""
    row = conn.execute(
        Q["session_resolve"],
        (keyed_hash("session", token, settings), now, now - timedelta(seconds=settings.session_idle_timeout_s),
         now - TOUCH_EVERY)).fetchone()
    return SessionInfo(row[0], row[1]) if row is not None else None


def end(conn: Conn, *, token: str, now: datetime, settings: Settings) -> None:
    """End the session of a presented cookie, whoever's it is (holding the cookie is the right to end it)."""
    conn.execute(Q["session_end"], (keyed_hash("session", token, settings), now))


def authorize_pending(conn: Conn, *, token: str, workspace_id: uuid.UUID, now: datetime,
                      roles: list[str], allow_deleted: bool, settings: Settings
                      ) -> Callable[[], tuple[Any, ...] | None]:
    """Queue the authorization of a session for a workspace; the result gives (session_id, user_id, role).

    A refusal fails the statement (app.authorize_session), which makes PostgreSQL skip every statement
    queued after it; a live session is touched at most once per TOUCH_EVERY, as resolve() does.
    """
    cursor = conn.execute(
        Q["session_authorize"],
        (keyed_hash("session", token, settings), workspace_id, now,
         now - timedelta(seconds=settings.session_idle_timeout_s), now - TOUCH_EVERY, roles, allow_deleted))
    return cursor.fetchone


def revoke(conn: Conn, *, user_id: uuid.UUID, now: datetime,
           session_id: uuid.UUID | None = None, keep: uuid.UUID | None = None) -> int:
    """Revoke one session of the user (session_id) or all of them except `keep`; returns how many."""
    if session_id is not None:
        rows = conn.execute(Q["session_revoke_one"], (now, session_id, user_id)).fetchall()
    else:
        rows = conn.execute(Q["session_revoke_others"], (now, user_id, keep)).fetchall()
    return len(rows)


def list_for_user(conn: Conn, *, user_id: uuid.UUID, now: datetime,
                  settings: Settings) -> list[tuple[Any, ...]]:
    """The user's live sessions: id, created, last seen, IP, user agent (newest first)."""
    return conn.execute(
        Q["sessions_of_user"],
        (user_id, now, now - timedelta(seconds=settings.session_idle_timeout_s))).fetchall()


def set_cookie(token: str, settings: Settings) -> str:
    """Set-Cookie for a new session: HttpOnly, SameSite=Lax, Path=/, and Secure + __Host- in prod."""
    parts = [f"{settings.session_cookie_name}={token}", "Path=/", "HttpOnly", "SameSite=Lax",
             f"Max-Age={settings.session_absolute_timeout_s}"]
    if settings.stage == "prod":
        parts.append("Secure")  # required by the __Host- prefix, and by plain sense on https
    return "; ".join(parts)


def clear_cookie(settings: Settings) -> str:
    """Set-Cookie that removes the session cookie from the browser."""
    parts = [f"{settings.session_cookie_name}=", "Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=0"]
    if settings.stage == "prod":
        parts.append("Secure")
    return "; ".join(parts)
