"""Real PostgreSQL for every test: a template database built once from the migrations, a fresh copy
per test. Embedded by default; TEST_DATABASE_URL (a superuser URL) points at another server."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parent.parent
# Settings are read at import of app.py: give the test process its own local defaults.
os.environ.setdefault("STAGE", "local")
os.environ.setdefault("DATA_DIR", str(ROOT / ".data" / "test"))
SUITE_DATA_DIR = Path(os.environ["DATA_DIR"])  # as the session starts; tests may point DATA_DIR elsewhere
os.environ.pop("DATABASE_URL", None)
os.environ.pop("SENTRY_DSN", None)

from chalicelib.db.embedded import start_embedded, stop_embedded  # noqa: E402
from chalicelib.db.migrate import APP_ROLE, JOBS_ROLE, bootstrap, load_migrations, migrate, role_conninfo  # noqa: E402
from chalicelib.db.pool import Database, use_database  # noqa: E402

TEST_DB_PREFIX = "crm_t_"
# Shared fixtures and helpers, one module per area (import their helpers from there, never the fixtures).
pytest_plugins = ["tests.fix_crm", "tests.fix_inbox", "tests.fix_aws"]


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
    # Every process using the server (xdist workers, concurrent runs) leaves a marker; the last one out
    # stops it if a test run started it. The starter may finish first while another worker still runs.
    _SERVER_USERS.mkdir(parents=True, exist_ok=True)
    me = _SERVER_USERS / str(os.getpid())
    me.touch()
    if started:
        (_SERVER_USERS / "started").touch()
    try:
        yield str(server.get_uri())
    finally:
        me.unlink(missing_ok=True)
        users = [p for p in _SERVER_USERS.iterdir() if p.name.isdigit() and _alive(int(p.name))]
        flag = _SERVER_USERS / "started"
        if not users and flag.exists() and not _shared_with_others(str(server.get_uri())):
            flag.unlink(missing_ok=True)
            stop_embedded(server)


_SERVER_USERS = ROOT / ".data" / "test-postgres.users"


def _shared_with_others(admin_url: str) -> bool:
    """Whether another test run (a live process) still uses the server (True when it is already gone)."""
    try:
        conn = psycopg.connect(role_conninfo(admin_url, dbname="postgres"), autocommit=True)
    except psycopg.OperationalError:
        return True  # another process stopped it first: nothing left to stop
    with conn:
        names = [str(r[0]) for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'crm\\_t\\_%%'")]
        others = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                              " AND backend_type = 'client backend'").fetchone()
    pids = {n.removeprefix(TEST_DB_PREFIX).split("_", 1)[0] for n in names}
    return bool(others and others[0]) or any(p.isdigit() and int(p) != os.getpid() and _alive(int(p)) for p in pids)


@pytest.fixture(scope="session")
def password_pg() -> Iterator[str]:
    """Superuser conninfo of a private embedded cluster of this session, where every other role must
    sign in with its password (scram-sha-256; the shared server trusts everyone).

    For tests of cluster-wide state, such as creating the crm_* roles as Aurora's master user would,
    which must not touch the roles every other test uses, and of what a connection sends as password.
    """
    # Under the suite's own data directory, not pytest's basetemp (concurrent pytest runs prune each
    # other's older basetemps, deleting a running cluster's files) nor a test's DATA_DIR of the moment.
    pgdata = SUITE_DATA_DIR / f"password-pg-{os.getpid()}" / "pgdata"
    shutil.rmtree(pgdata.parent, ignore_errors=True)
    server, _ = start_embedded(pgdata)
    superuser = conninfo_to_dict(str(server.get_uri()))["user"]
    (server.pgdata / "pg_hba.conf").write_text(f"local all {superuser} trust\nlocal all all scram-sha-256\n")
    # Restarted rather than reloaded: a reload is asynchronous, and a test must never race it.
    stop_embedded(server)
    server, _ = start_embedded(pgdata)
    try:
        yield str(server.get_uri())
    finally:
        stop_embedded(server)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> str:
    """Name of a database holding every migration, reused while the migrations are unchanged."""
    name = _template_name()
    with psycopg.connect(role_conninfo(pg_admin_url, dbname="postgres"), autocommit=True) as conn:
        # Concurrent test runs on one server build the template once, one at a time.
        conn.execute("SELECT pg_advisory_lock(7301552099)")
        try:
            _drop_leftovers(conn, keep_template=name)
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                building = name + "_building"
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(building)))
                bootstrap(pg_admin_url, building)
                migrate(role_conninfo(pg_admin_url, dbname=building))
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(building), sql.Identifier(name)))
        finally:
            conn.execute("SELECT pg_advisory_unlock(7301552099)")
    return name


def _drop_leftovers(conn: psycopg.Connection[tuple[object, ...]], *, keep_template: str) -> None:
    """Drop databases of interrupted runs: test databases of dead processes, unused old templates.

    Several test runs may share one server (each names its databases after its pid), so a database
    of a live process, or a template in use, is left alone.
    """
    for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'crm\\_t\\_%%'").fetchall():
        pid = str(name).removeprefix(TEST_DB_PREFIX).split("_", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))
    old = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'crm\\_tpl\\_%%' AND datname <> %s"
                       " AND datname NOT LIKE '%%\\_building'", (keep_template,)).fetchall()
    for (name,) in old:
        with contextlib.suppress(psycopg.errors.ObjectInUse):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(str(name))))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def scratch_database(admin_url: str, template: str) -> Iterator[TestDatabase]:
    """A new database copied from `template`, dropped afterwards (named after this process's pid, so a
    concurrent run leaves it alone)."""
    name = f"{TEST_DB_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(role_conninfo(admin_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER crm_owner STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)))
    try:
        yield TestDatabase(
            name=name,
            admin_url=role_conninfo(admin_url, dbname=name),
            app_url=role_conninfo(admin_url, user=APP_ROLE, dbname=name),
            jobs_url=role_conninfo(admin_url, user=JOBS_ROLE, dbname=name),
        )
    finally:
        with psycopg.connect(role_conninfo(admin_url, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_db(pg_admin_url: str, template_db: str) -> Iterator[TestDatabase]:
    """A new database copied from the template, dropped after the test."""
    with scratch_database(pg_admin_url, template_db) as db:
        yield db


@pytest.fixture
def jobs_db(fresh_db: TestDatabase) -> Iterator[Database]:
    """The jobs role's pool on this test's database (not installed process-wide), closed after."""
    db = Database(fresh_db.jobs_url, size=4, timeout=10.0, name="jobs")
    yield db
    db.close()


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


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Root logging configured by configure_logging into a buffer; restored afterwards."""
    from chalicelib.observability import JsonFormatter, configure_logging

    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    configure_logging("DEBUG", stream=buffer)
    yield buffer
    for handler in list(root.handlers):
        if isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)
    root.setLevel(level)


class RecordingTrigger:
    """The outgoing-webhook trigger of the tests: records which workspaces were woken, delivers nothing
    (tests that deliver call chalicelib.outgoing.delivery themselves)."""

    def __init__(self) -> None:
        self.woken: list[tuple[uuid.UUID, int]] = []

    def wake(self, tenant_id: uuid.UUID, delay_s: int = 0) -> None:
        self.woken.append((tenant_id, delay_s))


@pytest.fixture(autouse=True)
def webhook_trigger() -> Iterator[RecordingTrigger]:
    """No test starts the local dispatcher thread by accident: requests wake this recorder instead."""
    from chalicelib.outgoing import trigger

    recorder = RecordingTrigger()
    trigger.use_trigger(recorder)
    yield recorder
    trigger.use_trigger(None)
