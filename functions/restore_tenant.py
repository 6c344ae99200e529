"""Restore a workspace from an encrypted backup (privacy staff).

    python -m functions.restore_tenant WORKSPACE_ID [--backup KEY] [--as-new]

Default: the workspace's newest backup, restored in place; refused while the workspace still has rows
(other than its own workspace row). `--as-new` restores beside it under a NEW workspace id (printed):
same rows and ids, except the workspace id; the copy's API keys start revoked and integration
credentials are not copied (they are bound to the original workspace). One transaction: all or nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from chalicelib.blobs import get_blobs
from chalicelib.db.pool import Database
from chalicelib.jobs.backup import BackupError
from chalicelib.jobs.restore import restore_workspace
from chalicelib.settings import get_settings
from chalicelib.vault.envelope import Vault, VaultError
from functions import cli
from functions.bars import progress_bars
from functions.common import event_flag, event_text, event_workspace_id, start


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (direct invoke): {"workspace_id": ..., "backup": key?, "as_new": bool?} -> the receipt."""
    tenant, backup, as_new = event_workspace_id(event), event_text(event, "backup"), event_flag(event, "as_new")
    receipt = restore_workspace(start(), tenant, get_blobs(), Vault.from_settings(get_settings()), backup=backup,
                                as_new=as_new)
    return receipt.as_dict()


def main(argv: list[str] | None = None) -> int:
    """Command line for privacy staff: the receipt (JSON, with the new id for --as-new) on stdout."""
    parser = cli.parser("python -m functions.restore_tenant", __doc__, reads=(*cli.BLOB_SETTINGS, *cli.KEY_SETTINGS))
    parser.add_argument("workspace_id", type=uuid.UUID)
    parser.add_argument("--backup", metavar="KEY", default=None, help="blob key of the backup (default: newest)")
    parser.add_argument("--as-new", action="store_true", help="restore under a new workspace id")
    args = parser.parse_args(argv)
    return cli.run_command(lambda db: _restore(db, args))


def _restore(db: Database, args: argparse.Namespace) -> int:
    try:
        with progress_bars() as progress:
            receipt = restore_workspace(db, args.workspace_id, get_blobs(), Vault.from_settings(get_settings()),
                                        backup=args.backup, as_new=args.as_new, progress=progress)
    except (BackupError, VaultError) as exc:
        print(f"restore refused: {exc}", file=sys.stderr)
        return 1
    if args.as_new:
        print(f"restored as new workspace {receipt.workspace_id}", file=sys.stderr)
    print(json.dumps(receipt.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
