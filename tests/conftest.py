"""Real PostgreSQL for every test: a template database built once from the migrations, a fresh copy
per test. Embedded by default; TEST_DATABASE_URL (a superuser URL) points at another server."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
# Settings are read at import of app.py: give the test process its own local defaults.
os.environ.setdefault("STAGE", "local")
os.environ.setdefault("DATA_DIR", str(ROOT / ".data" / "test"))
os.environ.pop("DATABASE_URL", None)
os.environ.pop("SENTRY_DSN", None)

from chalicelib.db.embedded import start_embedded, stop_embedded  # noqa: E402
from chalicelib.db.migrate import APP_ROLE, JOBS_ROLE, bootstrap, load_migrations, migrate, role_conninfo  # noqa: E402
from chalicelib.db.pool import Database, use_database  # noqa: E402

TEST_DB_PREFIX = "crm_t_"


@dataclass(frozen=True)
class TestDatabase:
    __test__ = False

    """A fresh, migrated database and the connection strings of each role."""

    name: str
    admin_url: str
    app_url: str
    jobs_url: str

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection (for setup and for checking what really is in the tables)."""
        return psycopg.connect(self.admin_url, autocommit=True)


def _template_name() -> str:
    digest = hashlib.sha256("".join(m.checksum for m in load_migrations()).encode()).hexdigest()
    return f"crm_tpl_{digest[:16]}"


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """Superuser conninfo of the test server (started here unless TEST_DATABASE_URL is given)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    server, started = start_embedded(ROOT / ".data" / "test-postgres")
    try:
        yield str(server.get_uri())
    finally:
        if started:
            stop_embedded(server)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> str:
    """Name of a database holding every migration, reused while the migrations are unchanged."""
    name = _template_name()
    with psycopg.connect(role_conninfo(pg_admin_url, dbname="postgres"), autocommit=True) as conn:
        # Leftovers of interrupted runs.
        stale = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s OR "
                             "(datname LIKE 'crm\\_tpl\\_%%' AND datname <> %s)",
                             (TEST_DB_PREFIX + "%", name)).fetchall()
        for (old,) in stale:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(old)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists is None:
        building = name + "_building"
        bootstrap(pg_admin_url, building)
        migrate(role_conninfo(pg_admin_url, dbname=building))
        with psycopg.connect(role_conninfo(pg_admin_url, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(building), sql.Identifier(name)))
    return name


@pytest.fixture
def fresh_db(pg_admin_url: str, template_db: str) -> Iterator[TestDatabase]:
    """A new database copied from the template, dropped after the test."""
    name = TEST_DB_PREFIX + uuid.uuid4().hex[:12]
    with psycopg.connect(role_conninfo(pg_admin_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER crm_owner STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    yield TestDatabase(
        name=name,
        admin_url=role_conninfo(pg_admin_url, dbname=name),
        app_url=role_conninfo(pg_admin_url, user=APP_ROLE, dbname=name),
        jobs_url=role_conninfo(pg_admin_url, user=JOBS_ROLE, dbname=name),
    )
    with psycopg.connect(role_conninfo(pg_admin_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def app_db(fresh_db: TestDatabase) -> Iterator[Database]:
    """The app role's pool (size 1, so every test reuses one connection) installed process-wide."""
    db = Database(fresh_db.app_url, size=1, timeout=5.0, name="app")
    use_database(db, "app")
    yield db
    use_database(None, "app")


def make_tenant(db: TestDatabase, name: str = "w") -> uuid.UUID:
    """Create a workspace (a tenant) as the superuser and return its id."""
    tenant = uuid.uuid4()
    with db.admin() as conn:
        conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, %s)", (tenant, name))
    return tenant
