"""Magic links and one-time codes: issued for sign-in, invitations and email changes; consumed once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from chalicelib.auth.crypto import keyed_hash, new_code, new_token, normalize_code
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.settings import Settings

Q = queries.load(__package__)
Purpose = Literal["login", "invitation", "email_change"]
SIGN_IN_PURPOSES: tuple[Purpose, ...] = ("login", "invitation")
MAX_CODE_ATTEMPTS = 5


@dataclass(frozen=True)
class IssuedLink:
    """What goes into the email (and only there)."""

    token: str
    code: str
    email: str
    purpose: Purpose


@dataclass(frozen=True)
class Grant:
    """What a consumed token or code proves: control of `email`, for `purpose`."""

    purpose: Purpose
    email: str
    user_id: uuid.UUID  # the account signed in to (created at a first sign-in), or whose address changes
    workspace_id: uuid.UUID | None
    role: str | None
    next_path: str | None


def _grant(row: tuple[object, ...] | None) -> Grant | None:
    if row is None:
        return None
    purpose, email, user_id, workspace_id, role, next_path = row
    if not isinstance(user_id, uuid.UUID):
        return None  # an email change whose account is gone (its token outlived it)
    return Grant(purpose, str(email), user_id, workspace_id, role,  # type: ignore[arg-type]
                 str(next_path) if next_path else None)


def issue(conn: Conn, *, purpose: Purpose, email: str, now: datetime, settings: Settings,
          next_path: str | None = None, user_id: uuid.UUID | None = None,
          workspace_id: uuid.UUID | None = None, role: str | None = None) -> IssuedLink:
    """Store a new token and code (only their HMACs) valid for MAGIC_LINK_TTL_S."""
    token, code = new_token(), new_code()
    conn.execute(
        Q["login_token_issue"],
        (keyed_hash("login-token", token, settings), keyed_hash("login-code", f"{email}:{code}", settings),
         purpose, email, user_id, workspace_id, role, next_path, now,
         now + timedelta(seconds=settings.magic_link_ttl_s)))
    return IssuedLink(token, code, email, purpose)


def consume_token(conn: Conn, *, token: str, purposes: tuple[Purpose, ...], now: datetime,
                  settings: Settings) -> Grant | None:
    """Use a token once (app.redeem_login_token: of N concurrent attempts exactly one wins)."""
    row = conn.execute(Q["login_token_redeem"],
                       (keyed_hash("login-token", token, settings), list(purposes), now)).fetchone()
    return _grant(row)


def consume_code(conn: Conn, *, email: str, code: str, now: datetime,
                 settings: Settings) -> Grant | None:
    """Use a one-time code once; a wrong code spends one of the few attempts of every live code."""
    row = conn.execute(Q["login_code_redeem"],
                       (email, code_hash(email, code, settings), now, MAX_CODE_ATTEMPTS)).fetchone()
    return _grant(row)


def code_hash(email: str, code: str, settings: Settings) -> bytes:
    """The stored form of an address's one-time code (as typed: spaces and case do not matter)."""
    return keyed_hash("login-code", f"{email}:{normalize_code(code)}", settings)


def link_url(settings: Settings, issued: IssuedLink) -> str:
    """The emailed link: the token travels in the fragment, which browsers never send to a server."""
    suffix = "&purpose=email_change" if issued.purpose == "email_change" else ""
    return f"{settings.public_base_url}/auth/confirm#token={issued.token}{suffix}"


def compose(settings: Settings, issued: IssuedLink, *, workspace_name: str | None = None) -> tuple[str, str]:
    """Subject and plain-text body of the email carrying `issued`."""
    minutes = settings.magic_link_ttl_s // 60
    if issued.purpose == "invitation":
        subject = "You are invited to a CRM workspace"
        intro = f"You have been invited to the workspace \"{workspace_name or 'a workspace'}\"."
    elif issued.purpose == "email_change":
        subject = "Confirm your new email address"
        intro = "Confirm that this is your new sign-in address."
    else:
        subject = "Your sign-in link"
        intro = "Use this link to sign in."
    if issued.purpose == "email_change":
        # Confirmed by its link only: the code would be refused on the sign-in page (purpose binding).
        code_line, validity = "", f"The link works once and expires in {minutes} minutes. "
    else:
        code_line = f"Or enter this code on the sign-in page: {issued.code}\n\n"
        validity = f"The link and the code work once and expire in {minutes} minutes. "
    body = (f"{intro}\n\n{link_url(settings, issued)}\n\n{code_line}{validity}"
            "If you did not ask for this, ignore this email.\n")
    return subject, body
