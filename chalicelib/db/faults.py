"""Which database failures mean "the database is unavailable" (a 503 to retry), not a bug (a 500)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg_pool import PoolTimeout, TooManyRequests

from chalicelib.errors import DatabaseUnavailable

# SQLSTATE classes that say nothing about the request and everything about the server's state: 08
# connection exception, 28 sign-in refused, 53 insufficient resources (53300: out of connection slots),
# 57 operator intervention (57014 a statement cancelled by statement_timeout or our deadline, 57P01/02
# shutdown, 57P03 starting up). A retry later can succeed; a 500 would call it a bug.
_UNAVAILABLE_CLASSES = ("08", "28", "53", "57")
# And two waits that hit their bound: a lock held too long, a transaction left idle too long.
_UNAVAILABLE_STATES = frozenset({"55P03", "25P03"})


def unavailable_kind(exc: BaseException) -> str | None:
    """A short, loggable name of the failure when `exc` means the database is unavailable, else None.

    The name is an SQLSTATE or a fixed word, never the driver's message (it may quote a host, a user
    or a row value).
    """
    if isinstance(exc, TooManyRequests):
        return "pool-busy"
    if isinstance(exc, PoolTimeout):
        return "pool-timeout"
    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        return "connect-timeout"
    if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.errors.PipelineAborted):
        # PipelineAborted: a statement skipped because an earlier one failed (a refused authorization).
        return None
    state = exc.sqlstate
    if state is None:
        # Raised by the client, not the server: refused or failed connection, a socket closed under a
        # query (server gone, our deadline), a closed connection used again.
        return "connection" if isinstance(exc, psycopg.OperationalError) else None
    if state.startswith(_UNAVAILABLE_CLASSES) or state in _UNAVAILABLE_STATES:
        return state
    return None


@contextlib.contextmanager
def unavailable_as_domain_error() -> Iterator[None]:
    """Re-raise the database's unavailability as DatabaseUnavailable; any other error unchanged."""
    try:
        yield
    except Exception as exc:
        kind = unavailable_kind(exc)
        if kind is None:
            raise
        raise DatabaseUnavailable(kind) from exc
