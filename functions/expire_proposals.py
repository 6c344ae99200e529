"""Scheduled hourly: sent proposals whose `valid_until` has passed become `expired`.

Through the jobs role under RLS, workspace by workspace. `python -m functions.expire_proposals [--now ISO]`
runs it by hand; a second invocation for the same scheduled hour does nothing.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome
from chalicelib.jobs.purge import run_claimed
from chalicelib.proposals.expiry import JOB, expire
from functions.cli import claimed_main
from functions.common import claimed_result, event_time, start

NAME = JOB


def run(db: Database, now: datetime) -> Outcome | None:
    """The expiry for the slot `now` (None when another invocation already has it)."""
    return run_claimed(db, NAME, now, lambda: expire(db, now))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (EventBridge schedule): the event's `time` is the slot."""
    return claimed_result(run(start(), event_time(event)))


def main(argv: list[str] | None = None) -> int:
    """Command line: exit code 1 when a workspace failed."""
    return claimed_main("python -m functions.expire_proposals", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
