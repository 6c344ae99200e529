"""Process-wide, lazily opened connection pools (one per database role)."""

from __future__ import annotations

import contextlib
import select
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from psycopg import Connection, Cursor, pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool
from pydantic_core import from_json

from chalicelib.db import deadline
from chalicelib.db.faults import unavailable_as_domain_error
from chalicelib.db.iam import PasswordSource, RdsIamTokens, with_default_sslrootcert
from chalicelib.db.ondemand import OnDemandPool
from chalicelib.db.types import Conn
from chalicelib.errors import DatabaseUnavailable
from chalicelib.settings import Settings, get_settings

# A connection last checked out less than this long ago is checked without a round trip (see
# CheckoutCheck); one idle for longer gets the pool's full check, an empty query.
QUIET_CHECK_SECONDS = 30.0
_checked_out_at: weakref.WeakKeyDictionary[Conn, tuple[float, float]] = weakref.WeakKeyDictionary()
# The Database whose pool opened a connection (for side_database: same server, same way of signing in).
_opened_by: weakref.WeakKeyDictionary[Conn, Database] = weakref.WeakKeyDictionary()
# Seconds a new connection may take to open, when settings do not say (DB_CONNECT_TIMEOUT_S's default).
DEFAULT_CONNECT_TIMEOUT_S = 5
# A peer that vanishes (host down, failover, a network that drops packets) sends no FIN: without these an
# idle pooled connection looks alive for hours and a sent query waits for an answer that never comes.
# TCP only (a unix socket has no peer to lose). A connection string that sets one of them wins.
TCP_BOUNDS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,  # seconds of silence before the first probe
    "keepalives_interval": 5,  # seconds between probes
    "keepalives_count": 3,  # unanswered probes before the connection is dropped
    "tcp_user_timeout": 10_000,  # ms that sent data may stay unacknowledged (well under the request deadline)
}


class CheckoutCheck:
    """The pool's checkout check, without a round trip for a connection that was just in use.

    A server that ends a session (restart, failover, pg_terminate_backend, an idle timeout) sends an
    error and closes the socket, so a dead idle connection has input waiting: that, or a last checkout
    more than `quiet_seconds` ago (a frozen Lambda, a quiet night), gets the full check, which raises
    and makes the pool open a new connection. Otherwise the request saves a round trip (cf. HikariCP's
    aliveBypassWindowMs). The time is taken at checkout, not at return: a pool `reset` callback would
    move every return onto a worker thread, and the next checkout would wait for it. Idle time is read
    on two clocks and the longer wins: the monotonic one may stand still while a Lambda sandbox is
    frozen, the wall clock may be stepped; either saying "long" gets the full check.
    """

    def __init__(self, quiet_seconds: float, *, ping_seconds: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self.quiet_seconds = quiet_seconds
        self.ping_seconds = ping_seconds

    def __call__(self, conn: Conn) -> None:
        now = (time.monotonic(), time.time())
        last = _checked_out_at.get(conn)
        idle = max(now[0] - last[0], now[1] - last[1]) if last is not None else None
        if idle is None or idle > self.quiet_seconds or _has_input(conn):
            # Bounded: a frozen server never answers the ping; the connection then counts as dead.
            with deadline.watch(conn, seconds=self.ping_seconds):
                ConnectionPool.check_connection(conn)
        _checked_out_at[conn] = now


def _has_input(conn: Conn) -> bool:
    # An idle connection is owed nothing by the server: any input (an error, EOF) means trouble.
    # poll, not select: select cannot watch descriptors numbered 1024 and above.
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class BinaryCursor(Cursor[TupleRow]):
    """Results in PostgreSQL's binary format: the server skips text output (timestamptz_out is costly)
    and the client decodes UUIDs and timestamps from their bytes. The Python values are the same."""

    def __init__(self, connection: Connection[Any], **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.format = pq.Format.BINARY


class DatabaseNotConfigured(RuntimeError):
    """No connection string is known for the requested role."""


class Database:
    """A psycopg pool for one role; opened on first use so cold starts make no connection."""

    def __init__(self, conninfo: str, *, size: int = 1, timeout: float = 5.0,
                 prepare_threshold: int | None = None, name: str = "app",
                 quiet_check_seconds: float = QUIET_CHECK_SECONDS,
                 password_source: PasswordSource | None = None,
                 connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self._conninfo = conninfo
        self._password_source = password_source
        self._connect_timeout = connect_timeout
        self._check = CheckoutCheck(quiet_check_seconds, ping_seconds=connect_timeout)
        self._size = size
        self._timeout = timeout
        self._prepare_threshold = prepare_threshold
        self._name = name
        self._pool: ConnectionPool[Conn] | None = None
        self._kwargs: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, role: str = "app") -> Database:
        """Build the pool description for `role` ("app" or "jobs") from settings."""
        secret = settings.database_url if role == "app" else settings.jobs_database_url
        if secret is None:
            raise DatabaseNotConfigured(f"no connection string for the {role} role")
        conninfo = with_default_sslrootcert(secret.get_secret_value())
        # Settings have checked the string (one host, a user, no password, sslmode=verify-full).
        tokens = RdsIamTokens.for_conninfo(conninfo) if settings.db_iam_auth else None
        return cls(conninfo, size=settings.db_pool_size, timeout=settings.db_pool_timeout,
                   prepare_threshold=settings.db_prepare_threshold, name=role, password_source=tokens,
                   connect_timeout=settings.db_connect_timeout_s)

    @property
    def conninfo(self) -> str:
        """The connection string (a secret: never log it)."""
        return self._conninfo

    @property
    def pool(self) -> ConnectionPool[Conn]:
        """The open pool (created on first access)."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    kwargs: dict[str, Any] = {
                        # autocommit: a statement outside tenant_tx's transaction has no tenant and
                        # so sees nothing; no implicit transaction can outlive a request.
                        "autocommit": True,
                        # None disables server-side prepared statements, which pin RDS Proxy sessions.
                        "prepare_threshold": self._prepare_threshold,
                        "application_name": f"crm-{self._name}",  # never PII (visible to all roles)
                        "cursor_factory": BinaryCursor,
                        # Every wait of a new connection is bounded (psycopg enforces at least 2 s).
                        "connect_timeout": self._connect_timeout,
                        **_tcp_bounds(self._conninfo),
                    }
                    self._kwargs = kwargs
                    self._pool = OnDemandPool(
                        self._conninfo, connect_timeout=self._connect_timeout, min_size=0, max_size=self._size,
                        timeout=self._timeout, reconnect_timeout=self._timeout,
                        kwargs=self._connect_kwargs if self._password_source is not None else kwargs,
                        configure=self._configure, check=self._check, max_idle=240,
                        name=f"crm-{self._name}", open=True,
                    )
        return self._pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled connection for one unit of work, with every wait bounded.

        The checkout waits at most DB_POOL_TIMEOUT, or what is left of the request's budget
        (chalicelib.db.deadline), and the work inside is cut short when the budget runs out. A database
        that is down, refusing, out of slots, restarting or frozen raises DatabaseUnavailable (a 503),
        never a driver error that would read as a bug.
        """
        left = deadline.remaining()
        timeout = self._timeout if left is None else min(self._timeout, left)
        with unavailable_as_domain_error():
            if timeout <= 0:
                raise DatabaseUnavailable("deadline")
            with self.pool.connection(timeout=timeout) as conn, deadline.watch(conn):
                yield conn

    def _connect_kwargs(self) -> dict[str, Any]:
        """The pool asks this for every NEW connection: a fresh password (IAM token) each time.

        A token lives 15 minutes and is checked only when a connection opens, so a connection may well
        outlive its token; the next connection must not reuse it, and nothing here keeps it.
        """
        assert self._password_source is not None
        return {**self._kwargs, "password": self._password_source()}

    def _configure(self, conn: Conn) -> None:
        """Per new connection: json/jsonb columns are parsed by pydantic-core's parser (several times
        faster than the stdlib's on list pages, where every row carries a `custom` object)."""
        set_json_loads(from_json, conn)
        _opened_by[conn] = self
        # Just opened, so just proven alive: its first checkout needs no ping of its own.
        _checked_out_at[conn] = (time.monotonic(), time.time())

    def ping(self) -> None:
        """One round trip through the pool (readiness); a database that cannot answer raises DatabaseUnavailable."""
        with self.connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close the pool and its connections (idempotent)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def _tcp_bounds(conninfo: str) -> dict[str, int]:
    given = conninfo_to_dict(conninfo)
    return {name: value for name, value in TCP_BOUNDS.items() if name not in given}


def side_database(conn: Conn, *, name: str) -> Database:
    """A one-connection Database to the same server, database and role as `conn`, signing in the same way.

    With IAM authentication `conn`'s own token may have expired since it connected: the side connection
    asks the same password source for a new one instead of reusing it.
    """
    params = conn.info.get_parameters()
    owner = _opened_by.get(conn)
    source = owner._password_source if owner is not None else None
    if source is None and conn.info.password:
        params["password"] = conn.info.password
    return Database(make_conninfo("", **params), size=1, timeout=5.0, name=name, password_source=source,
                    connect_timeout=owner._connect_timeout if owner is not None else DEFAULT_CONNECT_TIMEOUT_S)


_databases: dict[str, Database] = {}
_registry_lock = threading.Lock()


def get_database(role: str = "app") -> Database:
    """The process-wide Database for `role`, built from settings on first use."""
    with _registry_lock:
        db = _databases.get(role)
        if db is None:
            db = _databases[role] = Database.from_settings(get_settings(), role=role)
        return db


def use_database(db: Database | None, role: str = "app") -> None:
    """Install (or with None, forget) the Database for `role`, closing the one it replaces."""
    with _registry_lock:
        old = _databases.pop(role, None)
        if db is not None:
            _databases[role] = db
    if old is not None and old is not db:
        old.close()
