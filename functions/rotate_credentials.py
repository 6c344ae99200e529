"""Re-encrypt every stored integration credential under the CURRENT master key (e.g. after moving KMS keys).

    python -m functions.rotate_credentials [--dry-run] [--tenant ID ...]
        [--previous-kms-key-arn ARN ...] [--previous-key-file PATH ...]

Which tenants: the jobs role lists workspace ids through the `jobs_list_tenants` policy of migration 0002
(SELECT on workspaces for crm_jobs only; the API role never gets it, and the catalog guard pins it as a
jobs-only policy). Everything else runs per tenant inside `tenant_tx(tenant, db=<jobs pool>)`, so the
credential rows are read and written under the same RLS policies as the API's and a bug here cannot
touch tenant B while working on tenant A. No BYPASSRLS role, no SECURITY DEFINER function, no owner
connection: nothing new to grant. `--tenant` (or `{"tenant_ids": [...]}` in the event) narrows the run.

Which keys: new ciphertexts go under the current key (KMS_KEY_ARN, or $DATA_DIR/master.key locally); the
old ones are read with the current key or one of the previous keys given here (strict: no other key is
ever tried). Locally, to move to a fresh key: rename master.key to master.key.old, run anything (a new
key is created), then run this with `--previous-key-file .data/master.key.old`.

Idempotent and safe to run twice at once: rows already under the current key id are skipped, and rows
are locked (FOR UPDATE) while they are re-encrypted. One tenant's failure does not stop the rest. The
log line (logger crm.jobs.rotate) carries counts only, never contents.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.vault.envelope import Vault
from chalicelib.vault.store import rotate_tenant, workspace_ids_after
from functions import cli
from functions.common import event_flag, event_strings, event_workspace_ids, start

log = logging.getLogger("crm.jobs.rotate")
_PAGE = 1000


@dataclass
class RotationResult:
    """Totals of one run."""

    tenants: int = 0
    rotated: int = 0
    skipped: int = 0
    failed: int = 0
    failed_tenants: int = 0


def all_tenant_ids(db: Database) -> list[uuid.UUID]:
    """Every workspace id, read as the jobs role without a tenant (keyset pages, short statements)."""
    found: list[uuid.UUID] = []
    after = uuid.UUID(int=0)
    with db.pool.connection() as conn:
        while True:
            page = workspace_ids_after(conn, after=after, limit=_PAGE)
            found += page
            if len(page) < _PAGE:
                return found
            after = found[-1]


def rotate(*, db: Database, vault: Vault, tenant_ids: Sequence[uuid.UUID | str] | None = None,
           dry_run: bool = False, progress: IO[str] | None = None) -> RotationResult:
    """Re-encrypt the credentials of every tenant (or of `tenant_ids`), tenant by tenant."""
    tenants = [uuid.UUID(str(t)) for t in tenant_ids] if tenant_ids is not None else all_tenant_ids(db)
    result = RotationResult(tenants=len(tenants))
    show = progress is not None and progress.isatty()
    for n, tenant in enumerate(tenants, 1):
        try:
            with tenant_tx(tenant, db=db) as conn:
                counts = rotate_tenant(conn, tenant_id=tenant, vault=vault, dry_run=dry_run)
        except Exception:  # one tenant's failure must not stop the others (logged below)
            result.failed_tenants += 1
            log.exception("credential rotation failed for a tenant", extra={"fields": {"tenant_id": str(tenant)}})
        else:
            result.rotated += counts.rotated
            result.skipped += counts.skipped
            result.failed += counts.failed
        if show and progress is not None:
            progress.write(f"\rrotating credentials: {n}/{len(tenants)} tenants")
            progress.flush()
    if show and progress is not None:
        progress.write("\n")
    log.info("credential rotation finished", extra={"fields": {**asdict(result), "dry_run": dry_run}})
    return result


def _vault(previous_kms_key_arns: Sequence[str], previous_key_files: Sequence[str]) -> Vault:
    from chalicelib.settings import get_settings

    return Vault.from_settings(get_settings(), previous_kms_key_arns=list(previous_kms_key_arns),
                               previous_key_files=[Path(p) for p in previous_key_files])


def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    """Lambda (direct invoke): {"tenant_ids": [...]?, "dry_run": bool?, "previous_kms_key_arns": [...]?}."""
    tenant_ids, dry_run = event_workspace_ids(event, "tenant_ids"), event_flag(event, "dry_run")
    previous = event_strings(event, "previous_kms_key_arns")
    result = rotate(db=start(), vault=_vault(previous, []), tenant_ids=tenant_ids, dry_run=dry_run)
    return asdict(result)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line for privacy staff; exit status 1 when anything failed."""
    parser = cli.parser("python -m functions.rotate_credentials",
                        "Re-encrypt stored integration credentials under the current key.", reads=cli.KEY_SETTINGS)
    parser.add_argument("--dry-run", action="store_true", help="decrypt and count, write nothing")
    parser.add_argument("--tenant", action="append", type=uuid.UUID, metavar="ID",
                        help="only this workspace id (repeatable)")
    parser.add_argument("--previous-kms-key-arn", action="append", default=[], metavar="ARN",
                        help="old KMS key ARN that may still unwrap (repeatable)")
    parser.add_argument("--previous-key-file", action="append", default=[], metavar="PATH",
                        help="old local key file that may still unwrap (repeatable)")
    args = parser.parse_args(argv)

    def body(db: Database) -> int:
        result = rotate(db=db, vault=_vault(args.previous_kms_key_arn, args.previous_key_file), tenant_ids=args.tenant,
                        dry_run=args.dry_run, progress=sys.stderr)
        print(f"tenants {result.tenants}, rotated {result.rotated}, skipped {result.skipped}, failed {result.failed},"
              f" failed tenants {result.failed_tenants}{' (dry run)' if args.dry_run else ''}")
        return 1 if result.failed or result.failed_tenants else 0

    return cli.run_command(body)


if __name__ == "__main__":
    sys.exit(main())
