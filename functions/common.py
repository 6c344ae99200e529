"""Shared plumbing of the separately deployed functions: settings, logging, the jobs pool, exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome, jobs_database
from chalicelib.observability import configure_logging, init_sentry
from chalicelib.settings import get_settings


def start() -> Database:
    """Logging and Sentry as in the API, then the jobs role's pool."""
    settings = get_settings()
    configure_logging(settings.log_level)
    init_sentry(settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None, environment=settings.stage)
    return jobs_database()


def event_time(event: dict[str, Any] | None) -> datetime:
    """The scheduled time of an EventBridge event (its `time`), else now."""
    raw = (event or {}).get("time")
    if isinstance(raw, str):
        return parse_time(raw)
    return datetime.now(UTC)


def parse_time(value: str) -> datetime:
    """An ISO 8601 time for `--now`; a time without an offset is UTC (never the machine's zone)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def progress_printer(total: int | None = None) -> Any:
    """A progress callback writing one updating line to stderr when it is a terminal (else silent)."""
    if not sys.stderr.isatty():
        return None

    def show(label: str, done: int) -> None:
        suffix = f"/{total}" if total else ""
        sys.stderr.write(f"\r{label}: {done}{suffix}   ")
        sys.stderr.flush()

    return show


def claimed_result(outcome: Outcome | None) -> dict[str, Any]:
    """A claimed scheduled run's Lambda result (claimed False: another invocation had the slot)."""
    if outcome is None:
        return {"claimed": False}
    return {"claimed": True, "counts": outcome.counts, "failed": outcome.failed}


def claimed_main(prog: str, doc: str | None, run: Callable[[Database, datetime], Outcome | None],
                 argv: list[str] | None) -> int:
    """The command line of a claimed scheduled job: `--now`; exit code 1 when a workspace failed."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--now", type=parse_time, default=None, help="pretend it is this time (UTC)")
    args = parser.parse_args(argv)
    outcome = run(start(), args.now or event_time(None))
    if outcome is None:
        print("already run for this time")
        return 0
    print(outcome.counts, "failed:", len(outcome.failed))
    return 1 if outcome.failed else 0
