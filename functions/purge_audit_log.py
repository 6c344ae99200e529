"""Scheduled daily: delete audit entries older than AUDIT_RETENTION_DAYS (365), in small batches.

Covers every workspace's audit_log (through the jobs role under RLS, workspace by workspace), the
entries of hard-deleted workspaces (their tombstone goes with the last entry) and the global
account_audit_log. `python -m functions.purge_audit_log [--now ISO]` runs it by hand; a second
invocation for the same scheduled time does nothing.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome
from chalicelib.jobs.purge import AUDIT_JOB, purge_audit_log, run_claimed
from functions.cli import claimed_main
from functions.common import claimed_result, event_time, start

NAME = AUDIT_JOB


def run(db: Database, now: datetime) -> Outcome | None:
    """The purge for the slot `now` (None when another invocation already has it)."""
    return run_claimed(db, NAME, now, lambda: purge_audit_log(db, now))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (EventBridge schedule): the event's `time` is the slot."""
    return claimed_result(run(start(), event_time(event)))


def main(argv: list[str] | None = None) -> int:
    """Command line: exit code 1 when a workspace or a table failed."""
    return claimed_main("python -m functions.purge_audit_log", __doc__, run, argv, reads=("AUDIT_RETENTION_DAYS",))


if __name__ == "__main__":
    sys.exit(main())
