"""R02 in behaviour, not only in the catalog: the RESTRICTIVE tenant guard keeps a deliberately wide permissive
policy (a future "admin" policy, USING (true)) from letting workspace B read or write A's rows.

Each case runs as the superuser in one transaction that is rolled back; the app role's view is taken with
SET LOCAL ROLE crm_app and the tenant set as tenant_tx sets it. The same transaction then turns the guard
permissive and shows that B does read A's rows: the test can fail, and fails if the template's guard does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.conftest import TestDatabase, make_tenant

Conn = psycopg.Connection[tuple[object, ...]]
WIDE = "CREATE POLICY wide_admin ON {} AS PERMISSIVE FOR ALL TO crm_app USING (true) WITH CHECK (true)"


@pytest.fixture
def admin(fresh_db: TestDatabase) -> Iterator[Conn]:
    """A superuser connection inside a transaction that is rolled back at the end."""
    with fresh_db.admin() as conn:
        conn.autocommit = False
        yield conn
        conn.rollback()


def _as_b(conn: Conn, tenant: uuid.UUID, query: sql.Composed | sql.SQL,
          params: tuple[object, ...] = ()) -> list[object]:
    """Run `query` as crm_app inside B's tenant context (in a savepoint: a refusal rolls back only it)."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE crm_app")
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
            cursor = conn.execute(query, params)
            rows: list[object] = [r[0] for r in cursor.fetchall()] if cursor.description else [cursor.rowcount]
            conn.execute("RESET ROLE")
            return rows
    except psycopg.errors.InsufficientPrivilege as exc:
        return [exc.sqlstate]


def _scratch_table(conn: Conn) -> sql.Identifier:
    """A new tenant table secured by the product's template (app.secure_tenant_table), as its owner would."""
    conn.execute("SET LOCAL ROLE crm_owner")
    conn.execute("CREATE TABLE public.rls_scratch (tenant_id uuid NOT NULL REFERENCES public.workspaces (id),"
                 " id uuid NOT NULL DEFAULT gen_random_uuid(), body text, PRIMARY KEY (tenant_id, id))")
    conn.execute("CALL app.secure_tenant_table('public.rls_scratch')")
    conn.execute("RESET ROLE")
    return sql.Identifier("rls_scratch")


def _seed(conn: Conn, table: sql.Identifier, column: str, a: uuid.UUID, b: uuid.UUID) -> None:
    for tenant, value in ((a, "A-secret"), (b, "B-own")):
        conn.execute(sql.SQL("INSERT INTO {} (tenant_id, {}) VALUES (%s, %s)").format(table, sql.Identifier(column)),
                     (tenant, value))


def _check_b_is_fenced_in(conn: Conn, table: sql.Identifier, column: str, a: uuid.UUID, b: uuid.UUID) -> None:
    col = sql.Identifier(column)
    conn.execute(sql.SQL(WIDE).format(table))
    assert _as_b(conn, b, sql.SQL("SELECT {} FROM {}").format(col, table)) == ["B-own"]
    assert _as_b(conn, b, sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(table), (a,)) == [0]
    assert _as_b(conn, b, sql.SQL("UPDATE {} SET {} = 'pwned' WHERE tenant_id = %s").format(table, col), (a,)) == [0]
    assert _as_b(conn, b, sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(table), (a,)) == [0]
    # Writing a row into A (the guard's WITH CHECK) is refused: 42501, new row violates row-level security.
    insert = sql.SQL("INSERT INTO {} (tenant_id, {}) VALUES (%s, 'planted')").format(table, col)
    assert _as_b(conn, b, insert, (a,)) == ["42501"]
    rows = conn.execute(sql.SQL("SELECT {} FROM {} WHERE tenant_id = %s").format(col, table), (a,)).fetchall()
    assert rows == [("A-secret",)]


def _turn_the_guard_permissive(conn: Conn, table: sql.Identifier) -> None:
    conn.execute(sql.SQL("DROP POLICY tenant_guard ON {}").format(table))
    conn.execute(sql.SQL("CREATE POLICY tenant_guard ON {} AS PERMISSIVE FOR ALL TO crm_app, crm_jobs"
                         " USING (tenant_id = (SELECT app.current_tenant()))"
                         " WITH CHECK (tenant_id = (SELECT app.current_tenant()))").format(table))


def test_a_wide_permissive_policy_on_a_template_secured_table_does_not_let_b_read_a(
        fresh_db: TestDatabase, admin: Conn) -> None:
    a, b = make_tenant(fresh_db, "A"), make_tenant(fresh_db, "B")
    table = _scratch_table(admin)
    _seed(admin, table, "body", a, b)
    _check_b_is_fenced_in(admin, table, "body", a, b)
    # Without a RESTRICTIVE guard the wide policy is OR-ed in, and B reads A's row: what the guard prevents.
    _turn_the_guard_permissive(admin, table)
    assert sorted(_as_b(admin, b, sql.SQL("SELECT body FROM {}").format(table)), key=str) == ["A-secret", "B-own"]


def test_a_wide_permissive_policy_on_a_migrated_tenant_table_does_not_let_b_read_a(
        fresh_db: TestDatabase, admin: Conn) -> None:
    a, b = make_tenant(fresh_db, "A"), make_tenant(fresh_db, "B")
    table = sql.Identifier("contacts")
    _seed(admin, table, "first_name", a, b)
    _check_b_is_fenced_in(admin, table, "first_name", a, b)
    _turn_the_guard_permissive(admin, table)
    assert sorted(_as_b(admin, b, sql.SQL("SELECT first_name FROM {}").format(table)), key=str) == [
        "A-secret", "B-own"]


def test_every_tenant_table_has_the_restrictive_guard_of_the_template(fresh_db: TestDatabase) -> None:
    """The behaviour above holds for each table that has the guard; this lists the tables lacking it."""
    with fresh_db.admin() as conn:
        missing = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'"
            " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' WHERE c.relkind = 'r'"
            " AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND NOT p.polpermissive)"
            " ORDER BY 1").fetchall()
    assert missing == []
