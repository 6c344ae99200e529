"""Scheduled daily: delete audit entries older than AUDIT_RETENTION_DAYS (365), in small batches.

Covers every workspace's audit_log (through the jobs role under RLS, workspace by workspace), the
entries of hard-deleted workspaces (their tombstone goes with the last entry) and the global
account_audit_log. `python -m functions.purge_audit_log [--now ISO]` runs it by hand; a second
invocation for the same scheduled time does nothing.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome
from chalicelib.jobs.purge import AUDIT_JOB, purge_audit_log, run_claimed
from functions.common import event_time, parse_time, start

NAME = AUDIT_JOB


def run(db: Database, now: datetime) -> Outcome | None:
    """The purge for the slot `now` (None when another invocation already has it)."""
    return run_claimed(db, NAME, now, lambda: purge_audit_log(db, now))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (EventBridge schedule): the event's `time` is the slot."""
    outcome = run(start(), event_time(event))
    if outcome is None:
        return {"claimed": False}
    return {"claimed": True, "counts": outcome.counts, "failed": outcome.failed}


def main(argv: list[str] | None = None) -> int:
    """Command line: exit code 1 when a workspace (or the account log) failed."""
    parser = argparse.ArgumentParser(prog="python -m functions.purge_audit_log", description=__doc__)
    parser.add_argument("--now", type=parse_time, default=None, help="pretend it is this time (UTC)")
    args = parser.parse_args(argv)
    outcome = run(start(), args.now or event_time(None))
    if outcome is None:
        print("already run for this time")
        return 0
    print(outcome.counts, "failed:", len(outcome.failed))
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
