"""Fixtures and helpers shared by the API and security tests (loaded for every test by tests/conftest.py).

`api` is the real app in process on the test's fresh database; `outbox` the fake mailer; `env` sets settings
for one test; `logs` captures what the app logs. `shared_app()` builds a world once for a module (a database,
DATA_DIR and app pool of its own), `installed()` puts such a world back in place for one test, and
`table_rows()` reads what is in the tables, to prove that a request changed nothing.

The helpers that walk the API (sign in, call, create a workspace) stay in tests/api/auth_helpers.py.
"""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from psycopg import sql

from chalicelib.db.pool import Database, use_database
from chalicelib.observability import configure_logging
from chalicelib.settings import get_settings
from tests.api.auth_helpers import Outbox, outbox_dir
from tests.conftest import TestDatabase, scratch_database


@pytest.fixture
def outbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Outbox]:
    """An empty outbox of this test's own: DATA_DIR points at a fresh directory while the test runs.

    Its own directory, so a suite running at the same time in the same checkout cannot add or take
    emails (the app's key file is then per test too, which nothing depends on).
    """
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    box = Outbox(outbox_dir())
    box.clear()
    yield box
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def api(app_db: Database) -> Iterator[Client]:
    """The real app, in process, on this test's fresh database."""
    import app as app_module  # here, not at the top: loading this plugin must not build the app

    with Client(app_module.app) as client:
        yield client


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set settings variables for this test (get_settings is cached: cleared now and afterwards)."""

    def apply(**values: Any) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key.upper(), str(value))
        get_settings.cache_clear()

    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Everything the app logs during the test, as JSON lines (restored to stdout afterwards)."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("DEBUG", stream=stream)
    yield stream
    configure_logging()
    root.setLevel(level)


# ---- a world built once per module ----


@contextlib.contextmanager
def installed(app: Database, data_dir: Path) -> Iterator[None]:
    """A world's app pool and DATA_DIR as the app's while the block runs (other tests install their own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATA_DIR", str(data_dir))
        get_settings.cache_clear()
        use_database(app, "app")
        try:
            yield
        finally:
            use_database(None, "app")
    get_settings.cache_clear()


@dataclass(frozen=True)
class SharedApp:
    """What a module-scoped world is built on: its database, app pool, DATA_DIR, client and outbox."""

    db: TestDatabase
    app: Database
    data_dir: Path
    client: Client
    outbox: Outbox


@contextlib.contextmanager
def shared_app(pg_admin_url: str, template_db: str, data_dir: Path) -> Iterator[SharedApp]:
    """A database of its own with its app pool and `data_dir` installed, and the app's client, for the block."""
    import app as app_module

    with scratch_database(pg_admin_url, template_db) as db:
        app = Database(db.app_url, size=1, name="app")
        try:
            with installed(app, data_dir), Client(app_module.app) as client:
                yield SharedApp(db, app, data_dir, client, Outbox(get_settings().data_dir / "outbox"))
        finally:
            app.close()


# ---- what is in the tables ----


def table_rows(db: TestDatabase, *tenants: str, skip: Collection[str] = (),
               leave_out: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Every row (as JSON text) of every table, read as the superuser; compare two readings to see a change.

    With `tenants`: only the tables that have a tenant_id column, and only those tenants' rows. `skip` names
    tables not read; `leave_out` one column per table not compared (bookkeeping such as a last-use time).
    """
    leave_out = leave_out or {}
    result: dict[str, list[str]] = {}
    with db.admin() as conn:
        if tenants:
            tables = conn.execute(
                "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t"
                " ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
                " WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'"
                " ORDER BY 1").fetchall()
        else:
            tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                                  " AND table_type = 'BASE TABLE' ORDER BY 1").fetchall()
        for (table,) in tables:
            if table in skip:
                continue
            column = leave_out.get(str(table))
            query = sql.SQL("SELECT (to_jsonb(t) {})::text FROM {} t {}").format(
                sql.SQL("- {}").format(sql.Literal(column)) if column else sql.SQL(""), sql.Identifier(str(table)),
                sql.SQL("WHERE tenant_id = ANY(%s)") if tenants else sql.SQL(""))
            params = ([uuid.UUID(t) for t in tenants],) if tenants else None
            result[str(table)] = sorted(str(r[0]) for r in conn.execute(query, params).fetchall())
    return result
