"""A workspace's plaintext dump for a backup: the export format, one row per line, from ONE snapshot.

backup.py encrypts it; restore.py reads it back (backup_tables says which columns both expect).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from psycopg import sql

from chalicelib.db import queries
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.db.types import Conn
from chalicelib.jobs import gfs
from chalicelib.jobs.common import (
    EXCLUDED_TABLES,
    REASONS,
    TenantTable,
    allow_long_statements,
    manifest_tables,
    tenant_tables,
)
from chalicelib.jobs.export import FORMAT, FORMAT_VERSION, workspace_json
from chalicelib.jobs.progress import Progress, count_rows

Q = queries.load(__package__)
KIND = "backup"
# Rows between two progress reports of one table (each report redraws a bar).
PROGRESS_EVERY = 1024


def backup_tables(conn: Conn, catalog: list[TenantTable] | None = None) -> list[TenantTable]:
    """Tenant tables as a backup carries them: every stored column, none generated, no backup tables."""
    tables = []
    for table in tenant_tables(conn) if catalog is None else catalog:
        if table.name in EXCLUDED_TABLES:
            continue
        # Unlike the export handed to a customer, a backup must restore the workspace exactly, so the
        # columns the export leaves out (credential ciphertexts, API key HMACs: never plaintext) stay in;
        # the whole file is encrypted under the workspace's key. Generated columns are recomputed.
        columns = (*table.columns, *table.withheld)
        tables.append(TenantTable(table.name, table.key, tuple(c for c in columns if c not in table.generated),
                                  table.generated))
    return tables


def dump_workspace(db: Database, tenant_id: uuid.UUID, destination: Path, *, taken_at: datetime,
                   progress: Progress | None = None, label: str = KIND) -> int:
    """Write the workspace in the export format, one row per line, from ONE snapshot; returns rows."""
    with open(destination, "wb") as out, tenant_tx(tenant_id, db=db, pipeline=False) as conn:
        allow_long_statements(conn)
        workspace = workspace_json(conn, tenant_id)
        catalog = tenant_tables(conn)
        tables = backup_tables(conn, catalog)
        head = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": KIND,
                "exported_at": gfs.utc(taken_at).isoformat()}
        out.write(json.dumps(head)[:-1].encode() + b', "workspace": ' + workspace.encode()
                  + b', "tables": {\n')
        if progress is not None:
            # Counted in a statement of its own, for the watcher only: the rows themselves still come from
            # the one COPY below.
            progress.begin(label, count_rows(conn, [(t.name, t.key) for t in tables], tenant_id))
        manifest = _Writer(out, [t.name for t in tables], progress)
        # One statement, so one snapshot even at READ COMMITTED: a row added between two tables' reads
        # could otherwise point at a parent the backup does not hold, and the restore would fail.
        # Without parallel workers the UNION ALL branches come out in order (and _Writer checks it).
        conn.execute(Q["no_parallel_workers"])
        branches = [sql.SQL("SELECT {}, row_to_json(x)::text FROM (SELECT {} FROM {} WHERE {} = {}) x").format(
            sql.Literal(n), sql.SQL(", ").join(map(sql.Identifier, t.columns)), sql.Identifier(t.name),
            sql.Identifier(t.key), sql.Literal(str(tenant_id))) for n, t in enumerate(tables)]
        pending = b""
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY ({}) TO STDOUT").format(
                sql.SQL(" UNION ALL ").join(branches))) as copy:
            for block in copy:
                data = pending + bytes(block)
                cut = data.rfind(b"\n") + 1
                complete, pending = data[:cut], data[cut:]
                # COPY's text format escapes only backslashes here (JSON leaves no raw control characters).
                for line in complete.replace(b"\\\\", b"\\").split(b"\n")[:-1]:
                    index, row = line.split(b"\t", 1)
                    manifest.row(int(index), row)
        manifest.finish()
        # Every catalog table is named: left-out ones with their reason, generated columns as derived.
        entries = manifest_tables(catalog, manifest.tables, {t.name: dict.fromkeys(t.generated, "derived")
                                                             for t in tables})
        out.write(b'}, "manifest": ' + json.dumps({"tables": entries, "reasons": REASONS}).encode() + b"}\n")
    return manifest.total


class _Writer:
    """Writes tables as `"name": [` / row lines / `]`, counting and hashing rows as the export does."""

    def __init__(self, out: IO[bytes], names: list[str], progress: Progress | None = None) -> None:
        self.out, self.names, self.current, self.progress = out, names, -1, progress
        self.tables: dict[str, dict[str, Any]] = {}
        self.total = 0
        self._digest: Any = None

    def _advance(self, index: int) -> None:
        if index < self.current:
            raise RuntimeError("the dump's tables came out of order")
        while self.current < index:
            if self.current >= 0:
                self._close()
            self.current += 1
            if self.current < len(self.names):
                self._digest = hashlib.sha256()
                self.tables[self.names[self.current]] = {"rows": 0, "sha256": ""}
                self.out.write((b", " if self.current else b"") + json.dumps(self.names[self.current]).encode()
                               + b": [\n")

    def _close(self) -> None:
        name = self.names[self.current]
        self.tables[name]["sha256"] = self._digest.hexdigest()
        self.out.write(b"]\n")
        if self.progress is not None:
            self.progress.advance(name, self.tables[name]["rows"])

    def row(self, index: int, row: bytes) -> None:
        """One row's JSON text of table number `index`."""
        self._advance(index)
        entry = self.tables[self.names[index]]
        separator = b"," if entry["rows"] else b""
        self._digest.update(separator + row)  # the same digest as the export: rows joined by commas
        self.out.write(separator + row + b"\n")
        entry["rows"] += 1
        self.total += 1
        if self.progress is not None and entry["rows"] % PROGRESS_EVERY == 0:
            self.progress.advance(self.names[index], entry["rows"])

    def finish(self) -> None:
        """Close the last table and write the empty ones after it."""
        self._advance(len(self.names))
