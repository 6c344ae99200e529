"""The pool under database faults: a dead connection is replaced at checkout, an unavailable database
raises DatabaseUnavailable (a 503 at the edge) at once, and every wait on a silent server ends."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import PoolTimeout, TooManyRequests

from chalicelib.db import deadline
from chalicelib.db.faults import unavailable_kind
from chalicelib.db.migrate import APP_ROLE, JOBS_ROLE, bootstrap, role_conninfo
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.errors import DatabaseUnavailable
from chalicelib.settings import Settings
from tests.conftest import TestDatabase, make_tenant
from tests.dbfaults import FreezableProxy, closed_port, freezable_proxy


def _names(db: Database, tenant: uuid.UUID) -> list[str]:
    with tenant_tx(tenant, db=db) as conn:
        return [str(r[0]) for r in conn.execute("SELECT name FROM workspaces").fetchall()]


def _terminate(fresh_db: TestDatabase, role: str = "crm_app") -> int:
    with fresh_db.admin() as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s"
                             " AND datname = current_database()", (role,)).fetchall()
    return len(rows)


@pytest.fixture
def proxy(fresh_db: TestDatabase) -> Iterator[FreezableProxy]:
    with freezable_proxy(fresh_db.app_url) as found:
        yield found


def _through(proxy: FreezableProxy, fresh_db: TestDatabase, *, quiet_check_seconds: float = 30.0) -> Database:
    return Database(proxy.conninfo(fresh_db.app_url), size=1, name="app", connect_timeout=2,
                    quiet_check_seconds=quiet_check_seconds)


def test_failed_statement_seen_inside_a_pipelined_transaction_logs_no_warning(
        fresh_db: TestDatabase, app_db: Database, caplog: pytest.LogCaptureFixture) -> None:
    # What a refused read does when the refusal arrives while the route still queues statements: the
    # next execute reads the error and raises inside the block, with statements still queued behind it.
    a = make_tenant(fresh_db, "alpha")
    caplog.set_level(logging.WARNING)
    reached_the_end = False
    with pytest.raises(pg_errors.DivisionByZero), tenant_tx(a, db=app_db) as conn:
        conn.execute("SELECT 1 / 0")
        time.sleep(0.2)  # the error is back on the socket by now
        conn.execute("SELECT name FROM workspaces")
        reached_the_end = True
    assert not reached_the_end, "the error was not seen inside the block: the test proves nothing"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert _names(app_db, a) == ["alpha"]


def test_every_dead_idle_connection_is_replaced_at_the_next_checkout(fresh_db: TestDatabase) -> None:
    a = make_tenant(fresh_db, "alpha")
    db = Database(fresh_db.app_url, size=3, name="app")
    try:
        with db.connection(), db.connection(), db.connection():
            pass  # three idle connections in the pool
        assert _terminate(fresh_db) == 3
        # As after a restart: every pooled connection is dead. The next request still succeeds.
        assert _names(db, a) == ["alpha"]
        assert db.pool.get_stats()["connections_lost"] >= 1
    finally:
        db.close()


def test_unreachable_database_fails_at_once_not_after_the_pool_timeout() -> None:
    db = Database(f"host=127.0.0.1 port={closed_port()} dbname=crm user=crm_app", timeout=25.0, connect_timeout=2)
    try:
        with pytest.raises(DatabaseUnavailable) as raised, db.connection():
            pass
        # "connection" (the refusal itself), not "pool-timeout": nobody waited 25 s for a retry.
        assert raised.value.kind == "connection"
        with pytest.raises(DatabaseUnavailable), tenant_tx(uuid.uuid4(), db=db):
            pass
    finally:
        db.close()


def test_next_checkout_connects_again_after_a_failed_one(fresh_db: TestDatabase, proxy: FreezableProxy) -> None:
    # A failed connection attempt keeps no slot and schedules no backoff: the first request after the
    # database is back gets a connection.
    a = make_tenant(fresh_db, "alpha")
    db = _through(proxy, fresh_db)
    try:
        proxy.freeze()
        with pytest.raises(DatabaseUnavailable) as raised, db.connection():
            pass
        assert raised.value.kind == "connect-timeout"
        proxy.thaw()
        assert _names(db, a) == ["alpha"]
    finally:
        db.close()


def test_query_on_a_frozen_server_ends_at_the_deadline(fresh_db: TestDatabase, proxy: FreezableProxy) -> None:
    a = make_tenant(fresh_db, "alpha")
    db = _through(proxy, fresh_db)
    try:
        assert _names(db, a) == ["alpha"]
        proxy.freeze()
        with pytest.raises(DatabaseUnavailable), deadline.budget(1.0):
            _names(db, a)
        proxy.thaw()
        assert _names(db, a) == ["alpha"]  # the cut connection was replaced
    finally:
        db.close()


def test_checkout_ping_of_a_frozen_server_ends(fresh_db: TestDatabase, proxy: FreezableProxy) -> None:
    # Every checkout pings (as after a long idle); the ping is bounded even outside any budget (jobs).
    db = _through(proxy, fresh_db, quiet_check_seconds=-1.0)
    try:
        with db.connection():
            pass
        proxy.freeze()
        with pytest.raises(DatabaseUnavailable), db.connection():
            pass
    finally:
        db.close()


def test_slow_statement_on_a_live_server_is_cancelled_and_the_connection_kept(fresh_db: TestDatabase) -> None:
    db = Database(fresh_db.app_url, size=1, name="app")
    try:
        with pytest.raises(DatabaseUnavailable) as raised, deadline.budget(1.0), db.connection() as conn:
            first_pid = conn.info.backend_pid
            conn.execute("SET statement_timeout = 0")  # only the client-side deadline can stop it now
            conn.execute("SELECT pg_sleep(10)")
        assert raised.value.kind == "57014"  # query_canceled: the cancel, not the socket, ended it
        with db.connection() as conn:
            assert conn.info.backend_pid == first_pid
    finally:
        db.close()


def test_backend_terminated_mid_statement_is_unavailable(fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db)

    def terminate_when_sleeping() -> None:
        for _ in range(200):
            with fresh_db.admin() as admin:
                if admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'crm_app'"
                                 " AND datname = current_database() AND query LIKE 'SELECT pg_sleep%%'").fetchall():
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=terminate_when_sleeping)
    killer.start()
    with pytest.raises(DatabaseUnavailable) as raised, tenant_tx(a, db=app_db) as conn:
        conn.execute("SELECT pg_sleep(30)").fetchone()
    killer.join()
    assert raised.value.kind == "57P01"  # admin_shutdown, as in a restart
    assert _names(app_db, a) == ["w"]


def test_role_out_of_connection_slots_is_unavailable(fresh_db: TestDatabase) -> None:
    role = f"crm_t_{uuid.uuid4().hex[:8]}_limited"
    with fresh_db.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 1").format(sql.Identifier(role)))
    db = Database(role_conninfo(fresh_db.admin_url, user=role), name="app")
    try:
        # The first connection holds the role's one slot.
        with psycopg.connect(role_conninfo(fresh_db.admin_url, user=role)), \
                pytest.raises(DatabaseUnavailable) as raised, db.connection():
            pass
        assert raised.value.kind in ("53300", "connection")  # too_many_connections
    finally:
        db.close()
        with fresh_db.admin() as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_tcp_connections_carry_keepalives_and_timeouts(fresh_db: TestDatabase, proxy: FreezableProxy) -> None:
    db = _through(proxy, fresh_db)
    try:
        with db.connection() as conn:
            params = conn.info.get_parameters()
        assert params["connect_timeout"] == "2"
        assert params["keepalives"] == "1" and params["tcp_user_timeout"] == "10000"
    finally:
        db.close()
    own = Database(proxy.conninfo(fresh_db.app_url, keepalives_idle="42"), name="app")
    try:
        with own.connection() as conn:
            assert conn.info.get_parameters()["keepalives_idle"] == "42"  # the connection string wins
    finally:
        own.close()


# Written out (the README's table), not read from chalicelib.db.migrate.ROLE_TIMEOUTS.
EXPECTED_TIMEOUTS = {
    "crm_app": {"statement_timeout": "15s", "lock_timeout": "5s", "idle_in_transaction_session_timeout": "30s"},
    "crm_jobs": {"statement_timeout": "5min", "lock_timeout": "30s", "idle_in_transaction_session_timeout": "5min"},
}


@pytest.mark.parametrize("role", [APP_ROLE, JOBS_ROLE])
def test_each_runtime_role_has_its_own_server_side_timeouts(pg_admin_url: str, fresh_db: TestDatabase,
                                                            role: str) -> None:
    bootstrap(pg_admin_url, fresh_db.name)  # idempotent; the shared server's roles may predate a change
    with psycopg.connect(fresh_db.app_url if role == APP_ROLE else fresh_db.jobs_url) as conn:
        shown = {name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
                 for name in EXPECTED_TIMEOUTS[role]}
    assert shown == {name: (value,) for name, value in EXPECTED_TIMEOUTS[role].items()}
    # The API's statements stop (on the server) before the request deadline does.
    assert Settings().db_request_deadline_s > 15


@pytest.mark.parametrize(("error", "kind"), [
    (psycopg.OperationalError("refused"), "connection"),
    (pg_errors.ConnectionTimeout("connect"), "connect-timeout"),
    (PoolTimeout("no connection"), "pool-timeout"),
    (TooManyRequests("queue full"), "pool-busy"),
    (pg_errors.AdminShutdown("restart"), "57P01"),
    (pg_errors.CannotConnectNow("starting up"), "57P03"),
    (pg_errors.TooManyConnections("no slots"), "53300"),
    (pg_errors.InvalidPassword("password"), "28P01"),
    (pg_errors.QueryCanceled("deadline"), "57014"),
    (pg_errors.LockNotAvailable("lock_timeout"), "55P03"),
    (pg_errors.IdleInTransactionSessionTimeout("idle"), "25P03"),
    # Bugs and conflicts stay 500s (or their own problems): retrying would not help.
    (pg_errors.UniqueViolation("duplicate"), None),
    (pg_errors.UndefinedTable("typo"), None),
    (pg_errors.ProgramLimitExceeded("too big"), None),
    (pg_errors.SerializationFailure("conflict"), None),
    (pg_errors.PipelineAborted("skipped behind a refusal"), None),
    (psycopg.InterfaceError("misuse"), None),
    (ValueError("not the database"), None),
])
def test_only_unavailability_is_classified_as_unavailable(error: Exception, kind: str | None) -> None:
    assert unavailable_kind(error) == kind
