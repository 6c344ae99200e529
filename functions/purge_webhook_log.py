"""Scheduled daily: delete outgoing webhooks' delivery log and event payloads older than 30 days.

Every workspace's webhook_attempts (the delivery log) and webhook_messages (the events' data; their
deliveries and remaining attempts go with them), through the jobs role under RLS, workspace by workspace,
in small batches. `python -m functions.purge_webhook_log [--now ISO]` runs it by hand; a second
invocation for the same scheduled time does nothing.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome
from chalicelib.jobs.purge import WEBHOOK_JOB, purge_webhook_log, run_claimed
from functions.cli import claimed_main
from functions.common import claimed_result, event_time, start

NAME = WEBHOOK_JOB


def run(db: Database, now: datetime) -> Outcome | None:
    """The purge for the slot `now` (None when another invocation already has it)."""
    return run_claimed(db, NAME, now, lambda: purge_webhook_log(db, now))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (EventBridge schedule): the event's `time` is the slot."""
    return claimed_result(run(start(), event_time(event)))


def main(argv: list[str] | None = None) -> int:
    """Command line: exit code 1 when a workspace failed."""
    return claimed_main("python -m functions.purge_webhook_log", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
