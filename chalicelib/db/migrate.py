"""Plain SQL migrations: applied in order, each in one transaction, as the owner role, under a lock."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.db.iam import with_default_sslrootcert

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
OWNER_ROLE = "crm_owner"
APP_ROLE = "crm_app"
JOBS_ROLE = "crm_jobs"
# Server-side bounds of each runtime role, set on the role so they hold however it connects (RDS Proxy
# passes no startup options). The API's are short: statement_timeout stays under the request deadline
# (DB_REQUEST_DEADLINE_S, 20 s), so a slow statement is stopped by the server and the connection kept;
# a Lambda frozen or killed inside a transaction releases its locks after 30 s. The jobs work in bulk
# (purges, backups) and get longer ones; a job that needs more lifts them for its own transaction
# (jobs.common.allow_long_statements).
ROLE_TIMEOUTS: dict[str, dict[str, str]] = {
    APP_ROLE: {"statement_timeout": "15s", "lock_timeout": "5s", "idle_in_transaction_session_timeout": "30s"},
    JOBS_ROLE: {"statement_timeout": "5min", "lock_timeout": "30s", "idle_in_transaction_session_timeout": "5min"},
}
# Arbitrary constants naming our advisory locks (pg_advisory_lock takes a bigint).
_MIGRATION_LOCK = 7_301_552_001
_BOOTSTRAP_LOCK = 7_301_552_002

log = logging.getLogger("crm.migrate")


class MigrationError(RuntimeError):
    """A migration file is missing, changed after it was applied, or failed."""


@dataclass(frozen=True)
class Migration:
    """One NNNN_name.sql file."""

    version: str
    name: str
    sql_text: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, recorded so an applied migration cannot be edited silently."""
        return hashlib.sha256(self.sql_text.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file, ordered by its four-digit version."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not (version.isdigit() and len(version) == 4 and name):
            raise MigrationError(f"migration file name must be NNNN_name.sql: {path.name}")
        found.append(Migration(version, name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version")
    return found


def role_conninfo(conninfo: str, *, user: str | None = None, dbname: str | None = None) -> str:
    """The same server as `conninfo`, as another user and/or database."""
    params: dict[str, str] = {}
    if user is not None:
        params["user"] = user
    if dbname is not None:
        params["dbname"] = dbname
    return make_conninfo(conninfo, **params)


Cursor = psycopg.Cursor[tuple[object, ...]]


def _create_role(cur: Cursor, name: str, options: str, password: str | None) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(name)))
    if password is not None:
        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))


def _ensure_roles(cur: Cursor, password: str | None) -> None:
    _create_role(cur, OWNER_ROLE, "NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE", None)
    # The API role: may log in and run DML, nothing else. RLS applies to it because it is
    # neither superuser nor BYPASSRLS and owns no table.
    runtime = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION"
    for role in (APP_ROLE, JOBS_ROLE):
        _create_role(cur, role, runtime, password)
        # Runaway statements and abandoned transactions die on the server, not in app code.
        for setting, value in ROLE_TIMEOUTS[role].items():
            cur.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(
                sql.Identifier(role), sql.Identifier(setting), sql.Literal(value)))
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam'")
    if cur.fetchone() is not None:
        # RDS/Aurora: a member of rds_iam signs in with IAM tokens only (its password, if any, stops
        # working), so the runtime roles have no password that could leak or need rotating.
        for role in (APP_ROLE, JOBS_ROLE):
            cur.execute(sql.SQL("GRANT rds_iam TO {}").format(sql.Identifier(role)))


def _let_admin_set_owner_role(cur: Cursor) -> None:
    """Let the connected admin `SET ROLE crm_owner` (migrations run as the owner)."""
    cur.execute("SELECT rolsuper, current_setting('server_version_num')::int FROM pg_roles"
                " WHERE rolname = current_user")
    row = cur.fetchone()
    assert row is not None
    superuser, version = row
    if superuser:
        return
    # Aurora's master user is not a superuser. On PostgreSQL 16+ the creator of a role gets ADMIN OPTION
    # on it but not SET, so it could not become the owner; SET only, no INHERIT: the admin acts as the
    # owner when it says so, its own sessions do not silently carry the owner's privileges.
    options = " WITH SET TRUE, INHERIT FALSE" if int(str(version)) >= 160000 else ""
    cur.execute(sql.SQL("GRANT {} TO CURRENT_USER" + options).format(sql.Identifier(OWNER_ROLE)))


def _ensure_database(cur: Cursor, dbname: str) -> None:
    cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dbname,))
    row = cur.fetchone()
    if row is None:
        cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(OWNER_ROLE)))
    elif row[0] != OWNER_ROLE:
        # Aurora creates its default database owned by the master user. The owner role must own it: the
        # public schema belongs to the database owner, and crm_owner creates the tables in it.
        cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(dbname), sql.Identifier(OWNER_ROLE)))


def bootstrap(admin_conninfo: str, dbname: str, *, share_admin_password: bool = True) -> None:
    """Create the three roles and the database if missing, and let the admin act as the owner role.

    Locally and in tests the admin is a superuser and, with share_admin_password, the runtime roles get
    its password, so role URLs derived from the admin URL work. On Aurora (functions/migrate.py) the
    admin is the cluster's master user, which is NOT a superuser, and the runtime roles get no password.
    Idempotent.
    """
    admin_conninfo = with_default_sslrootcert(admin_conninfo)
    password = conninfo_to_dict(admin_conninfo).get("password") if share_admin_password else None
    with psycopg.connect(role_conninfo(admin_conninfo, dbname="postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_BOOTSTRAP_LOCK,))
        try:
            cur = conn.cursor()
            _ensure_roles(cur, str(password) if password else None)
            _let_admin_set_owner_role(cur)
            _ensure_database(cur, dbname)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_BOOTSTRAP_LOCK,))
    with psycopg.connect(role_conninfo(admin_conninfo, dbname=dbname), autocommit=True) as conn:
        # As the owner: only a database's owner may revoke what PUBLIC was granted on it.
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(OWNER_ROLE)))
        # No temporary tables for anyone by default (they pin proxies and dodge RLS reviews).
        conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))


def migrate(conninfo: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations as the owner role; returns the versions applied now."""
    pending_all = load_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    with psycopg.connect(with_default_sslrootcert(conninfo), autocommit=True) as conn:
        # A session lock on this dedicated connection: a second runner waits, then finds nothing to do.
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(OWNER_ROLE)))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
                " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done: dict[object, object] = dict(
                conn.execute("SELECT version, checksum FROM public.schema_migrations").fetchall())
            for migration in pending_all:
                recorded = done.get(migration.version)
                if recorded is not None:
                    if recorded != migration.checksum:
                        raise MigrationError(f"migration {migration.version} changed after it was applied")
                    continue
                with conn.transaction():
                    # No parameters: psycopg sends the file as one simple query (many statements).
                    conn.execute(migration.sql_text.encode())
                    conn.execute(
                        "INSERT INTO public.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("migration applied", extra={"fields": {"version": migration.version}})
                applied_now.append(migration.version)
        finally:
            conn.execute("RESET ROLE")
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now
