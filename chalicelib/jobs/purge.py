"""Retention purges: audit entries past AUDIT_RETENTION_DAYS, spent sign-in state, old idempotency keys,
the outgoing webhooks' delivery log and event payloads past 30 days.

Every purge deletes in small batches, each batch its own short transaction (a few milliseconds of
locks, never one statement holding a million rows), works workspace by workspace through the jobs
role under RLS (one failure is logged and the rest continue), and logs counts, never contents.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString

from psycopg import sql

from chalicelib.db import queries
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx, user_tx
from chalicelib.db.types import Conn
from chalicelib.jobs.common import Outcome, claim, each_workspace, finish, log_finished, workspaces
from chalicelib.observability import log_event
from chalicelib.settings import Settings, get_settings

Q = queries.load(__package__)
log = logging.getLogger("crm.jobs.purge")
AUDIT_JOB = "purge_audit_log"
AUTH_JOB = "purge_auth"
WEBHOOK_JOB = "purge_webhook_log"
# Rows per batch: small enough that one batch's transaction stays well under 50 ms (bench B6).
AUDIT_BATCH = 5000
AUTH_BATCH = 1000
# Smaller than the audit log's: a message's delete cascades to its deliveries and what is left of their
# attempts (not benched; the attempts go first, in batches of their own, so little is left to cascade).
WEBHOOK_BATCH = 1000
# Sign-in state is deleted a little after it stops working, never at the instant: the API's clock
# and the scheduler's may differ, and last_seen_at is only written once a minute.
AUTH_MARGIN = timedelta(minutes=5)
RATE_LIMIT_KEEP = timedelta(days=1)
IDEMPOTENCY_KEEP = timedelta(hours=24)
# The outgoing webhooks' delivery log (webhook_attempts) and event payloads (webhook_messages, with their
# deliveries) are kept this long: long enough to inspect and replay a failed delivery, no longer.
WEBHOOK_LOG_KEEP = timedelta(days=30)


@dataclass(frozen=True)
class Batch:
    """One committed batch: the table, the workspace (None for account tables), rows, transaction time."""

    table: str
    workspace_id: uuid.UUID | None
    rows: int
    seconds: float


OnBatch = Callable[[Batch], None]


@contextlib.contextmanager
def _scope(db: Database, tenant: uuid.UUID | None) -> Iterator[Conn]:
    """A tenant transaction (RLS) for a workspace's rows, a tenant-less one for account tables."""
    with (tenant_tx(tenant, db=db) if tenant is not None else user_tx(db=db)) as conn:
        # A purge that a crash loses is simply redone by the next run: no need to wait for the WAL
        # flush on each of its many small commits.
        conn.execute(Q["async_commit"])
        yield conn


def delete_in_batches(db: Database, table: str, condition: LiteralString, params: Sequence[Any], *,
                      tenant: uuid.UUID | None = None, batch_size: int, on_batch: OnBatch | None = None) -> int:
    """Delete the rows of `table` matching `condition`, `batch_size` at a time; returns how many."""
    # `condition` is a constant of this module (never input); values travel as bound parameters.
    query = sql.SQL("DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {condition}"
                    " LIMIT {limit}))").format(table=sql.Identifier(table), condition=sql.SQL(condition),
                                               limit=sql.Literal(int(batch_size)))
    total = 0
    while True:
        started = time.perf_counter()
        with _scope(db, tenant) as conn:
            cur = conn.execute(query, params)
        rows = _reported(Batch(table, tenant, max(cur.rowcount, 0), time.perf_counter() - started), on_batch)
        total += rows
        if rows < batch_size:
            return total


def _reported(batch: Batch, on_batch: OnBatch | None) -> int:
    """Hand one finished batch to the caller's callback; its row count."""
    if on_batch is not None:
        on_batch(batch)
    return batch.rows


def delete_older(db: Database, table: str, condition: LiteralString, params: Mapping[str, Any], *, before: datetime,
                 tenant: uuid.UUID | None = None, batch_size: int, on_batch: OnBatch | None = None,
                 column: LiteralString = "occurred_at") -> int:
    """Delete rows matching `condition` (named parameters) with `column` < `before`, oldest first.

    Each batch deletes everything up to its batch_size-th oldest row (ties included); from the second
    batch on it also reads that bound back, so the next batch starts its index scan after it instead
    of wading through the entries of rows deleted moments ago (not yet vacuumed): batches cost the
    same however many came before. Needs an index on (tenant key, `column`) or (`column`).
    """
    # `column` is a constant of this module too (occurred_at, created_at, attempted_at), never input.
    time_column = sql.Identifier(column)
    window = sql.SQL("{condition} AND {column} > %(after)s AND {column} < %(before)s").format(
        condition=sql.SQL(condition), column=time_column)
    probe = sql.SQL("SELECT {column} FROM {table} WHERE {window} ORDER BY {column} OFFSET {offset} LIMIT 1"
                    ).format(column=time_column, table=sql.Identifier(table), window=window,
                             offset=sql.Literal(int(batch_size) - 1))
    # The bound is computed again inside the DELETE rather than sent back: both statements travel in
    # one round trip, and an index-only probe costs less than counting a CTE of deleted rows (B6).
    # No bound (NULL): fewer rows than a batch are left, and this batch takes them all.
    delete = sql.SQL("DELETE FROM {table} WHERE {window} AND {column} <= COALESCE(({probe}), 'infinity')"
                     ).format(table=sql.Identifier(table), window=window, column=time_column, probe=probe)
    after: datetime | str = "-infinity"
    total, first = 0, True
    while True:
        started = time.perf_counter()
        values = {**params, "after": after, "before": before}
        with _scope(db, tenant) as conn:
            # The first batch is usually the last one too (a day's entries): it passes no bound on.
            bound = None if first else conn.execute(probe, values)
            cur = conn.execute(delete, values)
        rows = _reported(Batch(table, tenant, max(cur.rowcount, 0), time.perf_counter() - started), on_batch)
        total += rows
        if rows < batch_size:
            return total
        row = bound.fetchone() if bound is not None else None
        if row is not None:
            after = row[0]
        first = False


def tombstoned(db: Database) -> list[uuid.UUID]:
    """Ids of hard-deleted workspaces whose audit entries still await their purge."""
    with db.pool.connection() as conn:
        rows = conn.execute(Q["tombstones_all"]).fetchall()
    return [uuid.UUID(str(r[0])) for r in rows]


def purge_audit_log(db: Database, now: datetime, *, retention_days: int | None = None,
                    batch_size: int = AUDIT_BATCH, on_batch: OnBatch | None = None) -> Outcome:
    """Delete audit entries older than the retention (workspaces, deleted workspaces, account log)."""
    days = retention_days if retention_days is not None else get_settings().audit_retention_days
    cutoff = now - timedelta(days=days)
    gone = tombstoned(db)
    targets = list(dict.fromkeys([w.id for w in workspaces(db)] + gone))
    gone_set = set(gone)

    def work(tenant: uuid.UUID) -> dict[str, int]:
        rows = delete_older(db, "audit_log", "tenant_id = %(tenant)s", {"tenant": tenant}, before=cutoff,
                            tenant=tenant, batch_size=batch_size, on_batch=on_batch)
        counts = {"audit_rows": rows}
        if tenant in gone_set:
            with tenant_tx(tenant, db=db) as conn:
                # The tombstone only goes once RLS (this workspace's context) shows no audit row left.
                cur = conn.execute(Q["tombstone_drop"], (tenant, tenant))
            counts["tombstones_dropped"] = max(cur.rowcount, 0)
        return counts

    outcome = each_workspace(AUDIT_JOB, targets, work)
    _global(outcome, AUDIT_JOB, "account_audit_log", lambda: delete_older(
        db, "account_audit_log", "true", {}, before=cutoff, batch_size=batch_size, on_batch=on_batch))
    return outcome


def purge_auth(db: Database, now: datetime, *, settings: Settings | None = None, batch_size: int = AUTH_BATCH,
               on_batch: OnBatch | None = None) -> Outcome:
    """Delete spent sign-in tokens, dead sessions, old rate-limit windows and old idempotency keys."""
    settings = settings or get_settings()
    expired = now - AUTH_MARGIN
    idle = now - timedelta(seconds=settings.session_idle_timeout_s) - AUTH_MARGIN
    keys_before = now - IDEMPOTENCY_KEEP

    def keys(tenant: uuid.UUID) -> dict[str, int]:
        return {"idempotency_keys": delete_in_batches(
            db, "idempotency_keys", "tenant_id = %s AND created_at < %s", (tenant, keys_before), tenant=tenant,
            batch_size=batch_size, on_batch=on_batch)}

    outcome = each_workspace(AUTH_JOB, [w.id for w in workspaces(db)], keys)
    # A used or expired token or code can never sign anyone in again.
    _global(outcome, AUTH_JOB, "login_tokens", lambda: delete_in_batches(
        db, "login_tokens", "expires_at < %s OR used_at < %s", (expired, expired), batch_size=batch_size,
        on_batch=on_batch))
    # A revoked session is dead at once; an expired or idle one no longer resolves (see sessions.resolve).
    _global(outcome, AUTH_JOB, "sessions", lambda: delete_in_batches(
        db, "sessions", "revoked_at IS NOT NULL OR expires_at < %s OR last_seen_at < %s", (expired, idle),
        batch_size=batch_size, on_batch=on_batch))
    _global(outcome, AUTH_JOB, "rate_limits", lambda: delete_in_batches(
        db, "rate_limits", "window_start < %s", (now - RATE_LIMIT_KEEP,), batch_size=batch_size,
        on_batch=on_batch))
    return outcome


def purge_webhook_log(db: Database, now: datetime, *, batch_size: int = WEBHOOK_BATCH,
                      on_batch: OnBatch | None = None) -> Outcome:
    """Delete every workspace's webhook attempts and messages (their deliveries cascade) older than 30 days."""
    cutoff = now - WEBHOOK_LOG_KEEP

    def work(tenant: uuid.UUID) -> dict[str, int]:
        # The attempts first, so a message's delete has (almost) nothing left to cascade to.
        attempts = delete_older(db, "webhook_attempts", "tenant_id = %(tenant)s", {"tenant": tenant},
                                before=cutoff, tenant=tenant, batch_size=batch_size, on_batch=on_batch,
                                column="attempted_at")
        messages = delete_older(db, "webhook_messages", "tenant_id = %(tenant)s", {"tenant": tenant},
                                before=cutoff, tenant=tenant, batch_size=batch_size, on_batch=on_batch,
                                column="created_at")
        return {"webhook_attempts": attempts, "webhook_messages": messages}

    return each_workspace(WEBHOOK_JOB, [w.id for w in workspaces(db)], work)


def _global(outcome: Outcome, job: str, table: str, purge: Callable[[], int]) -> None:
    """Purge one account table into `outcome`; a failure is logged and listed like a workspace's."""
    try:
        outcome.add({table: purge()})
    except Exception as exc:
        outcome.failed.append(table)
        log.error("purge failed for a table", exc_info=exc, extra={"fields": {"job": job, "table": table}})
    log_event(log, "purge finished", job=job, table=table, rows=outcome.counts.get(table, 0))


def run_claimed(db: Database, job: str, scheduled_for: datetime, body: Callable[[], Outcome]) -> Outcome | None:
    """Run `body` once per scheduled slot: None when another invocation already claimed it.

    A run that raises gives its claim back, so a retry of the same slot (Lambda's async retries) can
    redo it; per-workspace failures are recorded in the finished claim and redone by the next slot.
    """
    if not claim(db, job, scheduled_for):
        log_event(log, "run already claimed", job=job, scheduled_for=scheduled_for.isoformat())
        return None
    try:
        outcome = body()
    except BaseException:
        with db.pool.connection() as conn:
            conn.execute(Q["job_run_release"], (job, scheduled_for))
        raise
    finish(db, job, scheduled_for, {**outcome.counts, "failed": len(outcome.failed)})
    log_finished(job, outcome)
    return outcome
