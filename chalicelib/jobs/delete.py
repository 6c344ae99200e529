"""Hard deletion of a workspace: every tenant row, its blobs and backups; audit entries pseudonymized."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from chalicelib.blobs import BlobStore
from chalicelib.db import queries
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.jobs.common import DERIVED_TABLES, dependency_order, tenant_tables
from chalicelib.jobs.progress import Progress, count_rows
from chalicelib.observability import log_event

Q = queries.load(__package__)
log = logging.getLogger("crm.jobs.delete")
# Kept for security forensics until their own retention purge: event, actor ids, IP, time.
FORENSIC_TABLE = "audit_log"
BLOB_PREFIXES = ("tenants/{id}", "exports/{id}", "backups/{id}")


@dataclass
class Receipt:
    """What a deletion removed."""

    workspace_id: str
    found: bool
    rows: dict[str, int] = field(default_factory=dict)
    audit_entries_pseudonymized: int = 0
    blobs: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able receipt."""
        return {"workspace_id": self.workspace_id, "found": self.found, "rows": self.rows,
                "audit_entries_pseudonymized": self.audit_entries_pseudonymized, "blobs": self.blobs,
                "seconds": round(self.seconds, 3)}


def delete_workspace(db: Database, tenant_id: uuid.UUID, blobs: BlobStore, *,
                     progress: Progress | None = None) -> Receipt:
    """Delete the workspace now (idempotent: a second run finds nothing and succeeds)."""
    started = time.perf_counter()
    receipt = Receipt(str(tenant_id), found=False)
    with tenant_tx(tenant_id, db=db, pipeline=False) as conn:
        # Two overlapping runs: the second skips instead of racing the first.
        locked = conn.execute(Q["deletion_lock"], (str(tenant_id),)).fetchone()
        if not (locked and locked[0]):
            log_event(log, "deletion already running", workspace_id=str(tenant_id))
            return receipt
        receipt.found = conn.execute(Q["workspace_exists"], (tenant_id,)).fetchone() is not None
        keys = {t.name: t.key for t in tenant_tables(conn)}
        # Derived tables first: their rows are then counted here, not removed unseen by their sources' triggers.
        children_first = [n for n in reversed(dependency_order(conn, list(keys))) if n != FORENSIC_TABLE]
        order = sorted(children_first, key=lambda n: n not in DERIVED_TABLES)
        if progress is not None:
            progress.begin("delete", count_rows(conn, [(name, keys[name]) for name in order], tenant_id))
        for name in order:
            # RLS scopes the statement; the explicit key is a second guard (the jobs role can list workspaces).
            cur = conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(name),
                                                                              sql.Identifier(keys[name])), (tenant_id,))
            if cur.rowcount:
                receipt.rows[name] = cur.rowcount
            if progress is not None:
                progress.advance(name, max(cur.rowcount, 0))
        cur = conn.execute(Q["audit_pseudonymize"], (tenant_id,))
        receipt.audit_entries_pseudonymized = cur.rowcount
        if conn.execute(Q["audit_has_entries"], (tenant_id,)).fetchone():
            # The audit entries' purge needs to find this workspace id after its row is gone.
            conn.execute(Q["tombstone_add"], (tenant_id,))
    for prefix in BLOB_PREFIXES:
        for key in blobs.list(prefix.format(id=tenant_id)):
            blobs.delete(key)
            receipt.blobs += 1
    receipt.seconds = time.perf_counter() - started
    log_event(log, "workspace deleted", workspace_id=str(tenant_id), found=receipt.found,
              rows=sorted(receipt.rows.items()), blobs=receipt.blobs)
    return receipt
