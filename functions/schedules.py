"""Every scheduled function and its schedule, defined once: `make run` and infra/ both read this."""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger("crm.scheduler")


@dataclass(frozen=True)
class Schedule:
    """A function module with `handler(event, context)`, its EventBridge expression and period."""

    name: str
    module: str
    expression: str
    every: timedelta


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("purge_auth", "functions.purge_auth", "rate(1 hour)", timedelta(hours=1)),
    # Sent proposals past valid_until become expired (hourly: a day's end in any time zone is within the hour).
    Schedule("expire_proposals", "functions.expire_proposals", "rate(1 hour)", timedelta(hours=1)),
    # The outgoing-webhook sweep: the safety net behind the SQS wake-ups and the clock of later retries.
    Schedule("deliver_webhooks", "functions.deliver_webhooks", "rate(1 minute)", timedelta(minutes=1)),
    Schedule("backup_tenants", "functions.backup_tenants", "cron(0 2 * * ? *)", timedelta(days=1)),
    Schedule("purge_audit_log", "functions.purge_audit_log", "cron(30 3 * * ? *)", timedelta(days=1)),
    Schedule("purge_webhook_log", "functions.purge_webhook_log", "cron(45 3 * * ? *)", timedelta(days=1)),
    Schedule("purge_workspaces", "functions.purge_workspaces", "cron(0 4 * * ? *)", timedelta(days=1)),
)


def slot(schedule: Schedule, now: datetime) -> datetime:
    """The start of the period `now` falls in (the run's identity for claims)."""
    seconds = int(schedule.every.total_seconds())
    return datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, tz=UTC)


def run_once(schedule: Schedule, when: datetime) -> Any:
    """Invoke a schedule's handler as EventBridge would, for the slot of `when`."""
    handler = importlib.import_module(schedule.module).handler
    return handler({"source": "local-scheduler", "time": slot(schedule, when).isoformat()}, None)


class Scheduler(threading.Thread):
    """`make run`'s stand-in for EventBridge: each schedule once per period, in this process."""

    def __init__(self, schedules: tuple[Schedule, ...] = SCHEDULES, tick_seconds: float = 30.0) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.schedules = schedules
        self.tick_seconds = tick_seconds
        self.stopped = threading.Event()
        self._last: dict[str, datetime] = {}

    def run(self) -> None:
        """Until stopped: run every schedule whose current period has not run yet."""
        while not self.stopped.is_set():
            now = datetime.now(UTC)
            for schedule in self.schedules:
                current = slot(schedule, now)
                if self._last.get(schedule.name) == current:
                    continue
                self._last[schedule.name] = current
                try:
                    run_once(schedule, now)
                except Exception as exc:
                    log.error("scheduled job failed", exc_info=exc, extra={"fields": {"job": schedule.name}})
            self.stopped.wait(self.tick_seconds)
