"""Hostile cases for sign-in, sessions and workspace isolation (hostile-tests.md A01, A03, A13, A15, R01, R17,
R18, L08, O01, O05): races, an IDOR matrix over every workspace route, and a canary sweep of the database
and the logs."""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
from chalice.test import Client
from psycopg import sql

from chalicelib import clock, errors
from chalicelib.accounts import members
from chalicelib.audit import Actor
from chalicelib.auth import links, sessions
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import bind_user, tenant_tx, user_tx
from chalicelib.settings import get_settings
from tests.api.auth_helpers import (
    ORIGIN,
    Browser,
    Outbox,
    body_of,
    call,
    create_key,
    create_workspace,
    invite_and_join,
    post_json,
    problem,
    request_link,
    session_from,
    sign_in,
    sign_in_with_token,
)
from tests.conftest import TestDatabase

# ---- A03: single use under a race ----------------------------------------------------------------


def test_fifty_concurrent_consumptions_of_one_token_create_exactly_one_session(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    request_link(api, "racer@example.test")
    token = outbox.newest().token
    settings = get_settings()
    database = Database(fresh_db.app_url, size=10, timeout=30)
    start = threading.Barrier(50)

    def attempt(_: int) -> str | None:
        start.wait()
        now = clock.now()
        with user_tx(db=database) as conn:
            grant = links.consume_token(conn, token=token, purposes=links.SIGN_IN_PURPOSES, now=now,
                                        settings=settings)
            if grant is None:
                return None
            bind_user(conn, grant.user_id)  # as sign-in does: the spent token names the account
            return sessions.create(conn, user_id=grant.user_id, actor=Actor(), now=now, settings=settings)

    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(attempt, range(50)))
    finally:
        database.close()
    assert sum(r is not None for r in results) == 1
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM login_tokens WHERE used_at IS NOT NULL").fetchone() == (1,)
    problem(sign_in_with_token(api, token), 400)  # and over HTTP it is spent too


def test_twenty_concurrent_uses_of_one_code_create_exactly_one_grant(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    request_link(api, "code-racer@example.test")
    code = outbox.newest().code
    settings = get_settings()
    database = Database(fresh_db.app_url, size=10, timeout=30)
    start = threading.Barrier(20)

    def attempt(_: int) -> bool:
        start.wait()
        with user_tx(db=database) as conn:
            return links.consume_code(conn, email="code-racer@example.test", code=code, now=clock.now(),
                                      settings=settings) is not None

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(attempt, range(20)))
    finally:
        database.close()
    assert results.count(True) == 1


# ---- A13: fixation ----------------------------------------------------------------------------


def test_a_planted_session_cookie_is_never_adopted(api: Client, outbox: Outbox) -> None:
    planted = "attacker-chosen-value-" + "x" * 30
    request_link(api, "fixated@example.test")
    response = sign_in_with_token(api, outbox.newest().token, {"Cookie": f"crm_session={planted}"})
    browser = session_from(response)
    assert browser.cookie_value != planted
    problem(call(api, "GET", "/auth/me", Browser(f"crm_session={planted}", planted, "", {}, {})), 401)


# ---- A15: cross-site writes ---------------------------------------------------------------------


def test_cross_site_form_posts_and_method_overrides_are_refused(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "formed@example.test", outbox)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # A form can only send simple content types: the JSON routes refuse them before anything else.
    response = api.http.post("/workspaces", headers={"Cookie": browser.cookie, "Origin": "https://evil.test", **form},
                             body=b"name=pwned")
    assert response.status_code in (403, 415)
    response = api.http.post("/workspaces", headers={"Cookie": browser.cookie, "Origin": ORIGIN,
                                                     "Content-Type": "text/plain"}, body=b'{"name": "pwned"}')
    assert response.status_code == 415
    # Routes without a body still need Origin and the CSRF token.
    problem(api.http.post("/auth/logout", headers={"Cookie": browser.cookie, "Origin": "https://evil.test",
                                                   **form}, body=b""), 403)
    problem(api.http.post("/auth/logout", headers={"Cookie": browser.cookie, **form}, body=b""), 403)
    problem(api.http.post("/auth/logout-all", headers={"Cookie": browser.cookie, "Origin": ORIGIN,
                                                       "Sec-Fetch-Site": "cross-site"}, body=b""), 403)
    # A GET with a method-override header is still a read.
    response = call(api, "GET", "/auth/me", browser, headers={"X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 200
    assert body_of(call(api, "GET", "/workspaces", browser))["data"] == []
    assert call(api, "GET", "/auth/me", browser).status_code == 200


# ---- R17 / R18: the tenant comes from the path and the database --------------------------------


def test_a_tenant_header_or_body_field_does_not_choose_the_workspace(api: Client, outbox: Outbox) -> None:
    alice = sign_in(api, "alice-r18@example.test", outbox)
    bob = sign_in(api, "bob-r18@example.test", outbox)
    a = create_workspace(api, alice, "A")
    b = create_workspace(api, bob, "B")
    spoof = {"X-Tenant-Id": a["id"], "X-Workspace-Id": a["id"]}
    problem(call(api, "GET", f"/workspaces/{a['id']}", bob, headers=spoof), 404)
    own = call(api, "GET", f"/workspaces/{b['id']}", bob, headers=spoof)
    assert body_of(own)["id"] == b["id"]
    problem(call(api, "PATCH", f"/workspaces/{b['id']}", bob, {"name": "x", "tenant_id": a["id"]}), 422)
    problem(call(api, "POST", "/workspaces", bob, {"name": "x", "id": a["id"]}), 422)
    assert body_of(call(api, "GET", f"/workspaces/{a['id']}", alice))["name"] == "A"


# ---- L08: two owners demote each other at the same time ----------------------------------------


def _wait_for_lock_waiters(db: TestDatabase, count: int) -> None:
    deadline = time.monotonic() + 30
    with db.admin() as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                               " AND wait_event_type = 'Lock'", (db.name,)).fetchone()
            if row is not None and row[0] >= count:
                return
            time.sleep(0.01)
    raise AssertionError(f"{count} transactions never queued on the owner rows")


def test_owners_demoting_each_other_concurrently_leave_an_owner(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    first = sign_in(api, "owner-one@example.test", outbox)
    workspace = create_workspace(api, first)
    second = invite_and_join(api, outbox, first, workspace["id"], "owner-two@example.test", "owner")
    tenant = uuid.UUID(workspace["id"])
    one, two = uuid.UUID(first.user_id), uuid.UUID(second.user_id)
    database = Database(fresh_db.app_url, size=2, timeout=30)
    outcomes: dict[str, str] = {}

    def demote(actor: uuid.UUID, target: uuid.UUID) -> None:
        try:
            with tenant_tx(tenant, db=database) as conn:
                members.set_role(conn, tenant_id=tenant, user_id=target, role="member", actor=Actor(actor),
                                 actor_role="owner", now=clock.now())
            outcomes[str(actor)] = "demoted"
        except errors.Conflict:
            outcomes[str(actor)] = "conflict"

    try:
        # Another transaction holds the owner rows, so both demotions have read their view of the workspace
        # before either can write: without a lock on the owners, each would see two owners (write skew).
        with psycopg.connect(fresh_db.app_url) as blocker:
            blocker.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
            blocker.execute("SELECT 1 FROM memberships WHERE role = 'owner' FOR UPDATE").fetchall()
            threads = [threading.Thread(target=demote, args=(one, two)),
                       threading.Thread(target=demote, args=(two, one))]
            for thread in threads:
                thread.start()
            _wait_for_lock_waiters(fresh_db, 2)
            blocker.rollback()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        database.close()
    assert sorted(outcomes.values()) == ["conflict", "demoted"]
    with fresh_db.admin() as conn:
        owners = conn.execute("SELECT count(*) FROM memberships WHERE tenant_id = %s AND role = 'owner'",
                              (tenant,)).fetchone()
    assert owners == (1,)


def test_a_member_of_both_workspaces_gets_each_only_through_its_own_id(api: Client, outbox: Outbox) -> None:
    a1 = sign_in(api, "a1-r16@example.test", outbox)
    b1 = sign_in(api, "b1-r16@example.test", outbox)
    a = create_workspace(api, a1, "A")["id"]
    b = create_workspace(api, b1, "B")["id"]
    call(api, "POST", f"/workspaces/{a}/invitations", a1, {"email": "ab@example.test", "role": "member"})
    call(api, "POST", f"/workspaces/{b}/invitations", b1, {"email": "ab@example.test", "role": "admin"})
    mails = [m for m in outbox.messages() if m.to == "ab@example.test"]
    ab = session_from(sign_in_with_token(api, mails[0].token))
    ab = session_from(sign_in_with_token(api, mails[1].token, {"Cookie": ab.cookie}))
    roles = {w["id"]: w["role"] for w in body_of(call(api, "GET", "/auth/me", ab))["workspaces"]}
    assert roles == {a: "member", b: "admin"}
    problem(call(api, "GET", f"/workspaces/{a}/api-keys", ab), 403)  # member in A
    assert call(api, "GET", f"/workspaces/{b}/api-keys", ab).status_code == 200  # admin in B
    a_members = {m["email"] for m in body_of(call(api, "GET", f"/workspaces/{a}/members", ab))["data"]}
    assert a_members == {"a1-r16@example.test", "ab@example.test"}


# ---- O05 / audit: refused access is not silently dropped ---------------------------------------


def test_a_non_member_probe_leaves_no_trace_in_the_victims_audit_log(api: Client, outbox: Outbox,
                                                                    fresh_db: TestDatabase) -> None:
    owner = sign_in(api, "victim-owner@example.test", outbox)
    workspace = create_workspace(api, owner)["id"]
    prober = sign_in(api, "prober@example.test", outbox)
    problem(call(api, "GET", f"/workspaces/{workspace}/audit-log", prober), 404)
    entries = body_of(call(api, "GET", f"/workspaces/{workspace}/audit-log", owner))["data"]
    assert {e["actor_user_id"] for e in entries} == {owner.user_id}


# ---- A01 / O01: the canary sweep ----------------------------------------------------------------


def _text_and_bytes(db: TestDatabase) -> tuple[list[tuple[str, str]], list[tuple[str, bytes]]]:
    texts: list[tuple[str, str]] = []
    blobs: list[tuple[str, bytes]] = []
    with db.admin() as conn:
        columns = conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
            " AND c.data_type IN ('text', 'character varying', 'character', 'bytea', 'jsonb', 'json', 'inet',"
            " 'USER-DEFINED', 'ARRAY')").fetchall()
        assert columns
        for table, column, data_type in columns:
            where = f"{table}.{column}"
            if data_type == "bytea":
                query = sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL").format(
                    sql.Identifier(column), sql.Identifier(table), sql.Identifier(column))
                blobs += [(where, bytes(r[0])) for r in conn.execute(query).fetchall()]
            else:
                query = sql.SQL("SELECT {}::text FROM {} WHERE {} IS NOT NULL").format(
                    sql.Identifier(column), sql.Identifier(table), sql.Identifier(column))
                texts += [(where, str(r[0])) for r in conn.execute(query).fetchall()]
    return texts, blobs


def _raw_bytes(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_canary_sweep_no_token_code_session_or_key_in_any_column_or_log(
        api: Client, outbox: Outbox, fresh_db: TestDatabase, logs: io.StringIO) -> None:
    address = f"canary-{uuid.uuid4().hex[:10]}@example.test"
    agent = {"User-Agent": "CanaryAgent/1.0"}
    # A link used by token, another by code, a workspace, an invitation, an email change and an API key.
    request_link(api, address, next_path="/inbox", headers=agent)
    first = outbox.newest(to=address)
    browser = session_from(sign_in_with_token(api, first.token, agent))
    request_link(api, address, headers=agent)
    second = outbox.newest(to=address)
    coded = session_from(post_json(api, "/auth/session", {"email": address, "code": second.code},
                                   {"Origin": ORIGIN, **agent}))
    problem(post_json(api, "/auth/session", {"email": address, "code": "WRONG123"}, agent), 400)
    workspace = create_workspace(api, browser, "Canary Inc")["id"]
    call(api, "POST", f"/workspaces/{workspace}/invitations", browser, {"email": "friend@example.test"})
    invitation = outbox.newest(to="friend@example.test")
    friend = session_from(sign_in_with_token(api, invitation.token))
    call(api, "POST", "/auth/email-change", coded, {"new_email": "changed-" + address})
    change = outbox.newest(to="changed-" + address)
    created = create_key(api, browser, workspace, role="admin")
    key = created["key"]
    assert call(api, "GET", f"/workspaces/{workspace}/members", bearer=key).status_code == 200
    call(api, "GET", f"/workspaces/{workspace}/audit-log", browser)
    call(api, "POST", "/auth/logout", friend)

    secrets = {
        "token": first.token, "code-token": second.token, "invitation": invitation.token,
        "change": change.token, "code": second.code, "first-code": first.code,
        "invitation-code": invitation.code, "session": browser.cookie_value, "session-2": coded.cookie_value,
        "session-3": friend.cookie_value, "csrf": browser.csrf, "api-key": key,
        "api-key-secret": key.split("_", 2)[2],  # crm_<prefix>_<secret>; the secret may hold "_"
    }
    raw = {name: value.encode() for name, value in secrets.items()}
    for name in ("token", "code-token", "invitation", "change", "session", "session-2", "session-3"):
        raw[name + "-bytes"] = _raw_bytes(secrets[name])

    texts, blobs = _text_and_bytes(fresh_db)
    for where, value in texts:
        for name, secret in secrets.items():
            assert secret not in value, f"{name} found in {where}"
    for where, blob in blobs:
        for name, secret_bytes in raw.items():
            assert secret_bytes not in blob, f"{name} found in {where}"

    # The address lives in users.email (and login_tokens.email while a link is pending) only.
    for where, value in texts:
        if address in value:
            assert where in ("users.email", "login_tokens.email"), f"the address found in {where}"
    for table in ("rate_limits", "account_audit_log", "audit_log", "sessions"):
        assert not any(address in v for w, v in texts if w.startswith(table + "."))

    logged = logs.getvalue()
    assert logged, "nothing was logged?"
    for name, secret in {**secrets, "address": address, "friend": "friend@example.test"}.items():
        assert secret not in logged, f"{name} found in the logs"


def test_outbox_files_are_readable_by_their_owner_only(api: Client, outbox: Outbox) -> None:
    request_link(api, "private-mail@example.test")
    mode = outbox.newest().path.stat().st_mode & 0o777
    assert mode == 0o600

