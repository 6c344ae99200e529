"""Scheduled daily: hard-delete workspaces soft-deleted longer than WORKSPACE_PURGE_GRACE_DAYS (< 7).

Through the same code as delete_tenant, so a deleted workspace is gone from the active database within
7 days. `python -m functions.purge_workspaces [--now ISO]` runs it by hand.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import Any

from chalicelib.blobs import get_blobs
from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome, each_workspace, log_finished, workspaces
from chalicelib.jobs.delete import delete_workspace
from chalicelib.settings import get_settings
from functions import cli
from functions.common import event_time, start

NAME = "purge_workspaces"


def run(db: Database, now: datetime) -> Outcome:
    """Delete every workspace whose soft deletion is older than the grace period."""
    cutoff = now - timedelta(days=get_settings().workspace_purge_grace_days)
    due = [w.id for w in workspaces(db) if w.deleted_at is not None and w.deleted_at <= cutoff]
    blobs = get_blobs()

    def purge(tenant: Any) -> dict[str, int]:
        receipt = delete_workspace(db, tenant, blobs)
        return {"workspaces": int(receipt.found), "rows": sum(receipt.rows.values()), "blobs": receipt.blobs}

    outcome = each_workspace(NAME, due, purge)
    log_finished(NAME, outcome)
    return outcome


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (EventBridge schedule)."""
    outcome = run(start(), event_time(event))
    return {"counts": outcome.counts, "failed": outcome.failed}


def main(argv: list[str] | None = None) -> int:
    """Command line: the run's JSON result on stdout; exit code 1 when a workspace failed."""
    parser = cli.parser("python -m functions.purge_workspaces", __doc__,
                        reads=("WORKSPACE_PURGE_GRACE_DAYS", *cli.BLOB_SETTINGS))
    cli.add_now_option(parser)
    args = parser.parse_args(argv)

    def body(db: Database) -> int:
        outcome = run(db, args.now or event_time(None))
        print(json.dumps({"counts": outcome.counts, "failed": outcome.failed}))
        return 1 if outcome.failed else 0

    return cli.run_command(body)


if __name__ == "__main__":
    sys.exit(main())
