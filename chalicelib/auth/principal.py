"""Who is calling: a session cookie or a workspace API key, checked against the database per request."""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import psycopg
from chalice.app import Request

from chalicelib import clock, errors
from chalicelib.audit import Actor
from chalicelib.auth import apikeys, sessions
from chalicelib.auth.crypto import same
from chalicelib.db.tenancy import bind_user, tenant_tx, user_tx
from chalicelib.db.types import Conn
from chalicelib.settings import Settings, get_settings

Role = Literal["owner", "admin", "member"]
RANK = {"member": 1, "admin": 2, "owner": 3}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("crm.auth")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of this request."""

    actor: Actor
    role: str | None = None
    session_id: uuid.UUID | None = None
    session_token: str | None = None
    api_key_id: uuid.UUID | None = None

    @property
    def user_id(self) -> uuid.UUID | None:
        """The signed-in user (None for API keys)."""
        return self.actor.user_id


def client_ip(request: Request) -> str | None:
    """The caller's IP as API Gateway saw it (never X-Forwarded-For, which the client controls)."""
    identity = request.context.get("identity") or {}
    value = identity.get("sourceIp") if isinstance(identity, dict) else None
    return str(value) if value else None


def user_agent(request: Request) -> str | None:
    """The User-Agent header as stored in sessions and audit entries (at most 512 characters)."""
    value = request.headers.get("user-agent")
    if not value:
        return None
    # PostgreSQL text cannot hold NUL: one stray byte in a client header must not turn into a 500.
    return str(value).replace("\x00", "")[:512] or None


def anonymous_actor(request: Request) -> Actor:
    """IP and user agent of a not (yet) authenticated caller."""
    return Actor(ip=client_ip(request), user_agent=user_agent(request))


def session_cookie(request: Request, settings: Settings) -> str | None:
    """The session cookie's value, if any."""
    raw = str(request.headers.get("cookie") or "")
    # Split by hand: http.cookies.SimpleCookie silently drops every cookie after the first one it cannot
    # parse (another app's JSON, spaced or non-ASCII value on the same host), which would sign the user
    # out. The first match wins: browsers list the most specific (longest path) cookie first.
    for part in raw.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip() == settings.session_cookie_name and value.strip():
            return value.strip()
    return None


def bearer_key(request: Request) -> str | None:
    """The API key of `Authorization: Bearer <key>`, if any."""
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def check_origin(request: Request, settings: Settings, *, detail: str = "cross-site request refused") -> None:
    """Cookie-authenticated writes must come from an allowed origin (Origin, else Referer); `detail` is the
    refusal's text (it never echoes the refused origin)."""
    allowed = {settings.public_origin, *settings.cors_origins}
    origin = request.headers.get("origin")
    if not origin:
        referer = urlsplit(request.headers.get("referer") or "")
        origin = f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else None
    if origin not in allowed:
        raise errors.Forbidden(detail)


def _check_csrf(request: Request, token: str, settings: Settings) -> None:
    # Double defence for cookie-authenticated writes: an allowed origin AND the session's CSRF token,
    # which a cross-site page can neither read nor guess.
    header = request.headers.get("x-csrf-token") or ""
    if not header or not same(header, sessions.csrf_token(token, settings)):
        raise errors.Forbidden("missing or wrong X-CSRF-Token")


def parse_id(value: str) -> uuid.UUID:
    """A path id as a UUID; anything else is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.NotFound("not found") from None


def _roles_from(min_role: Role) -> list[str]:
    # The ranking lives here only; the database is told which roles may pass.
    return [role for role, rank in RANK.items() if rank >= RANK[min_role]]


@contextlib.contextmanager
def _refusals(min_role: Role) -> Iterator[None]:
    """The authorization functions' refusals (SQLSTATE CR401/CR404/CR403) as HTTP problems."""
    try:
        yield
    except psycopg.Error as exc:
        if exc.sqlstate == "CR401":
            raise errors.Unauthorized("the session has expired; sign in again") from None
        if exc.sqlstate == "CR404":
            # Not a member, no such workspace, a deleted one, another workspace's key: the same answer.
            raise errors.NotFound("not found") from None
        if exc.sqlstate == "CR403":
            log.warning("access denied", extra={"fields": {"needed": min_role}})
            raise errors.Forbidden(f"this needs the {min_role} role") from None
        raise


def _authorize_pending(conn: Conn, request: Request, tenant: uuid.UUID, key: str | None,
                       token: str | None, min_role: Role, allow_deleted: bool,
                       settings: Settings) -> Callable[[], Principal]:
    """Queue the caller's authorization in the tenant transaction; the result gives the Principal.

    The statement fails when the caller may not act here, and PostgreSQL then skips every statement
    queued after it (see migration 0010): nothing the route queues runs for a refused caller.
    """
    now, roles = clock.now(), _roles_from(min_role)
    actor_ip, agent = client_ip(request), user_agent(request)
    if key is not None:
        key_row = apikeys.authorize_pending(conn, key=key, now=now, roles=roles, allow_deleted=allow_deleted,
                                            settings=settings)

        def key_principal() -> Principal:
            row = key_row()
            if row is None:
                raise errors.NotFound("not found")
            key_id, role = row
            return Principal(Actor(None, key_id, actor_ip, agent), str(role), api_key_id=key_id)
        return key_principal
    assert token is not None
    session_row = sessions.authorize_pending(conn, token=token, workspace_id=tenant, now=now, roles=roles,
                                             allow_deleted=allow_deleted, settings=settings)

    def session_principal() -> Principal:
        row = session_row()
        if row is None:
            raise errors.Unauthorized("the session has expired; sign in again")
        session_id, user_id, role = row
        return Principal(Actor(user_id, None, actor_ip, agent), str(role), session_id, token)
    return session_principal


def _credentials(request: Request, settings: Settings) -> tuple[str | None, str | None]:
    key = bearer_key(request)
    token = None if key else session_cookie(request, settings)
    if key is None and token is None:
        raise errors.Unauthorized("sign in or send an API key")
    if key is not None and not apikeys.KEY_SHAPE.match(key):
        raise errors.NotFound("not found")  # no key of any workspace has this shape
    return key, token


@contextlib.contextmanager
def workspace_scope(request: Request, workspace_id: str, *, min_role: Role = "member",
                    allow_deleted: bool = False) -> Iterator[tuple[Conn, Principal]]:
    """A tenant transaction for the path's workspace, opened only for a member with `min_role`.

    Not a member (or no such workspace) answers 404, indistinguishable on purpose. The authorization is
    awaited before the route runs (one round trip): for routes with work outside the database. Routes
    that only work in the database use workspace_tx or workspace_read, where it travels with their
    statements.
    """
    with workspace_tx(request, workspace_id, min_role=min_role, allow_deleted=allow_deleted) as (conn, caller):
        yield conn, caller()


@contextlib.contextmanager
def workspace_tx(request: Request, workspace_id: str, *, min_role: Role = "member", allow_deleted: bool = False
                 ) -> Iterator[tuple[Conn, Callable[[], Principal]]]:
    """A tenant transaction whose authorization travels with the route's first statements.

    Yields the connection and `caller()`, which gives the Principal when first called. set_config and the
    authorization are queued and not awaited: what the route queues before it first reads a
    result (its reads, even its writes) shares their round trip. A refused caller's statements never
    run: the failed authorization aborts the transaction and the server skips everything behind it, and
    the block raises 401/403/404. Origin and CSRF are checked before the database is touched.

    Only for routes whose work before calling `caller()` is database work (never mail, storage or a
    provider's API): those must use workspace_scope, which awaits the authorization first (a source
    rule in tests/security/test_banned_patterns.py lists the modules reviewed for this). Checks that
    need no database (a body's values, an Idempotency-Key's form) may answer before a refusal does, as
    body parsing always did: they tell the caller nothing about the workspace.
    """
    settings = get_settings()
    tenant = parse_id(workspace_id)
    key, token = _credentials(request, settings)
    if token is not None and request.method in UNSAFE_METHODS:
        check_origin(request, settings)
        _check_csrf(request, token, settings)
    with _refusals(min_role):
        with tenant_tx(tenant) as conn:
            caller = functools.cache(
                _authorize_pending(conn, request, tenant, key, token, min_role, allow_deleted, settings))
            yield conn, caller
        caller()  # a route that never asked still gets its caller checked (a refusal raised above)


@contextlib.contextmanager
def workspace_read(request: Request, workspace_id: str, *, min_role: Role = "member"
                   ) -> Iterator[Conn]:
    """workspace_tx for GET routes that only queue reads and read their results after the block: the
    authorization, the reads and the Sync that ends the transaction travel in one round trip."""
    with workspace_tx(request, workspace_id, min_role=min_role) as (conn, _caller):
        yield conn


@contextlib.contextmanager
def account_scope(request: Request) -> Iterator[tuple[Conn, Principal]]:
    """A transaction for the signed-in user's own data (no workspace; cookie sessions only)."""
    settings = get_settings()
    if bearer_key(request):
        raise errors.Unauthorized("API keys act within their workspace only")
    token = session_cookie(request, settings)
    if token is None:
        raise errors.Unauthorized("sign in first")
    if request.method in UNSAFE_METHODS:
        # Both checks need only the request and the cookie: a forged write is refused before the
        # database is touched (as on workspace routes), even when its session has expired.
        check_origin(request, settings)
        _check_csrf(request, token, settings)
    with user_tx() as conn:
        info = sessions.resolve(conn, token=token, now=clock.now(), settings=settings)
        if info is None:
            raise errors.Unauthorized("the session has expired; sign in again")
        # Only now, with the session verified, may the transaction read this user's memberships.
        bind_user(conn, info.user_id)
        yield conn, Principal(Actor(info.user_id, None, client_ip(request), user_agent(request)),
                              None, info.session_id, token)
