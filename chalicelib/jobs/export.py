"""Export one workspace as one JSON file: every row of every tenant table, read under RLS, streamed.

PostgreSQL builds each row's JSON (row_to_json through COPY), so memory stays flat whatever the size
of the workspace; the file is written beside its destination and renamed into place only when it is
complete, so a crashed export leaves no partial file behind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from psycopg import sql

from chalicelib.blobs import BlobStore
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.jobs.common import EXCLUDED_TABLES, Conn, TenantTable, tenant_tables

FORMAT = "tenant-crm-export"
FORMAT_VERSION = 1
Progress = Callable[[str, int], None]


class WorkspaceNotFound(LookupError):
    """No workspace with this id (as the jobs role sees it)."""


@dataclass
class Manifest:
    """Rows and SHA-256 of each table's rows as written (the JSON text of the rows, comma-joined)."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        """Rows in the whole export."""
        return sum(int(t["rows"]) for t in self.tables.values())


def _copy_rows(conn: Conn, table: TenantTable, tenant_id: uuid.UUID, out: IO[bytes],
               progress: Progress | None) -> dict[str, Any]:
    """Stream one table's rows as JSON objects separated by commas; returns rows and digest."""
    columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    # RLS scopes the read to the tenant; the explicit key filter is a second lock on the same door (the
    # jobs role may list every workspace row). COPY takes no parameters: the id is a quoted literal of
    # a parsed UUID.
    query = sql.SQL("COPY (SELECT row_to_json(x) FROM (SELECT {} FROM {} WHERE {} = {} ORDER BY {}) x) TO STDOUT"
                    ).format(columns, sql.Identifier(table.name), sql.Identifier(table.key),
                             sql.Literal(str(uuid.UUID(str(tenant_id)))),
                             sql.SQL(", ").join(map(sql.Identifier, _order(table))))
    digest, rows, first, pending = hashlib.sha256(), 0, True, b""
    with conn.cursor() as cur, cur.copy(query) as copy:
        for block in copy:
            data = pending + bytes(block)
            cut = data.rfind(b"\n") + 1
            complete, pending = data[:cut], data[cut:]
            if not complete:
                continue
            # COPY's text format escapes only backslashes here: row_to_json leaves no raw control
            # characters (JSON escapes them), so undoing "\\" -> "\" restores each line's JSON exactly.
            lines = complete.replace(b"\\\\", b"\\").split(b"\n")[:-1]
            chunk = b",".join(lines)
            if not first:
                chunk = b"," + chunk
            first = False
            out.write(chunk)
            digest.update(chunk)
            rows += len(lines)
            if progress is not None:
                progress(table.name, rows)
    return {"rows": rows, "sha256": digest.hexdigest()}


def _order(table: TenantTable) -> list[str]:
    return [c for c in (table.key, "id") if c in table.columns] if table.name != "workspaces" else ["id"]


def export_workspace(db: Database, tenant_id: uuid.UUID, destination: Path, *, blobs: BlobStore | None = None,
                     progress: Progress | None = None) -> Manifest:
    """Write the workspace's export to `destination` atomically; returns the manifest."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    manifest = Manifest()
    try:
        with open(temporary, "wb") as out, tenant_tx(tenant_id, db=db, pipeline=False) as conn:
            workspace = conn.execute("SELECT row_to_json(w)::text FROM (SELECT id, name, created_at, deleted_at"
                                     " FROM workspaces WHERE id = %s) w", (tenant_id,)).fetchone()
            if workspace is None:
                raise WorkspaceNotFound(str(tenant_id))
            head = {"format": FORMAT, "format_version": FORMAT_VERSION, "exported_at": datetime.now(UTC).isoformat()}
            out.write(json.dumps(head)[:-1].encode() + b', "workspace": ' + str(workspace[0]).encode()
                      + b', "tables": {')
            tables = [t for t in tenant_tables(conn) if t.name not in EXCLUDED_TABLES]
            for index, table in enumerate(tables):
                out.write((", " if index else "").encode() + json.dumps(table.name).encode() + b": [")
                manifest.tables[table.name] = _copy_rows(conn, table, tenant_id, out, progress)
                out.write(b"]")
            out.write(b"}")
            if blobs is not None:
                out.write(b', "blobs": {')
                _write_blobs(blobs, tenant_id, out)
                out.write(b"}")
            out.write(b', "manifest": ' + json.dumps(manifest.tables).encode() + b"}\n")
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(destination)
    finally:
        temporary.unlink(missing_ok=True)
    return manifest


def _write_blobs(blobs: BlobStore, tenant_id: uuid.UUID, out: IO[bytes]) -> None:
    for index, key in enumerate(blobs.list(f"tenants/{tenant_id}")):
        with blobs.open(key) as handle:
            encoded = base64.b64encode(handle.read())
        out.write((", " if index else "").encode() + json.dumps(key).encode() + b': "' + encoded + b'"')


def read_export(path: Path) -> dict[str, Any]:
    """Load an export file (for restore and tests)."""
    with open(path, "rb") as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded
