"""Shared plumbing of the separately deployed functions: settings, logging, the jobs pool, exit codes."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from chalicelib.db.pool import Database
from chalicelib.jobs.common import jobs_database
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
