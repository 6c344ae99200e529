"""Hard-delete one workspace now (privacy staff: `python -m functions.delete_tenant ID --yes`).

Every tenant row, its blobs, backups (their key is destroyed with the rows: crypto-shredding) and
credentials go; audit entries keep only event, actor id, IP and time until their own purge. Prints a
receipt. Idempotent: a second run succeeds and deletes nothing.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from chalicelib.blobs import get_blobs
from chalicelib.db.pool import Database
from chalicelib.jobs.delete import delete_workspace
from functions import cli
from functions.bars import progress_bars
from functions.common import EventError, event_text, event_workspace_id, start


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (direct invoke): {"workspace_id": ..., "confirm": <the same id>} -> the receipt."""
    tenant = event_workspace_id(event)
    # The command line's --yes: an invoke that only names a workspace (a copied payload, a replayed test
    # event) deletes nothing; the staff member types the id twice.
    if event_text(event, "confirm") != str(tenant):
        raise EventError('deleting needs "confirm": the same workspace id as "workspace_id"')
    return delete_workspace(start(), tenant, get_blobs()).as_dict()


def main(argv: list[str] | None = None) -> int:
    """Command line for privacy staff: the receipt (JSON) on stdout."""
    parser = cli.parser("python -m functions.delete_tenant", __doc__, reads=cli.BLOB_SETTINGS)
    parser.add_argument("workspace_id", type=uuid.UUID)
    parser.add_argument("--yes", action="store_true", help="really delete (nothing happens without it)")
    args = parser.parse_args(argv)
    if not args.yes:
        print("refusing to delete without --yes", file=sys.stderr)
        return 2
    return cli.run_command(lambda db: _delete(db, args.workspace_id))


def _delete(db: Database, tenant: uuid.UUID) -> int:
    with progress_bars() as progress:
        receipt = delete_workspace(db, tenant, get_blobs(), progress=progress)
    print(json.dumps(receipt.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
