"""What every job shares: the jobs role's pool, the list of workspaces, run claims, the tenant catalog."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from chalicelib.db import queries
from chalicelib.db.pool import Database, get_database
from chalicelib.db.types import Conn
from chalicelib.observability import log_event

Q = queries.load(__package__)
log = logging.getLogger("crm.jobs")
# Why a table or a column of the catalogue is left out of an export or a backup: the closed set of reasons
# a manifest may give (README, "Privacy staff"). Anything else left out is a bug, and tests say so.
REASONS = {
    "derived": "rebuilt from rows that are included (by triggers, or a generated column): nothing is lost",
    "key-material": "a secret, its ciphertext, a key or a digest of one: never handed out",
    "backup-index": "the bookkeeping of the workspace's own backups (which objects exist), not its content",
}
# Columns that never leave the database in an export (secrets and their digests); a backup keeps them.
EXCLUDED_COLUMNS = {"integration_credentials": {"ciphertext": "key-material"}, "api_keys": {"key_hash": "key-material"},
                    "channels": {"secrets_ciphertext": "key-material"},
                    # The outgoing webhooks' signing secrets (whsec_…), current and pre-rotation, encrypted.
                    "webhook_endpoints": {"secret_ciphertext": "key-material",
                                          "previous_secret_ciphertext": "key-material"},
                    # The secret SignNow signs a sent proposal's callbacks with, encrypted.
                    "proposals": {"signnow_hook_secret": "key-material"}}
# Tables derived from other tables' rows by triggers: search_terms (the words of searchable records).
DERIVED_TABLES = ("search_terms",)
# Tables left out of exports and backups, with their reason: the backups' own key and index (not workspace
# content), and the derived ones (their sources are exported and backed up; the triggers rebuild them from
# those rows on restore).
EXCLUDED_TABLES = {"backup_keys": "key-material", "backups": "backup-index", **dict.fromkeys(DERIVED_TABLES, "derived")}


def jobs_database() -> Database:
    """The jobs role's pool (JOBS_DATABASE_URL): the only role that may list workspaces."""
    return get_database("jobs")


@dataclass(frozen=True)
class Workspace:
    """A workspace as the jobs see it."""

    id: uuid.UUID
    name: str
    deleted_at: datetime | None


def workspaces(db: Database) -> list[Workspace]:
    """Every workspace (the one cross-tenant read the jobs role has)."""
    with db.pool.connection() as conn:
        rows = conn.execute(Q["workspaces_all"]).fetchall()
    return [Workspace(r[0], str(r[1]), r[2]) for r in rows]


def live_workspaces(db: Database) -> list[uuid.UUID]:
    """The ids of the workspaces not deleted (a deleted one waits for its purge, untouched)."""
    return [w.id for w in workspaces(db) if w.deleted_at is None]


def claim(db: Database, name: str, scheduled_for: datetime) -> bool:
    """Claim one scheduled run; False when another invocation already has it (overlaps do the work once)."""
    with db.pool.connection() as conn:
        rows = conn.execute(Q["job_run_claim"], (name, scheduled_for)).fetchall()
    return bool(rows)


def finish(db: Database, name: str, scheduled_for: datetime, counts: dict[str, Any]) -> None:
    """Record a claimed run's counts (never contents)."""
    with db.pool.connection() as conn:
        conn.execute(Q["job_run_finish"], (Jsonb(counts), name, scheduled_for))


@dataclass
class Outcome:
    """Per-workspace results of a job: counts added up, failures listed by workspace id."""

    counts: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def add(self, counts: dict[str, int]) -> None:
        """Add one workspace's counts."""
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + value


def each_workspace(job: str, targets: Iterable[uuid.UUID], work: Callable[[uuid.UUID], dict[str, int]]) -> Outcome:
    """Run `work` for every workspace; one failure is logged and the rest continue.

    It logs no "finished" line: a job may have more to do afterwards (account tables), so the job logs
    `log_finished` itself, last.
    """
    outcome = Outcome()
    for tenant in targets:
        try:
            outcome.add(work(tenant))
        except Exception as exc:
            outcome.failed.append(str(tenant))
            log.error("job failed for a workspace", exc_info=exc,
                      extra={"fields": {"job": job, "workspace_id": str(tenant)}})
    return outcome


def log_finished(job: str, outcome: Outcome) -> None:
    """The job's last log line: its counts (under `counts`, which the scrubber lets through as numbers)."""
    log_event(log, "job finished", job=job, failed=len(outcome.failed), counts=outcome.counts)


@dataclass(frozen=True)
class TenantTable:
    """A table holding workspace data: its tenant key, the columns an export carries and those it withholds."""

    name: str
    key: str
    columns: tuple[str, ...]
    generated: tuple[str, ...]
    withheld: tuple[str, ...] = ()


def tenant_tables(conn: Conn) -> list[TenantTable]:
    """Every table of public with a tenant key, from the catalog (a new table is found automatically)."""
    rows = conn.execute(Q["tenant_tables"]).fetchall()
    tables = []
    for name, columns, generated in rows:
        excluded = EXCLUDED_COLUMNS.get(str(name), {})
        tables.append(TenantTable(str(name), "id" if name == "workspaces" else "tenant_id",
                                  tuple(c for c in columns if c not in excluded), tuple(generated or ()),
                                  tuple(c for c in columns if c in excluded)))
    return tables


def manifest_tables(catalog: list[TenantTable], written: dict[str, dict[str, Any]],
                    withheld: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    """A manifest's `tables`: every catalog table with its rows and digest (and withheld columns) or its reason."""
    # `withheld` names the columns left out of a written table, with their reason (only those it has).
    entries: dict[str, dict[str, Any]] = {}
    for table in sorted(catalog, key=lambda t: t.name):
        if table.name in written:
            entries[table.name] = dict(written[table.name])
            if withheld.get(table.name):
                entries[table.name]["excluded_columns"] = dict(sorted(withheld[table.name].items()))
        elif table.name in EXCLUDED_TABLES:
            entries[table.name] = {"excluded": EXCLUDED_TABLES[table.name]}
        else:  # never silently: a table is either in the file or declared left out
            raise RuntimeError(f"{table.name} is neither written nor excluded")
    return entries


def dependency_order(conn: Conn, names: list[str]) -> list[str]:
    """`names` ordered parents first (by foreign keys among them); reverse it to delete."""
    edges = conn.execute(Q["foreign_key_edges"]).fetchall()
    parents: dict[str, set[str]] = {n: set() for n in names}
    for child, parent in edges:
        child_name, parent_name = str(child).removeprefix("public."), str(parent).removeprefix("public.")
        if child_name in parents and parent_name in parents:
            parents[child_name].add(parent_name)
    ordered: list[str] = []
    while parents:
        ready = sorted(n for n, p in parents.items() if not p - set(ordered))
        if not ready:
            raise RuntimeError("foreign keys between tenant tables form a cycle")
        ordered.extend(ready)
        for n in ready:
            del parents[n]
    return ordered


def allow_long_statements(conn: Conn) -> None:
    """Lift the jobs role's statement timeout for this transaction only (a whole-table COPY of a large
    workspace takes longer than an API statement may); it ends with the transaction."""
    conn.execute(Q["statement_timeout_off"])
