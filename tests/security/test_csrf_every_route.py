"""A03 over the whole registry: every cookie-authenticated unsafe route refuses a write without the session's
CSRF token, or with a wrong one, from an allowed Origin: 403, no row changed, the workspace routes before any
statement reaches the database.

The signed-in owner of workspace A sends each request with real ids of A's rows and a valid body, so a route
that skipped the check would really change something (and answer 2xx, or 404 for a revoked session).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from chalice.test import Client

import app as app_module
from chalicelib.api import is_fallback_view
from chalicelib.auth.principal import UNSAFE_METHODS
from chalicelib.db.pool import Database
from chalicelib.openapi import access
from tests.api.auth_helpers import Browser, body_of, call, create_key, create_workspace, invite_and_join, sign_in
from tests.conftest import TestDatabase
from tests.fix_crm import shared_app, table_rows
from tests.pgtrace import round_trips, trace_lines
from tests.security.test_idor_matrix import PARAM_RE, PARAM_SAMPLES, _body_for, _seed_rows


def _cookie_writes() -> list[tuple[str, str]]:
    """Every unsafe route of the app a session cookie authenticates (public and provider-signed ones excluded)."""
    found = []
    for path, entries in app_module.app.routes.items():
        for method, entry in entries.items():
            if method in UNSAFE_METHODS and not is_fallback_view(entry.view_name) and access(path, method) != "public":
                found.append((method, path))
    return sorted(found, key=lambda r: (r[1], r[0]))


ROUTES = _cookie_writes()
# Bodies the generic sampler of the IDOR matrix cannot build (it covers the workspace routes).
ACCOUNT_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/auth/email-change"): {"new_email": "csrf-new@example.test"},
}


@dataclass
class World:
    """Workspace A with a row of every resource; its owner a1 signed in (the cookie every request carries)."""

    db: TestDatabase
    pool: Database
    client: Client
    a: str
    a1: Browser
    params: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(pg_admin_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Built once: no request of this module may change anything (each test checks)."""
    with shared_app(pg_admin_url, template_db, tmp_path_factory.mktemp("csrf")) as shared:
        client, box = shared.client, shared.outbox
        a1 = sign_in(client, "csrf-owner@example.test", box)
        a = create_workspace(client, a1, "Alpha")["id"]
        a2 = invite_and_join(client, box, a1, a, "csrf-member@example.test", "member")
        key = create_key(client, a1, a, role="member")
        sessions = body_of(call(client, "GET", "/auth/sessions", a1))["data"]
        session_id = next(s["id"] for s in sessions if s["current"])
        params = {"user_id": a2.user_id, "key_id": str(key["id"]), "session_id": str(session_id), **PARAM_SAMPLES}
        _seed_rows(client, a1, a, params)
        yield World(shared.db, shared.app, client, a, a1, params)


def _snapshot(db: TestDatabase) -> dict[str, list[str]]:
    """Every row of every table, except when a1's session was last seen (bookkeeping of reading it)."""
    return table_rows(db, skip=("rate_limits", "schema_migrations"), leave_out={"sessions": "last_seen_at"})


def _url(world: World, path: str) -> str:
    for name in PARAM_RE.findall(path):
        value = world.a if name == "workspace_id" else world.params.get(name, str(uuid.uuid4()))
        path = path.replace("{" + name + "}", value)
    return path


def _statements(lines: list[str]) -> list[str]:
    """The SQL text of every statement the client sent (Parse or simple Query messages), upper-cased."""
    sent = []
    for line in lines:
        parts = line.split("\t", 3)
        if line.startswith("F") and len(parts) == 4 and parts[2] in ("Parse", "Query"):
            text = parts[3].split('"', 4)[3] if parts[2] == "Parse" else parts[3].split('"', 2)[1]
            sent.append(text.strip().upper())
    return sent


def _send(answers: list[Any], world: World, method: str, url: str, body: Any, token: str | None) -> None:
    answers.append(call(world.client, method, url, world.a1, body, csrf=token))


def _wrong_tokens(world: World) -> list[str | None]:
    """No header at all, then wrong values: another secret of the same browser, a near miss, garbage."""
    right = world.a1.csrf
    return [None, "wrong", right[:-1], right + "A", world.a1.cookie_value]


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_cookie_write_without_or_with_a_wrong_csrf_token_is_403_before_anything_happens(
        world: World, method: str, path: str) -> None:
    url, body = _url(world, path), ACCOUNT_BODIES.get((method, path)) or _body_for(method, path, world.params)
    before = _snapshot(world.db)
    for token in _wrong_tokens(world):
        answers: list[Any] = []
        lines = trace_lines(world.pool, functools.partial(_send, answers, world, method, url, body, token))
        response = answers[0]
        assert response.status_code == 403, (method, url, token, response.status_code, response.body)
        assert "X-CSRF-Token" in body_of(response)["detail"]
        # workspace_tx/workspace_scope and account_scope alike: checked before a connection is even taken
        # from the pool, so no statement of a forged write reaches the database.
        assert round_trips(lines) == [], (method, path, _statements(lines))
    assert _snapshot(world.db) == before


def test_the_right_token_still_works_so_the_refusals_above_are_about_the_token(world: World) -> None:
    """Control: the same browser, Origin and body with the right token get through (a harmless write)."""
    response = call(world.client, "PATCH", "/auth/me", world.a1, {"display_name": "Csrf Owner"})
    assert response.status_code == 200, response.body


# Written out, not read from the product: the only unsafe routes that take no session cookie (sign-in
# before a session exists, and the provider webhooks with their own signatures).
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
WITHOUT_COOKIE = {("POST", "/auth/magic-link"), ("POST", "/auth/session"), ("POST", "/auth/email-change/confirm")}


def test_every_unsafe_route_but_the_sign_in_and_webhook_ones_is_checked() -> None:
    # Marking a cookie write "public" (or narrowing UNSAFE_METHODS) would drop it from the matrix above.
    every = {(m, p) for p, entries in app_module.app.routes.items() for m, entry in entries.items()
             if m in UNSAFE and not is_fallback_view(entry.view_name)}
    assert set(ROUTES) == {r for r in every if r not in WITHOUT_COOKIE and not r[1].startswith("/webhooks/")}


def test_every_unsafe_method_on_workspace_routes_is_covered() -> None:
    methods = {m for m, p in ROUTES if p.startswith("/workspaces/{workspace_id}")}
    assert methods == {"POST", "PUT", "PATCH", "DELETE"}
    assert ("DELETE", "/auth/sessions/{session_id}") in ROUTES and ("PATCH", "/auth/me") in ROUTES
    assert len(ROUTES) > 40
