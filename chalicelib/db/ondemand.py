"""A psycopg ConnectionPool that opens connections in the thread that needs one, never in the background.

psycopg_pool opens, and re-opens, connections in worker threads. After a failure it retries with an
exponential backoff for up to `reconnect_timeout`, and meanwhile the lost connection keeps its slot.
While the database restarts the next attempt is scheduled further and further out, so every request
waits the whole pool timeout for it and fails, long after the server is back. A pooled connection that
fails its checkout check is also retried only after a one-second sleep.

Here, as in psycopg_pool's own NullConnectionPool, a request that finds no idle connection and a free
slot connects itself: a refused connection fails it at once (a fast 503), and the first request after
a recovery connects and succeeds. A lost, failed or expired connection only frees its slot. Only when
other requests are already queued for a connection (more threads than DB_POOL_SIZE) does the pool
refill the slot in the background for them, giving up within the pool timeout.

This leans on psycopg_pool internals (pinned in requirements.txt); tests/db/test_pool_faults.py
fails if an upgrade changes them.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.pool import AddConnection, MaintenanceTask

from chalicelib.db.types import Conn


class OnDemandPool(ConnectionPool[Conn]):
    """ConnectionPool whose connections are opened by the request that needs one (see the module)."""

    def __init__(self, conninfo: str, *, connect_timeout: float, **kwargs: Any) -> None:
        self._connect_timeout = connect_timeout
        super().__init__(conninfo, **kwargs)

    def _get_ready_connection(self, timeout: float | None) -> Conn | None:
        # Called under the pool's lock, like NullConnectionPool's connect (bounded by connect_timeout).
        if self._pool or self._nconns >= self.max_size:
            return super()._get_ready_connection(timeout)
        if timeout is not None and timeout <= 0.0:
            raise PoolTimeout()
        conn = self._connect(timeout=self._connect_timeout if timeout is None else min(timeout, self._connect_timeout))
        self._nconns += 1
        return conn

    def _getconn_with_check_loop(self, deadline: float) -> Conn:
        # A connection that fails its check is closed and the next one taken at once (no backoff: there
        # is no background reconnection to wait for). After a restart every idle connection may be
        # dead: one try per slot, and the last one opens a new connection.
        failure: Exception | None = None
        for _ in range(self.max_size + 1):
            conn = self._getconn_unchecked(deadline - monotonic())
            try:
                self._check_connection(conn)
            except Exception as exc:  # noqa: BLE001 - as psycopg_pool: a connection failing any check is not handed out
                failure = exc
                conn.close()
                self._putconn(conn, from_getconn=True)
                continue
            except BaseException:
                self._putconn(conn, from_getconn=True)
                raise
            return conn
        assert failure is not None
        raise failure

    def run_task(self, task: MaintenanceTask) -> None:
        """Run a maintenance task, except a reconnection nobody waits for: that one only frees its slot."""
        if isinstance(task, AddConnection):
            with self._lock:
                if not self._waiting:
                    self._nconns -= 1
                    if task.growing:
                        self._growing = False
                    return
        super().run_task(task)
