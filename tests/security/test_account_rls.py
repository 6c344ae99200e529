"""Account tables under row-level security (migration 0020): the cross-tenant walk over account rows.

Workspace A has a member (alice) with sessions, account audit entries, a pending email change, an invitation
of carol (her address in login_tokens) and a channel's webhook route. Workspace B has bob and a co-member
(carol-b) with her own session, audit entry and email change. Every query below
runs as crm_app through the product's own tenancy code (tenant_tx, bind_user), in B's context with bob bound
as after his session was verified: no row of A's is readable, and none can be written, changed or deleted.
Before migration 0020, the users and login_tokens reads here returned alice's and carol's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from chalicelib.db.pool import Database
from chalicelib.db.tenancy import bind_user, tenant_tx, user_tx
from tests.conftest import TestDatabase, make_tenant

NOW = datetime.now(UTC)
LATER = NOW + timedelta(hours=1)
READABLE = ("users", "sessions", "account_audit_log", "webhook_routes")
NOT_READABLE = ("login_tokens", "rate_limits", "webhook_replay_tokens", "webhook_rejections")


@dataclass(frozen=True)
class World:
    a: uuid.UUID
    b: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID
    a_channel: uuid.UUID
    db: Database


def _user(conn: psycopg.Connection[tuple[object, ...]], email: str) -> uuid.UUID:
    row = conn.execute("INSERT INTO users (email) VALUES (%s) RETURNING id", (email,)).fetchone()
    assert row is not None and isinstance(row[0], uuid.UUID)
    return row[0]


def _account_rows(conn: psycopg.Connection[tuple[object, ...]], user: uuid.UUID, tenant: uuid.UUID,
                  role: str, tag: str) -> None:
    conn.execute("INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, %s)", (tenant, user, role))
    conn.execute("INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at)"
                 " VALUES (%s, %s, %s, %s, %s)", (f"{tag}-session".encode(), user, NOW, NOW, LATER))
    conn.execute("INSERT INTO account_audit_log (user_id, action, details) VALUES (%s, 'signin.succeeded', %s)",
                 (user, f'{{"workspace_id": "{tenant}"}}'))
    conn.execute("INSERT INTO login_tokens (token_hash, code_hash, purpose, email, user_id, created_at, expires_at)"
                 " VALUES (%s, %s, 'email_change', %s, %s, %s, %s)",
                 (f"{tag}-change".encode(), b"c", f"{tag}-new@example.test", user, NOW, LATER))


@pytest.fixture
def world(fresh_db: TestDatabase) -> Iterator[World]:
    a, b = make_tenant(fresh_db, "A"), make_tenant(fresh_db, "B")
    a_channel = uuid.uuid4()
    with fresh_db.admin() as conn:
        alice, bob = _user(conn, "alice@example.test"), _user(conn, "bob@example.test")
        _account_rows(conn, alice, a, "owner", "alice")
        _account_rows(conn, bob, b, "owner", "bob")
        conn.execute("INSERT INTO login_tokens (token_hash, code_hash, purpose, email, workspace_id, role,"
                     " created_at, expires_at) VALUES ('carol-invite', 'c', 'invitation', 'carol@example.test',"
                     " %s, 'member', %s, %s)", (a, NOW, LATER))
        conn.execute("INSERT INTO login_tokens (token_hash, code_hash, purpose, email, created_at, expires_at)"
                     " VALUES ('dave-login', 'c', 'login', 'dave@example.test', %s, %s)", (NOW, LATER))
        conn.execute("INSERT INTO webhook_routes (channel_id, workspace_id) VALUES (%s, %s)", (a_channel, a))
        conn.execute("INSERT INTO webhook_routes (channel_id, workspace_id) VALUES (%s, %s)", (uuid.uuid4(), b))
        conn.execute("INSERT INTO rate_limits (bucket, window_start, hits) VALUES ('x', now(), 1)")
        conn.execute("INSERT INTO webhook_replay_tokens (provider, token_hash) VALUES ('mailgun', 'x')")
        conn.execute("INSERT INTO webhook_rejections (day, provider, reason, count) VALUES (now(), 'twilio', 'x', 1)")
        # carol shares workspace B with bob: a co-member's sessions and events are still not bob's to read.
        carol = _user(conn, "carol-b@example.test")
        _account_rows(conn, carol, b, "member", "carol")
    db = Database(fresh_db.app_url, size=1, timeout=5.0)
    yield World(a, b, alice, bob, a_channel, db)
    db.close()


def _in_b(w: World, statement: str, params: tuple[object, ...] = (), *, bound: bool = True) -> list[tuple[object, ...]]:
    """Run one statement as crm_app in B's tenant transaction, bob bound as after his session was verified."""
    with tenant_tx(w.b, db=w.db, pipeline=False) as conn:
        if bound:
            bind_user(conn, w.bob)
        cursor = conn.execute(statement.encode(), params)
        return cursor.fetchall() if cursor.description else [(cursor.rowcount,)]


def _refused(w: World, statement: str, params: tuple[object, ...] = ()) -> str | None:
    try:
        _in_b(w, statement, params)
    except psycopg.errors.InsufficientPrivilege as exc:
        return exc.sqlstate
    return None


def test_b_reads_only_its_own_account_rows(world: World) -> None:
    w = world
    # Its own account and its workspace's members (carol), read only; never alice of workspace A.
    assert _in_b(w, "SELECT email FROM users ORDER BY 1") == [("bob@example.test",), ("carol-b@example.test",)]
    assert _in_b(w, "UPDATE users SET display_name = 'x' WHERE email = 'carol-b@example.test'") == [(0,)]
    assert _in_b(w, "SELECT user_id FROM sessions") == [(w.bob,)]
    assert _in_b(w, "SELECT user_id FROM account_audit_log") == [(w.bob,)]
    assert [r[0] for r in _in_b(w, "SELECT workspace_id FROM webhook_routes")] == [w.b]
    # What the app's own lookups would pass: A's ids, by key.
    assert _in_b(w, "SELECT count(*) FROM users WHERE id = %s", (w.alice,)) == [(0,)]
    assert _in_b(w, "SELECT count(*) FROM sessions WHERE user_id = %s", (w.alice,)) == [(0,)]
    assert _in_b(w, "SELECT count(*) FROM webhook_routes WHERE channel_id = %s", (w.a_channel,)) == [(0,)]


@pytest.mark.parametrize("table", NOT_READABLE)
def test_tokens_and_counters_are_not_readable_at_all(world: World, table: str) -> None:
    # Invitations (carol's address), sign-in and email-change tokens are read by the definer functions only.
    assert _refused(world, f"SELECT count(*) FROM {table}") == "42501"


@pytest.mark.parametrize("table", READABLE)
def test_without_a_bound_user_or_tenant_every_account_table_reads_empty(world: World, table: str) -> None:
    with user_tx(db=world.db) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone() == (0,)


def test_members_of_the_current_workspace_are_readable_without_a_bound_user(world: World) -> None:
    # The members list of a workspace request (API keys bind no user): B's members, nobody else.
    assert _in_b(world, "SELECT email FROM users ORDER BY 1", bound=False) == [
        ("bob@example.test",), ("carol-b@example.test",)]


def test_b_cannot_change_or_remove_account_rows_of_a(world: World) -> None:
    w = world
    assert _in_b(w, "UPDATE users SET display_name = 'pwned' WHERE id = %s", (w.alice,)) == [(0,)]
    assert _in_b(w, "UPDATE sessions SET revoked_at = now() WHERE user_id = %s", (w.alice,)) == [(0,)]
    assert _in_b(w, "DELETE FROM webhook_routes WHERE workspace_id = %s", (w.a,)) == [(0,)]


@pytest.mark.parametrize("statement", [
    "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at)"
    " VALUES ('planted', %(alice)s, now(), now(), now() + interval '1 day')",
    "INSERT INTO account_audit_log (user_id, action) VALUES (%(alice)s, 'planted')",
    "INSERT INTO login_tokens (token_hash, code_hash, purpose, email, workspace_id, role, created_at, expires_at)"
    " VALUES ('planted', 'c', 'invitation', 'mallory@example.test', %(a)s, 'owner', now(), now() + interval '1 day')",
    "INSERT INTO login_tokens (token_hash, code_hash, purpose, email, user_id, created_at, expires_at)"
    " VALUES ('planted', 'c', 'email_change', 'mallory@example.test', %(alice)s, now(), now() + interval '1 day')",
    "INSERT INTO login_tokens (token_hash, code_hash, purpose, email, user_id, created_at, expires_at)"
    " VALUES ('planted', 'c', 'login', 'mallory@example.test', %(alice)s, now(), now() + interval '1 day')",
    "INSERT INTO webhook_routes (channel_id, workspace_id) VALUES (gen_random_uuid(), %(a)s)",
    "INSERT INTO users (email) VALUES ('mallory@example.test')",
])
def test_b_cannot_plant_account_rows_for_a(world: World, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_tx(world.b, db=world.db) as conn:
        bind_user(conn, world.bob)
        conn.execute(statement.encode(), {"alice": world.alice, "a": world.a}).fetchall()


def test_the_definer_functions_answer_only_their_one_question(world: World) -> None:
    w = world
    with user_tx(db=w.db) as conn:
        # A webhook finds its workspace by the channel id in its URL, before any tenant is known ...
        assert conn.execute("SELECT app.webhook_route_workspace(%s)", (w.a_channel,)).fetchone() == (w.a,)
        # ... and an unknown session is simply not found (a hash nobody holds).
        assert conn.execute("SELECT * FROM app.live_session('nobody', now(), now() - interval '1 hour', now())"
                            ).fetchall() == []
    # The helper that creates an account is the redeem functions' own: the API role may not even call it
    # (were it executable, its INSERT would still run as crm_app, which may not create accounts).
    with user_tx(db=w.db) as conn:
        assert conn.execute("SELECT has_function_privilege('app.user_by_email(text, timestamptz)', 'EXECUTE')"
                            ).fetchone() == (False,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), user_tx(db=w.db) as conn:
        conn.execute("SELECT app.user_by_email('mallory@example.test', now())")


def test_a_wide_permissive_policy_on_an_account_table_does_not_let_b_read_a(world: World,
                                                                            fresh_db: TestDatabase) -> None:
    """The RESTRICTIVE account guard in behaviour: a future wide policy (an "admin" view, USING (true)) is
    fenced in; dropped, the same policy lets B read alice. Each run is rolled back."""
    def emails_b_reads(turn_guard_permissive: bool) -> list[object]:
        with fresh_db.admin() as conn:
            conn.autocommit = False
            conn.execute("CREATE POLICY wide_admin ON users AS PERMISSIVE FOR ALL TO crm_app"
                         " USING (true) WITH CHECK (true)")
            if turn_guard_permissive:
                conn.execute("DROP POLICY account_guard ON users")
            conn.execute("SET LOCAL ROLE crm_app")
            conn.execute("SELECT set_config('app.tenant_id', %s, true), set_config('app.user_id', %s, true)",
                         (str(world.b), str(world.bob)))
            emails = [r[0] for r in conn.execute("SELECT email FROM users ORDER BY 1")]
            conn.rollback()
            return emails
    assert emails_b_reads(False) == ["bob@example.test", "carol-b@example.test"]
    assert emails_b_reads(True) == ["alice@example.test", "bob@example.test", "carol-b@example.test"]
