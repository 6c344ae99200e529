"""The one place a tenant is chosen for a database transaction."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from psycopg import Connection
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from chalicelib.db.pool import Database, get_database

# Transaction-local (third argument true): the setting dies with COMMIT/ROLLBACK, so a pooled
# connection can never carry a tenant into the next request. Never `SET`, never is_local=false.
_SET_TENANT = "SELECT set_config('app.tenant_id', %s, true)"


def _tenant_str(tenant_id: uuid.UUID | str) -> str:
    # Parsed as a UUID before it goes anywhere near SQL: no injection through the tenant id.
    return str(tenant_id if isinstance(tenant_id, uuid.UUID) else uuid.UUID(str(tenant_id)))


@contextlib.contextmanager
def tenant_tx(tenant_id: uuid.UUID | str, *, db: Database | None = None,
              pipeline: bool = True) -> Iterator[Connection[TupleRow]]:
    """Yield a pooled connection inside a transaction scoped to one tenant by RLS.

    With ``pipeline`` (the default) BEGIN, set_config and the first statement reach the server in
    one round trip, and COMMIT shares the final one; a result read after the block costs no extra
    round trip. Use ``pipeline=False`` for COPY. Any exception rolls the transaction back.
    """
    value = _tenant_str(tenant_id)
    database = db if db is not None else get_database("app")
    with database.pool.connection() as conn:
        try:
            if pipeline:
                # BEGIN/COMMIT are queued as plain statements: psycopg's transaction() waits for
                # BEGIN's result in pipeline mode, which would cost a round trip of its own.
                with conn.pipeline():
                    conn.execute("BEGIN")
                    conn.execute(_SET_TENANT, (value,))
                    yield conn
                    conn.execute("COMMIT")
            else:
                with conn.transaction():
                    conn.execute(_SET_TENANT, (value,))
                    yield conn
        except BaseException:
            _rollback(conn)
            raise


def _rollback(conn: Connection[TupleRow]) -> None:
    # The pool would also roll back a connection returned mid-transaction, but doing it here keeps
    # the failed transaction's tenant from ever being visible to the next checkout.
    if conn.closed or conn.broken:
        return
    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        conn.execute("ROLLBACK")
