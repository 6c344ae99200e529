"""The sign-in flows: request a link, sign in with token or code, email change, session revocation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from chalice.app import Request

from chalicelib import audit, clock, errors
from chalicelib.accounts import members, users
from chalicelib.accounts.models import MagicLinkRequest, Me, SessionRequest, TokenBody, UserOut
from chalicelib.auth import links, ratelimit, sessions
from chalicelib.auth.addresses import safe_next_path
from chalicelib.auth.crypto import keyed_hash
from chalicelib.auth.principal import Principal, anonymous_actor, check_origin, session_cookie
from chalicelib.db import queries
from chalicelib.db.tenancy import bind_user, tenant_tx, user_tx
from chalicelib.db.types import Conn
from chalicelib.mail import send_email
from chalicelib.settings import Settings, get_settings

Q = queries.load(__package__)
INVALID = "this link or code is invalid or has expired"


def _subject(email: str, settings: Settings) -> bytes:
    # Sign-in events of unknown addresses are linkable for forensics without storing the address.
    return keyed_hash("audit-subject", email, settings)


def request_link(request: Request, body: MagicLinkRequest) -> None:
    """Issue and email a link + code unless a limit is reached; the caller answers 202 either way."""
    settings, now, actor = get_settings(), clock.now(), anonymous_actor(request)
    with user_tx() as conn:
        # Both limits count every request; when either is exceeded nothing is sent, silently, so the
        # response still reveals nothing (and a victim's inbox is not bombed).
        by_email = ratelimit.hit(conn, kind="link-email", subject=body.email,
                                 limit=settings.magic_link_limit_per_email, now=now)
        by_ip = ratelimit.hit(conn, kind="link-ip", subject=actor.ip or "-",
                              limit=settings.magic_link_limit_per_ip, now=now)
        send = by_email.allowed and by_ip.allowed
        issued = links.issue(conn, purpose="login", email=body.email, now=now, settings=settings,
                             next_path=safe_next_path(body.next)) if send else None
        audit.record_account(conn, action="signin.requested", actor=actor, subject_hash=_subject(body.email, settings),
                             details={"sent": send})
    if issued is not None:
        subject, text = links.compose(settings, issued)
        send_email(to=issued.email, subject=subject, text=text, settings=settings)


def _peek_workspace(request_body: SessionRequest, settings: Settings) -> uuid.UUID | None:
    """The workspace (of an invitation) a token or code belongs to, so sign-in can run in its tenant."""
    token_hash = keyed_hash("login-token", request_body.token, settings) if request_body.token else None
    code_hash = (links.code_hash(request_body.email, request_body.code, settings)
                 if request_body.email and request_body.code else None)
    with user_tx() as conn:
        row = conn.execute(Q["invitation_workspace"], (token_hash, request_body.email, code_hash)).fetchone()
    value = row[0] if row else None
    return value if isinstance(value, uuid.UUID) else None


def _from_the_confirm_page(request: Request, settings: Settings) -> None:
    # Login CSRF: a browser on another site must not sign you in. The two loopback names stay two
    # origins (the cookie would belong to the other one, and localhost may resolve to an address another
    # program listens on); the detail names only the configured URL, so whoever opened the link under
    # another name knows where to open it.
    if request.headers.get("origin"):
        check_origin(request, settings, detail=f"cross-site request refused: open this page at "
                     f"{settings.public_base_url}/auth/confirm (the link in the email)")


def sign_in(request: Request, body: SessionRequest) -> tuple[Me, str]:
    """Consume a token or code, create a session; returns the response body and its Set-Cookie."""
    settings, now, actor = get_settings(), clock.now(), anonymous_actor(request)
    if not body.token and not (body.email and body.code):
        raise errors.ValidationFailed("send either token, or email and code")
    _from_the_confirm_page(request, settings)
    workspace = _peek_workspace(body, settings)
    scope = tenant_tx(workspace) if workspace is not None else user_tx()
    old_cookie = session_cookie(request, settings)
    with scope as conn:
        limit = ratelimit.hit(conn, kind="signin-ip", subject=actor.ip or "-",
                              limit=settings.sign_in_attempts_per_ip, now=now)
        if not limit.allowed:
            raise errors.RateLimited("too many sign-in attempts", retry_after=limit.retry_after_s)
        if body.token:
            grant = links.consume_token(conn, token=body.token, purposes=links.SIGN_IN_PURPOSES, now=now,
                                        settings=settings)
        else:
            assert body.email is not None and body.code is not None
            grant = links.consume_code(conn, email=body.email, code=body.code, now=now, settings=settings)
        if grant is None:
            subject = _subject(body.email, settings) if body.email else None
            audit.record_account(conn, action="signin.failed", actor=actor, subject_hash=subject)
            result = None
        else:
            result = _establish(conn, grant, actor, old_cookie, settings)
    if result is None:
        # Invalid, expired and used all look the same; the failed attempt above is committed.
        raise errors.BadRequest(INVALID)
    return result


def _establish(conn: Conn, grant: links.Grant, actor: audit.Actor, old_cookie: str | None,
               settings: Settings) -> tuple[Me, str]:
    now = clock.now()
    # The spent token proves control of the address: from here on, the transaction acts as its account.
    bind_user(conn, grant.user_id)
    signed_in = audit.Actor(grant.user_id, None, actor.ip, actor.user_agent)
    if old_cookie is not None:
        # A new id at every sign-in: whatever session this browser held before is ended.
        sessions.end(conn, token=old_cookie, now=now, settings=settings)
    token = sessions.create(conn, user_id=grant.user_id, actor=signed_in, now=now, settings=settings)
    details: dict[str, str] = {"purpose": grant.purpose}
    if grant.purpose == "invitation" and grant.workspace_id is not None and grant.role is not None:
        members.add(conn, tenant_id=grant.workspace_id, user_id=grant.user_id, role=grant.role, actor=signed_in,
                    now=now)
        # The account event names the workspace it joined: that workspace's access export lists it.
        details["workspace_id"] = str(grant.workspace_id)
    audit.record_account(conn, action="signin.succeeded", actor=signed_in, details=details)
    me = Me(user=users.get(conn, user_id=grant.user_id), workspaces=users.my_workspaces(conn),
            csrf_token=sessions.csrf_token(token, settings), next=grant.next_path)
    return me, sessions.set_cookie(token, settings)


def revoke_sessions(conn: Conn, principal: Principal, *, session_id: uuid.UUID | None) -> int:
    """Revoke one session of the principal's user, or all of them (session_id None); audited."""
    assert principal.user_id is not None
    count = sessions.revoke(conn, user_id=principal.user_id, now=clock.now(), session_id=session_id)
    if session_id is None:
        action = "sessions.revoked_all"
    else:
        action = "logout" if session_id == principal.session_id else "session.revoked"
    if count:
        audit.record_account(conn, action=action, actor=principal.actor, details={"count": count})
    return count


@dataclass(frozen=True)
class PendingEmailChange:
    """The two emails an email change sends."""

    issued: links.IssuedLink
    old_email: str


def start_email_change(conn: Conn, principal: Principal, new_email: str) -> PendingEmailChange:
    """Issue a confirmation token bound to this user and the new address."""
    settings, now = get_settings(), clock.now()
    assert principal.user_id is not None
    # A signed-in account must not become a mail cannon: a few confirmation emails per window.
    limit = ratelimit.hit(conn, kind="email-change", subject=str(principal.user_id),
                          limit=settings.magic_link_limit_per_email, now=now)
    if not limit.allowed:
        raise errors.RateLimited("too many email change requests", retry_after=limit.retry_after_s)
    user = users.get(conn, user_id=principal.user_id)
    issued = links.issue(conn, purpose="email_change", email=new_email, now=now, settings=settings,
                         user_id=principal.user_id)
    audit.record_account(conn, action="email.change_requested", actor=principal.actor)
    return PendingEmailChange(issued, user.email)


def send_email_change(pending: PendingEmailChange) -> None:
    """The confirmation to the new address and a notice to the old one."""
    settings = get_settings()
    subject, text = links.compose(settings, pending.issued)
    send_email(to=pending.issued.email, subject=subject, text=text, settings=settings)
    send_email(to=pending.old_email, subject="A change of your sign-in address was requested",
               text="Someone signed in to your account asked to change its sign-in address. Nothing changes "
                    "unless the new address confirms it. If this was not you, sign out everywhere.\n",
               settings=settings)


def confirm_email_change(request: Request, body: TokenBody) -> UserOut:
    """Apply a confirmed email change; every other session of the account is revoked."""
    settings, now, actor = get_settings(), clock.now(), anonymous_actor(request)
    _from_the_confirm_page(request, settings)
    current = session_cookie(request, settings)
    with user_tx() as conn:
        grant = links.consume_token(conn, token=body.token, purposes=("email_change",), now=now, settings=settings)
        if grant is None:
            audit.record_account(conn, action="email.change_failed", actor=actor)
            user = None
        else:
            bind_user(conn, grant.user_id)  # the spent token names the account whose address changes
            user = users.change_email(conn, user_id=grant.user_id, email=grant.email, now=now)
            keep = sessions.resolve(conn, token=current, now=now, settings=settings) if current else None
            kept = keep.session_id if keep is not None and keep.user_id == user.id else None
            sessions.revoke(conn, user_id=user.id, now=now, keep=kept)
            audit.record_account(conn, action="email.changed", actor=actor, user_id=user.id)
    if user is None:
        raise errors.BadRequest(INVALID)
    return user
