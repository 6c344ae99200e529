"""Scheduled daily: an encrypted backup of every live workspace, then GFS retention (30 daily / 12 weekly / 6 monthly).

    python -m functions.backup_tenants [--dry-run] [--now ISO]

A run is claimed in job_runs for its scheduled time, so a second invocation for the same slot (an
EventBridge retry, two schedulers) does nothing. Workspace by workspace: one failure is logged and the
rest continue; the exit code is 1 when any failed. Soft-deleted workspaces are not backed up (their hard
deletion, within the grace period, destroys their backups). `--dry-run` lists what retention would
expire and backs nothing up. Logs carry counts, never contents.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.blobs import BlobStore, get_blobs
from chalicelib.db.pool import Database
from chalicelib.jobs.backup import apply_retention, backup_workspace
from chalicelib.jobs.common import claim, each_workspace, finish, live_workspaces, log_finished
from chalicelib.jobs.gfs import utc
from chalicelib.jobs.progress import Progress
from chalicelib.settings import get_settings
from chalicelib.vault.envelope import Vault
from functions import cli
from functions.bars import progress_bars
from functions.common import event_flag, event_time, start

NAME = "backup_tenants"


@dataclass
class BackupRun:
    """What one invocation did: claimed or not, counts, failed workspace ids, keys (to be) expired."""

    claimed: bool
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


def run(db: Database, now: datetime, *, blobs: BlobStore, vault: Vault, dry_run: bool = False,
        progress: Progress | None = None) -> BackupRun:
    """Back up every live workspace and apply retention (dry_run: only list what would expire)."""
    now = utc(now)
    # A dry run writes nothing, so it needs no claim (and must not use up the slot's).
    if not dry_run and not claim(db, NAME, now):
        return BackupRun(claimed=False)
    live = live_workspaces(db)
    expired: list[str] = []
    position = iter(range(1, len(live) + 1))

    def work(tenant: uuid.UUID) -> dict[str, int]:
        label = f"backup {next(position)}/{len(live)}"
        if dry_run:
            keys = apply_retention(db, tenant, blobs, now, dry_run=True)
            expired.extend(keys)
            return {"workspaces": 1, "would_expire": len(keys)}
        info = backup_workspace(db, tenant, blobs, vault, now, progress=progress, label=label)
        keys = apply_retention(db, tenant, blobs, now)
        expired.extend(keys)
        return {"workspaces": 1, "backups": 1, "rows": info.row_count, "bytes": info.size_bytes, "expired": len(keys)}

    outcome = each_workspace(NAME, live, work)
    if not dry_run:
        finish(db, NAME, now, {**outcome.counts, "failed": len(outcome.failed)})
    log_finished(NAME, outcome)
    return BackupRun(True, outcome.counts, outcome.failed, sorted(expired))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (EventBridge schedule): the event's time names the slot."""
    now, dry_run = event_time(event), event_flag(event, "dry_run")
    db = start()
    result = run(db, now, blobs=get_blobs(), vault=Vault.from_settings(get_settings()), dry_run=dry_run)
    return {"claimed": result.claimed, "counts": result.counts, "failed": result.failed}


def main(argv: list[str] | None = None) -> int:
    """Command line: the run's JSON summary on stdout; exit code 1 when a workspace failed."""
    parser = cli.parser("python -m functions.backup_tenants", __doc__, reads=(*cli.BLOB_SETTINGS, *cli.KEY_SETTINGS))
    parser.add_argument("--dry-run", action="store_true", help="list what retention would expire; back nothing up")
    cli.add_now_option(parser)
    args = parser.parse_args(argv)
    return cli.run_command(lambda db: _backup(db, args))


def _backup(db: Database, args: argparse.Namespace) -> int:
    with progress_bars() as progress:
        result = run(db, args.now or event_time(None), blobs=get_blobs(), vault=Vault.from_settings(get_settings()),
                     dry_run=args.dry_run, progress=progress)
    if not result.claimed:
        print("another run already has this slot; nothing done", file=sys.stderr)
        print(json.dumps({"claimed": False}))
        return 0
    print(json.dumps({"claimed": True, "counts": result.counts, "failed": result.failed,
                      "would_expire" if args.dry_run else "expired": result.expired}))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
