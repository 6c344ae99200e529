"""What the staff commands share: their --help, settings checked up front, logs on stderr, the jobs database.

A settings problem (a missing, malformed or unreachable connection string, an invalid variable) is one
line on stderr naming the variable, and exit code 2: never a traceback, never the value. Locally
(STAGE=local, no DATABASE_URL) without JOBS_DATABASE_URL, a command uses the embedded database's jobs
role by itself, as `make migrate` does: it attaches to the server `make run` left running, or starts it
and stops it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from chalicelib.db.pool import Database, get_database, use_database
from chalicelib.errors import DatabaseUnavailable
from chalicelib.jobs.common import Outcome
from chalicelib.logsafe import scrub_exception
from chalicelib.settings import Settings, SettingsError, get_settings
from functions.common import claimed_result, init_observability, parse_time

# Read by every command: which database, where local state lives, logging and error reporting.
COMMON_SETTINGS = ("STAGE", "DATA_DIR", "DATABASE_URL", "JOBS_DATABASE_URL", "DB_IAM_AUTH", "DB_POOL_SIZE",
                   "DB_POOL_TIMEOUT", "DB_PREPARE_THRESHOLD", "LOG_LEVEL", "SENTRY_DSN")
BLOB_SETTINGS = ("BLOB_BACKEND", "BLOB_BUCKET")
KEY_SETTINGS = ("MASTER_KEY_SOURCE", "KMS_KEY_ARN")
EXIT_SETTINGS = 2


class SettingProblem(Exception):
    """A setting is missing or unusable; the message names the variable, never its value."""


def parser(prog: str, doc: str | None, *, reads: Sequence[str] = ()) -> argparse.ArgumentParser:
    """An argument parser whose --help ends with the settings (environment variables) the command reads."""
    epilog = (settings_epilog((*COMMON_SETTINGS, *reads)) + "\n"
              "Locally (STAGE=local, DATABASE_URL unset) JOBS_DATABASE_URL may stay unset: the command then uses\n"
              "the embedded database under DATA_DIR, starting it (and stopping it after) when `make run` is not up.")
    return argparse.ArgumentParser(prog=prog, description=doc, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def settings_epilog(names: Sequence[str]) -> str:
    """The --help line naming the settings a command reads."""
    return textwrap.fill(f"settings read from the environment: {', '.join(dict.fromkeys(names))}.", width=100)


def add_now_option(parser: argparse.ArgumentParser) -> None:
    """`--now ISO`: run for this time instead of now (a time without an offset is UTC)."""
    parser.add_argument("--now", type=parse_time, default=None, metavar="ISO",
                        help="pretend it is this time (ISO 8601; UTC when it has no offset)")


def claimed_main(prog: str, doc: str | None, run: Callable[[Database, datetime], Outcome | None],
                 argv: Sequence[str] | None, *, reads: Sequence[str] = ()) -> int:
    """The command line of a claimed scheduled job: prints its JSON result; exit code 1 when a part failed."""
    command = parser(prog, doc, reads=reads)
    add_now_option(command)
    args = command.parse_args(argv)

    def body(db: Database) -> int:
        outcome = run(db, args.now or datetime.now(UTC))
        print(json.dumps(claimed_result(outcome)))
        return 1 if outcome is not None and outcome.failed else 0

    return run_command(body)


def run_command(body: Callable[[Database], int]) -> int:
    """Run a command's body with the jobs role's database; a settings problem is one line and exit code 2."""
    try:
        # stdout carries the command's result only (a JSON summary), so a pipe or a file gets just that.
        init_observability(stream=sys.stderr)
        with jobs_database(get_settings()) as db:
            return body(db)
    except (SettingsError, SettingProblem) as exc:
        print(exc, file=sys.stderr)
        return EXIT_SETTINGS


@contextlib.contextmanager
def jobs_database(settings: Settings) -> Iterator[Database]:
    """The jobs role's database: JOBS_DATABASE_URL, or locally the embedded server's (started if need be)."""
    if settings.jobs_database_url is not None:
        yield _probed("JOBS_DATABASE_URL", lambda: get_database("jobs"))
        return
    if not settings.uses_embedded_db:
        raise SettingProblem("JOBS_DATABASE_URL is not set: the commands need the jobs role's (crm_jobs)"
                             " connection string whenever DATABASE_URL is set")
    with _embedded_jobs_database(settings) as db:
        yield db


@contextlib.contextmanager
def _embedded_jobs_database(settings: Settings) -> Iterator[Database]:
    from chalicelib.db.embedded import prepare_database  # only here: a Lambda never starts a local server

    try:
        local = prepare_database(settings)
    except Exception as exc:  # noqa: BLE001 - reported as the one line saying which setting to look at
        reason = " ".join(scrub_exception(exc).split())  # one line, whatever the server printed
        raise SettingProblem(f"DATA_DIR: the embedded database under {settings.postgres_dir} did not start"
                             f" ({reason}); or set JOBS_DATABASE_URL") from None
    try:
        if not local.jobs_url:
            raise SettingProblem("JOBS_DATABASE_URL: the embedded database has no jobs role")
        jobs_url = local.jobs_url
        db = _probed(f"DATA_DIR: the embedded database under {settings.postgres_dir}",
                     lambda: Database(jobs_url, timeout=settings.db_pool_timeout, name="jobs"))
        # Installed process-wide, so that code asking for the jobs pool by name gets this one too.
        use_database(db, "jobs")
        try:
            yield db
        finally:
            use_database(None, "jobs")
    finally:
        local.stop()  # only if this process started it: a running `make run` keeps its server


def _probed(source: str, make: Callable[[], Database]) -> Database:
    """The database `make` builds, after one connection: a malformed or unreachable URL is a settings problem
    reported up front, not a traceback in the middle of a job."""
    import psycopg

    db: Database | None = None
    try:
        db = make()
        db.ping()  # opened in this thread: a refusal raises here, with no background retries to log
    except (psycopg.Error, DatabaseUnavailable) as exc:
        if db is not None:
            db.close()
        # The type only: libpq's messages quote the connection string (host, user, even a password).
        raise SettingProblem(f"{source}: cannot connect as the jobs role ({type(exc).__name__})") from None
    return db
