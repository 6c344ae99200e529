"""Shared plumbing of the separately deployed functions: settings, logging, the jobs pool, exit codes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import IO, Any

from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome, jobs_database
from chalicelib.observability import configure_logging, init_sentry
from chalicelib.settings import get_settings


class EventError(ValueError):
    """The Lambda event does not have the shape the function documents (the message says what is wrong)."""


def init_observability(stream: IO[str] | None = None) -> None:
    """Logging (to `stream`, else stdout) and Sentry as in the API."""
    settings = get_settings()
    configure_logging(settings.log_level, stream=stream)
    init_sentry(settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None, environment=settings.stage)


def start() -> Database:
    """Logging and Sentry as in the API, then the jobs role's pool."""
    init_observability()
    return jobs_database()


def event_object(event: object) -> dict[str, Any]:
    """A direct invocation's event: a JSON object (None, from an empty invoke, is an empty one)."""
    if event is None:
        return {}
    if not isinstance(event, dict):
        raise EventError(f"the event must be a JSON object, not {type(event).__name__}")
    return event


def event_workspace_id(event: object) -> uuid.UUID:
    """The workspace of a direct invocation: {"workspace_id": "<uuid>", ...}."""
    raw = event_object(event).get("workspace_id")
    if raw is None:
        raise EventError('the event needs "workspace_id" (a workspace UUID), e.g. {"workspace_id": "..."}')
    return _uuid(raw, "workspace_id")


def event_workspace_ids(event: object, key: str) -> list[uuid.UUID] | None:
    """An optional list of workspace UUIDs under `key` (None when absent)."""
    raw = event_object(event).get(key)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise EventError(f'"{key}" must be a list of workspace UUIDs')
    return [_uuid(item, key) for item in raw]


def event_flag(event: object, key: str) -> bool:
    """An optional boolean; a string such as "false" is refused (bool("false") would be True)."""
    raw = event_object(event).get(key, False)
    if not isinstance(raw, bool):
        raise EventError(f'"{key}" must be true or false (a JSON boolean)')
    return raw


def event_text(event: object, key: str) -> str | None:
    """An optional string."""
    raw = event_object(event).get(key)
    if raw is not None and not isinstance(raw, str):
        raise EventError(f'"{key}" must be a string')
    return raw


def event_strings(event: object, key: str) -> list[str]:
    """An optional list of strings (empty when absent)."""
    raw = event_object(event).get(key)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise EventError(f'"{key}" must be a list of strings')
    return raw


def _uuid(raw: object, key: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise EventError(f'"{key}" must be a workspace UUID') from None


def event_time(event: object) -> datetime:
    """The scheduled time of an EventBridge (Scheduler) event: its `time`, else now.

    The Scheduler target's input is {"source": "scheduler", "time": "<aws.scheduler.scheduled-time>"},
    e.g. "2026-12-06T02:00:00Z"; a classic EventBridge rule's event has the same `time` field.
    """
    raw = event_object(event).get("time")
    if raw is None:
        return datetime.now(UTC)
    if not isinstance(raw, str):
        raise EventError('"time" must be an ISO 8601 time such as "2026-12-06T02:00:00Z"')
    try:
        return parse_time(raw)
    except ValueError:
        raise EventError('"time" must be an ISO 8601 time such as "2026-12-06T02:00:00Z"') from None


def parse_time(value: str) -> datetime:
    """An ISO 8601 time for `--now`; a time without an offset is UTC (never the machine's zone)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def claimed_result(outcome: Outcome | None) -> dict[str, Any]:
    """A claimed scheduled run's Lambda result (claimed False: another invocation had the slot)."""
    if outcome is None:
        return {"claimed": False}
    return {"claimed": True, "counts": outcome.counts, "failed": outcome.failed}
