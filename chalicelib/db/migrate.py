"""Plain SQL migrations: applied in order, each in one transaction, as the owner role, under a lock."""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
OWNER_ROLE = "crm_owner"
APP_ROLE = "crm_app"
JOBS_ROLE = "crm_jobs"
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


def _create_role(cur: psycopg.Cursor[tuple[object, ...]], name: str, options: str,
                 password: str | None) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(name)))
    if password is not None:
        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))


def bootstrap(admin_conninfo: str, dbname: str) -> None:
    """Create the three roles and the database if missing (local and tests; prod has them already)."""
    password = conninfo_to_dict(admin_conninfo).get("password") or None
    with psycopg.connect(role_conninfo(admin_conninfo, dbname="postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_BOOTSTRAP_LOCK,))
        try:
            cur = conn.cursor()
            _create_role(cur, OWNER_ROLE, "NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE", None)
            # The API role: may log in and run DML, nothing else. RLS applies to it because it is
            # neither superuser nor BYPASSRLS and owns no table.
            runtime = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION"
            _create_role(cur, APP_ROLE, runtime, str(password) if password else None)
            _create_role(cur, JOBS_ROLE, runtime, str(password) if password else None)
            for role in (APP_ROLE, JOBS_ROLE):
                # Runaway statements and abandoned transactions die on the server, not in app code.
                for setting, value in (("statement_timeout", "15s"), ("lock_timeout", "5s"),
                                       ("idle_in_transaction_session_timeout", "30s")):
                    cur.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(
                        sql.Identifier(role), sql.Identifier(setting), sql.Literal(value)))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(OWNER_ROLE)))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_BOOTSTRAP_LOCK,))
    with psycopg.connect(role_conninfo(admin_conninfo, dbname=dbname), autocommit=True) as conn:
        # No temporary tables for anyone by default (they pin proxies and dodge RLS reviews).
        conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))


def migrate(conninfo: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations as the owner role; returns the versions applied now."""
    pending_all = load_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
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


def main() -> int:
    """`make migrate`: bring the configured (or embedded) database up to date."""
    from chalicelib.db.embedded import prepare_database
    from chalicelib.observability import configure_logging
    from chalicelib.settings import SettingsError, get_settings

    try:
        settings = get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    local = prepare_database(settings)
    print(f"database is up to date ({len(load_migrations())} migrations)")
    local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
