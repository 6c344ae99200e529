"""The one place a tenant is chosen for a database transaction."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import Pipeline
from psycopg.pq import TransactionStatus

from chalicelib.db.pool import Database, get_database
from chalicelib.db.types import Conn

# Transaction-local (third argument true): the setting dies with COMMIT/ROLLBACK, so a pooled
# connection can never carry a tenant into the next request. Never `SET`, never is_local=false.
_SET_TENANT = "SELECT set_config('app.tenant_id', %s, true)"
_SET_USER = "SELECT set_config('app.user_id', %s, true)"


def _tenant_str(value: uuid.UUID | str) -> str:
    # Parsed as a UUID before it goes anywhere near SQL: no injection through a scope id.
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


@contextlib.contextmanager
def tenant_tx(tenant_id: uuid.UUID | str, *, db: Database | None = None,
              pipeline: bool = True) -> Iterator[Conn]:
    """Yield a pooled connection inside a transaction scoped to one tenant by RLS.

    With ``pipeline`` (the default) set_config and the first statement reach the server in one round
    trip, and the block's statements form one transaction that the pipeline's closing Sync commits; a
    result read after the block costs no extra round trip. Use ``pipeline=False`` for COPY. Any
    exception rolls the transaction back.
    """
    with _transaction(_SET_TENANT, (_tenant_str(tenant_id),), db, pipeline) as conn:
        yield conn


@contextlib.contextmanager
def user_tx(*, db: Database | None = None) -> Iterator[Conn]:
    """A transaction with no tenant: account tables only (tenant rows stay invisible).

    After the caller has verified a session it may call bind_user() to read that user's own
    memberships across workspaces.
    """
    with _transaction(None, (), db, True) as conn:
        yield conn


def bind_user(conn: Conn, user_id: uuid.UUID) -> None:
    """Let the current transaction read the rows the RLS policies grant to this (verified) user."""
    # Transaction-local, like the tenant: gone at COMMIT/ROLLBACK.
    conn.execute(_SET_USER, (_tenant_str(user_id),))


@contextlib.contextmanager
def _transaction(scope_sql: str | None, params: tuple[str, ...], db: Database | None,
                 pipeline: bool) -> Iterator[Conn]:
    database = db if db is not None else get_database("app")
    with database.connection() as conn:
        try:
            if pipeline:
                # No BEGIN and no COMMIT: in the extended protocol everything from the first statement
                # to the next Sync is one transaction, which the Sync commits (or rolls back after an
                # error, skipping whatever was queued behind it). The pipeline sends its only Sync when
                # the block ends, so the block is one transaction and the transaction-local tenant lives
                # exactly as long. That saves two statements per request over BEGIN ... COMMIT (bench
                # B2). Nothing in the block may Sync early (a nested conn.transaction(), commit() or
                # pipeline()): a source rule in tests/security/test_banned_patterns.py keeps them here.
                with conn.pipeline() as queued:
                    if scope_sql is not None:
                        conn.execute(scope_sql, params)
                    try:
                        yield conn
                    except BaseException:
                        _abandon(conn, queued)
                        raise
            else:
                with conn.transaction():
                    if scope_sql is not None:
                        conn.execute(scope_sql, params)
                    yield conn
        except BaseException:
            _rollback(conn)
            raise


def _abandon(conn: Conn, queued: Pipeline) -> None:
    """Roll back what the block queued or ran, then settle the pipeline (the block raised).

    The closing Sync would commit the block's transaction, so it must not be the next thing the
    server sees. BEGIN turns the running transaction into an explicit block, statements already run
    included, without a warning; ROLLBACK then discards all of it. After a server error both are
    skipped, and the Sync ends the failed transaction with a rollback of its own.
    """
    for statement in ("BEGIN", "ROLLBACK"):
        # Each is queued even when sending it reports an earlier statement's error (then both are
        # skipped by the server, whose Sync rolls back).
        with contextlib.suppress(psycopg.Error):
            conn.execute(statement)
    _settle(queued)


def _settle(queued: Pipeline) -> None:
    """Collect what is still queued after the block failed, so the pipeline ends without a new error.

    A refused authorization is expected (a 401/403/404): the statements queued behind it come back as
    skipped, and leaving them to the pipeline's exit would make psycopg log a WARNING for every refused
    request (with a server message that may quote a value). Their errors only repeat the block's own,
    which is the one that propagates.
    """
    # A sync raises the first error among the results it processed, and may stop before the last of
    # them has arrived: repeat until one completes with nothing left queued (bounded: each round sends
    # a Sync and reads up to it).
    for _ in range(len(queued.result_queue) + 3):
        try:
            queued.sync()
        except psycopg.Error:
            continue
        if not queued.result_queue:
            return


def _rollback(conn: Conn) -> None:
    # The pool would also roll back a connection returned mid-transaction, but doing it here keeps
    # the failed transaction's tenant from ever being visible to the next checkout.
    if conn.closed or conn.broken:
        return
    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        conn.execute("ROLLBACK")
