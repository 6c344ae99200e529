"""Export one workspace as one JSON file (privacy staff: `python -m functions.export_tenant ID --out PATH`).

As a Lambda (`handler`), the file goes to the blob store under exports/<workspace>/ and the key is
returned. Rows are read through the jobs role under the workspace's RLS context.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.blobs import S3Blobs, get_blobs
from chalicelib.db.pool import Database
from chalicelib.jobs.export import WorkspaceNotFound, export_workspace
from chalicelib.observability import log_event
from functions import cli
from functions.bars import progress_bars
from functions.common import event_flag, event_workspace_id, start

log = logging.getLogger("crm.jobs.export")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (direct invoke): {"workspace_id": ..., "with_blobs": bool?} -> {"key", "rows"} (+ "url" and
    "expires_at", a presigned GET of the file, when blobs are in S3)."""
    tenant, with_blobs = event_workspace_id(event), event_flag(event, "with_blobs")
    db = start()
    blobs = get_blobs()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    key = f"exports/{tenant}/{stamp}.json"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.json"
        manifest = export_workspace(db, tenant, path, blobs=blobs if with_blobs else None)
        blobs.put_file(key, path)
    log_event(log, "export written", workspace_id=str(tenant), count=manifest.total_rows)
    result: dict[str, Any] = {"key": key, "rows": manifest.total_rows}
    if isinstance(blobs, S3Blobs):
        # Staff fetch the file with a short-lived link instead of needing read access to the bucket.
        link = blobs.export_url(key, tenant_id=tenant)
        result |= {"url": link.url, "expires_at": link.expires_at.isoformat()}
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line for privacy staff: the export file, then its JSON summary on stdout."""
    parser = cli.parser("python -m functions.export_tenant", __doc__, reads=cli.BLOB_SETTINGS)
    parser.add_argument("workspace_id", type=uuid.UUID)
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON file")
    parser.add_argument("--with-blobs", action="store_true", help="include attachment bytes (base64)")
    args = parser.parse_args(argv)
    return cli.run_command(lambda db: _export(db, args))


def _export(db: Database, args: argparse.Namespace) -> int:
    try:
        with progress_bars() as progress:
            manifest = export_workspace(db, args.workspace_id, args.out,
                                        blobs=get_blobs() if args.with_blobs else None, progress=progress)
    except WorkspaceNotFound:
        print(f"no workspace {args.workspace_id}", file=sys.stderr)
        return 1
    log_event(log, "export written", workspace_id=str(args.workspace_id), count=manifest.total_rows)
    print(json.dumps({"out": str(args.out), "rows": manifest.total_rows, "tables": manifest.exported,
                      "excluded": {k: v["excluded"] for k, v in manifest.tables.items() if "excluded" in v},
                      "blobs_included": manifest.blobs["included"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
