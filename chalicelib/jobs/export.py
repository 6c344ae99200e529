"""Export one workspace as one JSON file: every row of every tenant table, read under RLS, streamed.

The file: `format`, `format_version`, `exported_at`, `workspace`, `tables` (name -> rows), `accounts`
(accounts.py), `blobs` (only with --with-blobs) and last the `manifest`: every catalog table with a
tenant key, each with its rows and SHA-256 or the reason it is left out (common.REASONS), the columns
withheld from a table, the accounts lists likewise, and whether attachment and recording bytes are in.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from psycopg import sql

from chalicelib.blobs import BlobStore
from chalicelib.db import queries
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.db.types import Conn
from chalicelib.jobs.accounts import write_accounts
from chalicelib.jobs.common import (
    EXCLUDED_COLUMNS,
    EXCLUDED_TABLES,
    REASONS,
    TenantTable,
    allow_long_statements,
    manifest_tables,
    tenant_tables,
)
from chalicelib.jobs.progress import Progress, count_rows

Q = queries.load(__package__)
FORMAT = "tenant-crm-export"
# 2: the manifest names every catalog table (left-out ones with their reason), accounts and blobs.
FORMAT_VERSION = 2
CHUNK_ROWS = 1024
BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
ROW_OF_ONE_FIELD = b"\x00\x01"
BINARY_TRAILER = b"\xff\xff"


class WorkspaceNotFound(LookupError):
    """No workspace with this id (as the jobs role sees it)."""


def workspace_json(conn: Conn, tenant_id: uuid.UUID) -> str:
    """The workspace's own row as JSON text (the head of an export or a backup), or WorkspaceNotFound."""
    row = conn.execute(Q["workspace_json"], (tenant_id,)).fetchone()
    if row is None:
        raise WorkspaceNotFound(str(tenant_id))
    return str(row[0])


@dataclass
class Manifest:
    """Per catalog table its rows and SHA-256 (rows' JSON, comma-joined) or why it is left out; accounts; blobs."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, Any] = field(default_factory=lambda: {"included": False})

    @property
    def total_rows(self) -> int:
        """Rows of the tables in the export (the accounts lists not counted)."""
        return sum(int(t.get("rows", 0)) for t in self.tables.values())

    @property
    def exported(self) -> dict[str, int]:
        """Rows per table written to the file."""
        return {name: int(t["rows"]) for name, t in self.tables.items() if "rows" in t}

    def as_dict(self) -> dict[str, Any]:
        """The `manifest` object of the file."""
        return {"tables": self.tables, "accounts": self.accounts, "blobs": self.blobs, "reasons": REASONS}

def _copy_rows(conn: Conn, table: TenantTable, tenant_id: uuid.UUID, out: IO[bytes],
               progress: Progress | None) -> dict[str, Any]:
    """Stream one table's rows as JSON objects separated by commas; returns rows and digest."""
    columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    # RLS scopes the read to the tenant; the explicit key filter is a second lock on the same door (the
    # jobs role may list every workspace row). COPY takes no parameters: the id is a quoted literal of
    # a parsed UUID. No ORDER BY: sorting a big table costs more than the rest of its export (B5), and
    # nothing depends on the order. Binary COPY carries each row's JSON text as is (no escaping to undo).
    query = sql.SQL("COPY (SELECT row_to_json(x) FROM (SELECT {} FROM {} WHERE {} = {}) x) TO STDOUT"
                    " (FORMAT binary)").format(columns, sql.Identifier(table.name), sql.Identifier(table.key),
                                               sql.Literal(str(uuid.UUID(str(tenant_id)))))
    digest = hashlib.sha256()
    rows = 0

    def write(values: list[Any]) -> None:
        nonlocal rows
        if not values:
            return
        chunk = b",".join(values)
        if rows:
            out.write(b",")
            digest.update(b",")
        out.write(chunk)
        digest.update(chunk)
        rows += len(values)
        if progress is not None:
            progress.advance(table.name, rows)

    with conn.cursor() as cur, cur.copy(query) as copy:
        # COPY sends one message per row: rows are written in chunks, not one by one (B5).
        values: list[Any] = []
        append = values.append
        first = True
        for block in copy:
            if first:
                block = _skip_binary_header(block)
                first = False
                if not block:
                    continue
            # A row: field count 1 (int16), the JSON's length (int32), the JSON. The trailer is -1.
            if block[:2] != ROW_OF_ONE_FIELD:
                if bytes(block) == BINARY_TRAILER:
                    continue
                raise RuntimeError("unexpected COPY row")
            append(block[6:])
            if len(values) >= CHUNK_ROWS:
                write(values)
                values.clear()
        write(values)
    if progress is not None and not rows:
        progress.advance(table.name, 0)  # an empty table is done too
    return {"rows": rows, "sha256": digest.hexdigest()}


def _skip_binary_header(block: Any) -> Any:
    """The first COPY message without the binary format's header (signature, flags, extension)."""
    if bytes(block[:11]) != BINARY_SIGNATURE:
        raise RuntimeError("not a binary COPY stream")
    return block[19 + int.from_bytes(block[15:19], "big"):]


def export_workspace(db: Database, tenant_id: uuid.UUID, destination: Path, *, blobs: BlobStore | None = None,
                     progress: Progress | None = None) -> Manifest:
    """Write the workspace's export to `destination` atomically; returns the manifest."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    manifest = Manifest()
    try:
        with open(temporary, "wb") as out, tenant_tx(tenant_id, db=db, pipeline=False) as conn:
            allow_long_statements(conn)
            workspace = workspace_json(conn, tenant_id)
            head = {"format": FORMAT, "format_version": FORMAT_VERSION, "exported_at": datetime.now(UTC).isoformat()}
            out.write(json.dumps(head)[:-1].encode() + b', "workspace": ' + workspace.encode()
                      + b', "tables": {')
            catalog = tenant_tables(conn)
            tables = [t for t in catalog if t.name not in EXCLUDED_TABLES]
            if progress is not None:
                progress.begin("export", count_rows(conn, [(t.name, t.key) for t in tables], tenant_id))
            written: dict[str, dict[str, Any]] = {}
            for index, table in enumerate(tables):
                out.write((", " if index else "").encode() + json.dumps(table.name).encode() + b": [")
                written[table.name] = _copy_rows(conn, table, tenant_id, out, progress)
                out.write(b"]")
            manifest.tables = manifest_tables(
                catalog, written, {t.name: {c: EXCLUDED_COLUMNS[t.name][c] for c in t.withheld} for t in tables})
            out.write(b'}, "accounts": {')
            manifest.accounts = write_accounts(conn, tenant_id, out)
            out.write(b"}")
            if blobs is not None:
                out.write(b', "blobs": {')
                manifest.blobs = {"included": True, "objects": _write_blobs(blobs, tenant_id, out)}
                out.write(b"}")
            out.write(b', "manifest": ' + json.dumps(manifest.as_dict()).encode() + b"}\n")
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(destination)
    finally:
        temporary.unlink(missing_ok=True)
    return manifest


def _write_blobs(blobs: BlobStore, tenant_id: uuid.UUID, out: IO[bytes]) -> int:
    keys = blobs.list(f"tenants/{tenant_id}")
    for index, key in enumerate(keys):
        with blobs.open(key) as handle:
            encoded = base64.b64encode(handle.read())
        out.write((", " if index else "").encode() + json.dumps(key).encode() + b': "' + encoded + b'"')
    return len(keys)


def read_export(path: Path) -> dict[str, Any]:
    """Load an export file (for restore and tests)."""
    with open(path, "rb") as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded
