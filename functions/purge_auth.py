"""Scheduled hourly: delete spent sign-in state and old idempotency keys, in small batches.

Used or expired magic-link tokens and codes, revoked, expired or idle sessions (a few minutes after
they stop working), rate-limit windows older than a day, and every workspace's Idempotency-Key rows
older than 24 hours. `python -m functions.purge_auth [--now ISO]` runs it by hand; a second
invocation for the same scheduled time does nothing.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome
from chalicelib.jobs.purge import AUTH_JOB, purge_auth, run_claimed
from functions.cli import claimed_main
from functions.common import claimed_result, event_time, start

NAME = AUTH_JOB


def run(db: Database, now: datetime) -> Outcome | None:
    """The purge for the slot `now` (None when another invocation already has it)."""
    return run_claimed(db, NAME, now, lambda: purge_auth(db, now))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (EventBridge schedule): the event's `time` is the slot."""
    return claimed_result(run(start(), event_time(event)))


def main(argv: list[str] | None = None) -> int:
    """Command line: exit code 1 when a workspace or a table failed."""
    return claimed_main("python -m functions.purge_auth", __doc__, run, argv, reads=("SESSION_IDLE_TIMEOUT_S",))


if __name__ == "__main__":
    sys.exit(main())
