"""tenant_tx under a pool of size 1: RLS isolates tenants and nothing leaks through reuse."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors as pg_errors

from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from tests.conftest import TestDatabase, make_tenant
from tests.pgtrace import trace_lines


def _visible_names(db: Database, tenant: uuid.UUID) -> list[str]:
    with tenant_tx(tenant, db=db) as conn:
        rows = conn.execute("SELECT name FROM workspaces ORDER BY name").fetchall()
    return [str(r[0]) for r in rows]


def _leftover_tenant(db: Database) -> object:
    with db.pool.connection() as conn:
        row = conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()
    assert row is not None
    return row[0]


def test_tenant_a_row_is_invisible_to_tenant_b(fresh_db: TestDatabase, app_db: Database) -> None:
    a, b = make_tenant(fresh_db, "alpha"), make_tenant(fresh_db, "beta")
    assert _visible_names(app_db, a) == ["alpha"]
    assert _visible_names(app_db, b) == ["beta"]
    with tenant_tx(b, db=app_db) as conn:
        assert conn.execute("SELECT count(*) FROM workspaces WHERE id = %s", (a,)).fetchone() == (0,)


def test_connection_reused_after_commit_carries_no_tenant(fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db)
    with tenant_tx(a, db=app_db) as conn:
        conn.execute("UPDATE workspaces SET name = 'renamed'")
    assert _leftover_tenant(app_db) in ("", None)
    with app_db.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM workspaces").fetchone() == (0,)


def test_connection_reused_after_rollback_carries_no_tenant(fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db, "kept")
    with pytest.raises(RuntimeError), tenant_tx(a, db=app_db) as conn:
        conn.execute("UPDATE workspaces SET name = 'lost'")
        raise RuntimeError("boom")
    assert _leftover_tenant(app_db) in ("", None)
    assert _visible_names(app_db, a) == ["kept"]


def test_connection_reused_after_failed_statement_carries_no_tenant(
        fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db, "kept")
    with pytest.raises(pg_errors.DivisionByZero), tenant_tx(a, db=app_db) as conn:
        conn.execute("UPDATE workspaces SET name = 'lost'")
        conn.execute("SELECT 1 / 0").fetchone()
    assert _leftover_tenant(app_db) in ("", None)
    assert _visible_names(app_db, a) == ["kept"]


def test_failure_outside_pipeline_mode_rolls_back_too(fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db, "kept")
    with pytest.raises(pg_errors.DivisionByZero), tenant_tx(a, db=app_db, pipeline=False) as conn:
        conn.execute("UPDATE workspaces SET name = 'lost'")
        conn.execute("SELECT 1 / 0")
    assert _leftover_tenant(app_db) in ("", None)
    assert _visible_names(app_db, a) == ["kept"]


def test_query_without_tenant_sees_zero_rows_and_cannot_insert(fresh_db: TestDatabase, app_db: Database) -> None:
    make_tenant(fresh_db)
    with app_db.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM workspaces").fetchone() == (0,)
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, 'x')", (uuid.uuid4(),))
        # The same inside an explicit transaction with the tenant left empty (what an earlier
        # transaction-local set_config leaves behind): no rows, never all rows.
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', '', true)")
            assert conn.execute("SELECT count(*) FROM workspaces").fetchone() == (0,)


def test_insert_with_another_tenants_id_is_refused_by_with_check(
        fresh_db: TestDatabase, app_db: Database) -> None:
    a, b = make_tenant(fresh_db), make_tenant(fresh_db)
    with pytest.raises(pg_errors.InsufficientPrivilege, match="row-level security"), \
            tenant_tx(a, db=app_db) as conn:
        conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, 'spoof')", (b,))
    with pytest.raises(pg_errors.InsufficientPrivilege), tenant_tx(a, db=app_db) as conn:
        conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, 'new')", (uuid.uuid4(),))


def test_update_cannot_move_a_row_to_another_tenant(fresh_db: TestDatabase, app_db: Database) -> None:
    a, b = make_tenant(fresh_db, "alpha"), make_tenant(fresh_db, "beta")
    with pytest.raises(pg_errors.InsufficientPrivilege), tenant_tx(a, db=app_db) as conn:
        conn.execute("UPDATE workspaces SET id = %s WHERE id = %s", (uuid.uuid4(), a))
    with tenant_tx(b, db=app_db) as conn:
        # In pipeline mode results arrive on fetch: repositories use RETURNING to count rows.
        assert conn.execute("UPDATE workspaces SET name = 'x' WHERE id = %s RETURNING id", (a,)).fetchall() == []
    assert _visible_names(app_db, a) == ["alpha"]


def test_app_role_cannot_delete_workspaces(fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db)
    with pytest.raises(pg_errors.InsufficientPrivilege), tenant_tx(a, db=app_db) as conn:
        conn.execute("DELETE FROM workspaces WHERE id = %s", (a,))


def test_commit_mid_request_makes_later_statements_fail_closed(
        fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db, "alpha")
    with tenant_tx(a, db=app_db, pipeline=False) as conn:
        assert conn.execute("SELECT count(*) FROM workspaces").fetchone() == (1,)
        # A handler that commits by mistake: psycopg refuses inside a transaction block...
        with pytest.raises(psycopg.ProgrammingError):
            conn.commit()
    with pytest.raises(pg_errors.InsufficientPrivilege), tenant_tx(a, db=app_db) as conn:
        # ...and a raw COMMIT ends the tenant's transaction, so what follows sees nothing.
        conn.execute("COMMIT")
        assert conn.execute("SELECT count(*) FROM workspaces").fetchone() == (0,)
        conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, 'x')", (a,)).fetchone()
    assert _visible_names(app_db, a) == ["alpha"]


def test_connection_returned_inside_a_transaction_is_rolled_back_by_the_pool(
        fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db)
    conn = app_db.pool.getconn()
    conn.execute("BEGIN")
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(a),))
    app_db.pool.putconn(conn)  # a buggy caller hands it back mid-transaction
    assert _leftover_tenant(app_db) in ("", None)


def test_tenant_id_is_parsed_as_uuid_before_any_sql(app_db: Database) -> None:
    hostile = "x', true); SELECT set_config('app.tenant_id','b"
    with pytest.raises(ValueError, match="badly formed"), tenant_tx(hostile, db=app_db):
        pass


def test_owner_role_is_still_filtered_because_rls_is_forced(fresh_db: TestDatabase) -> None:
    a, b = make_tenant(fresh_db, "alpha"), make_tenant(fresh_db, "beta")
    with fresh_db.admin() as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE crm_owner")
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(b),))
        # FORCE ROW LEVEL SECURITY: the owner has no policy, so it sees nothing at all.
        assert conn.execute("SELECT count(*) FROM workspaces WHERE id = %s", (a,)).fetchone() == (0,)


def test_next_request_recovers_after_backends_are_terminated(fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db, "alpha")
    assert _visible_names(app_db, a) == ["alpha"]
    _terminate_app_backends(fresh_db)
    # The dead connection has input waiting (the server's error, then EOF), so the checkout check runs
    # the full check, which fails, and the pool opens a new connection: the request does not notice.
    assert _visible_names(app_db, a) == ["alpha"]


def _terminate_app_backends(db: TestDatabase) -> None:
    with db.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = 'crm_app'"
                      " AND datname = current_database()")


def _checkout_queries(db: Database) -> list[str]:
    """The statements (the pool's full check is an empty one) sent by one bare checkout: a simple Query,
    or an extended-protocol batch ending in Sync."""
    def checkout() -> None:
        with db.pool.connection():
            pass
    return [line for line in trace_lines(db, checkout)
            if line.startswith("F") and ("\tQuery\t" in line or line.endswith("\tSync"))]


def test_checkout_of_a_connection_just_used_costs_no_round_trip(fresh_db: TestDatabase) -> None:
    db = Database(fresh_db.app_url, size=1, quiet_check_seconds=3600.0)
    try:
        _visible_names(db, make_tenant(fresh_db))
        assert _checkout_queries(db) == []
    finally:
        db.close()


def test_checkout_after_a_long_idle_runs_the_full_check(fresh_db: TestDatabase) -> None:
    # Every checkout counts as "after a long idle" here: the traced ones are the bare checkout and the
    # trace helper's own closing one.
    db = Database(fresh_db.app_url, size=1, quiet_check_seconds=-1.0)
    try:
        _visible_names(db, make_tenant(fresh_db))
        assert len(_checkout_queries(db)) == 2
    finally:
        db.close()


def test_set_config_first_statement_and_sync_share_one_round_trip(
        fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db)
    result: list[object] = []

    def read() -> None:
        with tenant_tx(a, db=app_db) as conn:
            cur = conn.execute("SELECT name FROM workspaces WHERE id = %s", (a,))
        result.append(cur.fetchone())

    lines = trace_lines(app_db, read)
    assert result[0] is not None
    # From set_config on (a checkout check, if any, comes before it), every frontend message up to the
    # first backend answer is one round trip: set_config, the SELECT and the Sync that commits them.
    start = next(i for i, line in enumerate(lines) if "Parse" in line and "set_config" in line)
    first_answer = next(i for i in range(start, len(lines)) if lines[i].startswith("B"))
    batch = lines[start:first_answer]
    assert any("SELECT name FROM workspaces" in line for line in batch), batch
    assert any(line.endswith("\tSync") for line in batch), batch
    # The extended protocol's own transaction (first statement to Sync) frames it: no BEGIN, no COMMIT.
    assert not [line for line in lines if '"BEGIN"' in line or '"COMMIT"' in line], lines


def test_the_block_is_one_transaction(fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db)
    with tenant_tx(a, db=app_db) as conn:
        first = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        conn.execute("UPDATE workspaces SET name = 'one' RETURNING id").fetchall()
        second = conn.execute("SELECT pg_current_xact_id()::text, current_setting('app.tenant_id')").fetchone()
    assert first is not None and second == (first[0], str(a))


def test_exception_after_a_write_ran_rolls_it_back_without_a_warning(
        fresh_db: TestDatabase, app_db: Database) -> None:
    a = make_tenant(fresh_db, "kept")
    notices: list[str] = []
    with app_db.pool.connection() as conn:
        conn.add_notice_handler(lambda diag: notices.append(f"{diag.severity}: {diag.message_primary}"))
    with pytest.raises(RuntimeError), tenant_tx(a, db=app_db) as conn:
        # The UPDATE has run (its result was read) when the block fails: the closing Sync must not
        # commit it. A bare ROLLBACK would, besides, draw "there is no transaction in progress".
        assert conn.execute("UPDATE workspaces SET name = 'lost' RETURNING id").fetchall() == [(a,)]
        raise RuntimeError("boom")
    assert _visible_names(app_db, a) == ["kept"]
    assert notices == []
    assert _leftover_tenant(app_db) in ("", None)


def test_jobs_role_lists_workspaces_but_reads_tenant_rows_only_per_tenant(fresh_db: TestDatabase) -> None:
    a, b = make_tenant(fresh_db, "alpha"), make_tenant(fresh_db, "beta")
    with fresh_db.admin() as conn:
        for tenant in (a, b):
            conn.execute("INSERT INTO audit_log (tenant_id, action) VALUES (%s, 'probe')", (tenant,))
    jobs = Database(fresh_db.jobs_url, size=1, name="jobs")
    try:
        with jobs.pool.connection() as conn:
            # Which tenants exist: the one cross-tenant read the jobs role has.
            assert {r[0] for r in conn.execute("SELECT id FROM workspaces").fetchall()} == {a, b}
            assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)
            # Listing is all: without a tenant it changes nothing.
            assert conn.execute("UPDATE workspaces SET name = 'x' WHERE id = %s RETURNING id", (a,)).fetchall() == []
        with tenant_tx(a, db=jobs) as conn:
            assert conn.execute("SELECT tenant_id FROM audit_log").fetchall() == [(a,)]
    finally:
        jobs.close()


def test_app_role_cannot_list_other_workspaces(fresh_db: TestDatabase, app_db: Database) -> None:
    make_tenant(fresh_db, "alpha")
    with app_db.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM workspaces").fetchone() == (0,)
