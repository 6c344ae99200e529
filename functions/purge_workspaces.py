"""Scheduled daily: hard-delete workspaces soft-deleted longer than WORKSPACE_PURGE_GRACE_DAYS (< 7).

Through the same code as delete_tenant, so a deleted workspace is gone from the active database within
7 days. `python -m functions.purge_workspaces [--now ISO]` runs it by hand.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from typing import Any

from chalicelib.blobs import get_blobs
from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome, each_workspace, workspaces
from chalicelib.jobs.delete import delete_workspace
from chalicelib.settings import get_settings
from functions.common import event_time, parse_time, start

NAME = "purge_workspaces"


def run(db: Database, now: datetime) -> Outcome:
    """Delete every workspace whose soft deletion is older than the grace period."""
    cutoff = now - timedelta(days=get_settings().workspace_purge_grace_days)
    due = [w.id for w in workspaces(db) if w.deleted_at is not None and w.deleted_at <= cutoff]
    blobs = get_blobs()

    def purge(tenant: Any) -> dict[str, int]:
        receipt = delete_workspace(db, tenant, blobs)
        return {"workspaces": int(receipt.found), "rows": sum(receipt.rows.values()), "blobs": receipt.blobs}

    return each_workspace(NAME, due, purge)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (EventBridge schedule)."""
    outcome = run(start(), event_time(event))
    return {"counts": outcome.counts, "failed": outcome.failed}


def main(argv: list[str] | None = None) -> int:
    """Command line: exit code 1 when a workspace failed."""
    parser = argparse.ArgumentParser(prog="python -m functions.purge_workspaces", description=__doc__)
    parser.add_argument("--now", type=parse_time, default=None, help="pretend it is this time (UTC)")
    args = parser.parse_args(argv)
    outcome = run(start(), args.now or event_time(None))
    print(outcome.counts, "failed:", len(outcome.failed))
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
