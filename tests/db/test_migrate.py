"""Migrations: ordered, transactional, recorded, locked, idempotent."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from chalicelib.db.guard import find_violations
from chalicelib.db.migrate import (
    Migration,
    MigrationError,
    bootstrap,
    load_migrations,
    migrate,
    role_conninfo,
)


@pytest.fixture
def empty_db(pg_admin_url: str) -> Iterator[str]:
    """A brand-new database with no migrations applied (admin conninfo)."""
    name = f"crm_t_{os.getpid()}_empty_{uuid.uuid4().hex[:8]}"
    bootstrap(pg_admin_url, name)
    yield role_conninfo(pg_admin_url, dbname=name)
    with psycopg.connect(role_conninfo(pg_admin_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _versions(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        return [str(r[0]) for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_migrating_an_empty_database_twice_applies_once(empty_db: str) -> None:
    everything = [m.version for m in load_migrations()]
    assert migrate(empty_db) == everything
    assert migrate(empty_db) == []
    assert _versions(empty_db) == everything
    with psycopg.connect(empty_db) as conn:
        assert find_violations(conn) == []
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'workspaces'").fetchone()
    assert owner == ("crm_owner",)


def test_two_concurrent_runners_apply_each_migration_once(empty_db: str) -> None:
    results: list[list[str]] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_db))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sorted(results, key=len) == [[], [m.version for m in load_migrations()]]


def test_a_failing_migration_leaves_nothing_behind(empty_db: str) -> None:
    good = load_migrations()
    bad = Migration("9999", "broken", "CREATE TABLE half_done (id int); SELECT 1/0;")
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(empty_db, [*good, bad])
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('public.half_done')").fetchone() == (None,)
    assert _versions(empty_db) == [m.version for m in good]


def test_an_edited_migration_is_refused(empty_db: str) -> None:
    migrate(empty_db)
    first = load_migrations()[0]
    edited = Migration(first.version, first.name, first.sql_text + "\n-- edited")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_db, [edited])


def test_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)
