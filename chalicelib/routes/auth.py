"""Sign-in with a magic link or code, the session cookie, the signed-in user and their sessions."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib import clock, errors
from chalicelib.accounts import export as account_export
from chalicelib.accounts import users
from chalicelib.accounts.models import (
    Accepted,
    AccountExport,
    EmailChangeRequest,
    MagicLinkRequest,
    Me,
    MePatch,
    SessionList,
    SessionOut,
    SessionRequest,
    TokenBody,
    UserOut,
)
from chalicelib.auth import sessions as auth_sessions
from chalicelib.auth import signin
from chalicelib.auth.principal import account_scope, parse_id
from chalicelib.http import endpoint, json_response
from chalicelib.inputs import parse_body
from chalicelib.settings import get_settings
from chalicelib.web.pages import confirm_page

bp = Blueprint(__name__)
TAGS = ("auth",)


@endpoint(bp, "/auth/magic-link", "POST", summary="Email a sign-in link and code", request_model=MagicLinkRequest,
          response_model=Accepted, status=202, tags=TAGS)
def request_magic_link() -> Response:
    """Always 202 with the same body: whether the address is known is never revealed."""
    request = bp.current_request
    signin.request_link(request, parse_body(request, MagicLinkRequest))
    return json_response(Accepted(status="sent"), 202)


@endpoint(bp, "/auth/confirm", "GET", summary="The page a sign-in link opens (consumes nothing)", tags=TAGS)
def confirm() -> Response:
    """HTML with a Sign in button; its script POSTs the token from the URL fragment."""
    html, headers = confirm_page()
    return Response(body=html, status_code=200, headers=dict(headers))


@endpoint(bp, "/auth/session", "POST", summary="Sign in with a link token or an email + code",
          request_model=SessionRequest, response_model=Me, errors_=(400, 403, 429), tags=TAGS)
def create_session() -> Response:
    """Consume the token or code once and set a new session cookie."""
    request = bp.current_request
    me, cookie = signin.sign_in(request, parse_body(request, SessionRequest))
    return json_response(me, 200, headers={"Set-Cookie": cookie})


@endpoint(bp, "/auth/me", "GET", summary="The signed-in user and their workspaces", response_model=Me,
          errors_=(401,), tags=TAGS)
def me() -> Response:
    """User, workspaces with roles, and the session's CSRF token."""
    with account_scope(bp.current_request) as (conn, principal):
        assert principal.user_id is not None and principal.session_token is not None
        result = Me(user=users.get(conn, user_id=principal.user_id), workspaces=users.my_workspaces(conn),
                    csrf_token=auth_sessions.csrf_token(principal.session_token, get_settings()))
    return json_response(result)


@endpoint(bp, "/auth/me", "PATCH", summary="Change the display name", request_model=MePatch,
          response_model=UserOut, errors_=(401, 403), tags=TAGS)
def patch_me() -> Response:
    """Set or clear the display name."""
    request = bp.current_request
    patch = parse_body(request, MePatch)
    with account_scope(request) as (conn, principal):
        assert principal.user_id is not None
        user = users.set_display_name(conn, user_id=principal.user_id, display_name=patch.display_name,
                                      now=clock.now())
    return json_response(user)


@endpoint(bp, "/auth/me/export", "GET", summary="Download everything held about your account (one JSON file)",
          response_model=AccountExport, errors_=(401,), tags=TAGS,
          description="A download (`Content-Disposition: attachment`, `application/json`): the account, its "
                      "memberships, every session (revoked and expired ones too; never a token, hash or CSRF "
                      "token) and the account's audit entries. The export itself is recorded in the account's "
                      "audit log, without its content. Workspace content is exported by privacy staff.")
def export_me() -> Response:
    """The signed-in user's own data as a JSON file (access and portability of the controller data)."""
    now = clock.now()
    with account_scope(bp.current_request) as (conn, principal):
        assert principal.session_id is not None
        document = account_export.export(conn, actor=principal.actor, session_id=principal.session_id, now=now)
    return json_response(document, headers={
        "Content-Disposition": f'attachment; filename="{account_export.filename(now)}"',
        "Cache-Control": "private, no-store"})


@endpoint(bp, "/auth/sessions", "GET", summary="The signed-in user's live sessions", response_model=SessionList,
          errors_=(401,), tags=TAGS)
def list_sessions() -> Response:
    """Created, last seen, IP, user agent, and which one is this one."""
    with account_scope(bp.current_request) as (conn, principal):
        assert principal.user_id is not None
        rows = auth_sessions.list_for_user(conn, user_id=principal.user_id, now=clock.now(), settings=get_settings())
    data = [SessionOut(id=r[0], created_at=r[1], last_seen_at=r[2], ip=r[3], user_agent=r[4],
                       current=r[0] == principal.session_id) for r in rows]
    return json_response(SessionList(data=data))


@endpoint(bp, "/auth/sessions/{session_id}", "DELETE", summary="Revoke one of your sessions", status=204,
          errors_=(401, 403, 404), tags=TAGS)
def delete_session(session_id: str) -> Response:
    """Revoke at once; another user's session id is simply not found."""
    target = parse_id(session_id)
    with account_scope(bp.current_request) as (conn, principal):
        assert principal.user_id is not None
        if not signin.revoke_sessions(conn, principal, session_id=target):
            raise errors.NotFound("no such session")
    return Response(body="", status_code=204)


@endpoint(bp, "/auth/logout", "POST", summary="Sign out this session", status=204, errors_=(401, 403), tags=TAGS)
def logout() -> Response:
    """Revoke this session now and clear the cookie."""
    with account_scope(bp.current_request) as (conn, principal):
        signin.revoke_sessions(conn, principal, session_id=principal.session_id)
    return Response(body="", status_code=204, headers={"Set-Cookie": auth_sessions.clear_cookie(get_settings())})


@endpoint(bp, "/auth/logout-all", "POST", summary="Sign out every session of this user", status=204,
          errors_=(401, 403), tags=TAGS)
def logout_all() -> Response:
    """Revoke all sessions (this one included) and clear the cookie."""
    with account_scope(bp.current_request) as (conn, principal):
        signin.revoke_sessions(conn, principal, session_id=None)
    return Response(body="", status_code=204, headers={"Set-Cookie": auth_sessions.clear_cookie(get_settings())})


@endpoint(bp, "/auth/email-change", "POST", summary="Ask to move the account to a new address",
          request_model=EmailChangeRequest, response_model=Accepted, status=202, errors_=(401, 403), tags=TAGS)
def request_email_change() -> Response:
    """A confirmation link to the new address, a notice to the old one; nothing changes yet."""
    request = bp.current_request
    body = parse_body(request, EmailChangeRequest)
    with account_scope(request) as (conn, principal):
        pending = signin.start_email_change(conn, principal, body.new_email)
    signin.send_email_change(pending)
    return json_response(Accepted(status="sent"), 202)


@endpoint(bp, "/auth/email-change/confirm", "POST", summary="Confirm a new address with its link token",
          request_model=TokenBody, response_model=UserOut, errors_=(400, 403, 409), tags=TAGS)
def confirm_email_change() -> Response:
    """Change the address and revoke every other session of the account."""
    request = bp.current_request
    return json_response(signin.confirm_email_change(request, parse_body(request, TokenBody)))

