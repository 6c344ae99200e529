"""Client-side deadlines: a wait on the database that outlives its budget is cut short.

A frozen server (SIGSTOP, a hung host, a network that drops packets silently) answers nothing, so
neither statement_timeout (it runs on that server) nor TCP keepalives (the kernel still acknowledges)
end the wait. The request middleware gives each API request a budget (DB_REQUEST_DEADLINE_S, well
under API Gateway's 29 s); `watch(conn)` arms an alarm for the rest of it. When the alarm fires, the
query is first cancelled (a live but slow server stops it, the connection survives), then, if the
request is still waiting at the end of the budget, the connection's socket is shut down: the blocked
read sees EOF at once and the request ends with a connection error, which becomes a 503.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar

from chalicelib.db.types import Conn

log = logging.getLogger("crm.db.deadline")
# The cancel gets at most this long (and at most a quarter of the budget) before the hard stop.
CANCEL_GRACE_S = 1.0
_budget_end: ContextVar[float | None] = ContextVar("crm_db_budget_end", default=None)


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Bound every database wait inside the block to `seconds` from now (nested budgets: the tighter)."""
    end = time.monotonic() + seconds
    outer = _budget_end.get()
    token = _budget_end.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _budget_end.reset(token)


def remaining() -> float | None:
    """Seconds left in the current budget (negative once spent), or None outside any budget."""
    end = _budget_end.get()
    return None if end is None else end - time.monotonic()


def time_for_call(cap: float, reserve: float = 3.0) -> float | None:
    """Seconds one outside call (a provider's API) may take: at most `cap`, and leaving `reserve` of the request's
    budget for the database work after it; None when the budget cannot spare even a second."""
    left = remaining()
    if left is None:
        return cap
    spare = min(cap, left - reserve)
    return spare if spare >= 1.0 else None


class _Alarm:
    """One armed deadline for one connection (small: a busy process holds one per request in flight)."""

    __slots__ = ("cancel_at", "conn", "end", "lock")

    def __init__(self, conn: Conn, cancel_at: float, end: float) -> None:
        # None once the guarded block has ended: the connection is no longer ours to touch.
        self.conn: Conn | None = conn
        self.cancel_at = cancel_at
        self.end = end
        self.lock = threading.Lock()


class _Watchdog:
    """One daemon thread for every alarm of the process: arming costs a heap push, not a thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, alarm: _Alarm) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="crm-db-deadline", daemon=True)
                self._thread.start()
            while self._heap and self._heap[0][2].conn is None:
                heapq.heappop(self._heap)  # disarmed: dropped here, so the heap holds only requests in flight
            # Only an alarm earlier than every other one changes when the thread must wake.
            wake = not self._heap or alarm.cancel_at < self._heap[0][0]
            heapq.heappush(self._heap, (alarm.cancel_at, next(self._order), alarm))
            if wake:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                alarm = heapq.heappop(self._heap)[2]
            if alarm.conn is not None:
                # Its own thread: a cancel may wait on a frozen server, and other alarms must not.
                threading.Thread(target=_interrupt, args=(alarm,), name="crm-db-interrupt", daemon=True).start()


_watchdog = _Watchdog()


def _interrupt(alarm: _Alarm) -> None:
    with alarm.lock:
        if alarm.conn is None:
            return
        log.warning("database wait past its deadline: cancelling")
        with contextlib.suppress(Exception):  # a frozen server may not even take the cancel request
            alarm.conn.cancel_safe(timeout=max(0.1, alarm.end - time.monotonic()))
    while alarm.conn is not None and time.monotonic() < alarm.end:
        time.sleep(0.02)  # the cancelled statement's error is on its way: let the request end by itself
    with alarm.lock:
        if alarm.conn is not None:
            log.warning("database wait past its deadline: closing the connection")
            shut_down_socket(alarm.conn)


def shut_down_socket(conn: Conn) -> None:
    """End every wait on `conn` now: the socket is shut down (not closed: closing a descriptor another
    thread polls does not wake it, and the number could be reused), so a blocked read sees EOF."""
    with contextlib.suppress(Exception):  # already closed or broken: nothing is waiting on it
        duplicate = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()


@contextlib.contextmanager
def watch(conn: Conn, *, seconds: float | None = None) -> Iterator[None]:
    """Cut `conn`'s waits short when the block outlives the current budget (or `seconds`, if tighter).

    Without a budget and without `seconds` (jobs, scripts) nothing is armed. When the block ends, the
    alarm is disarmed before the connection goes back to the pool, so it never touches the next user's
    work: disarming waits for a cancel in flight.
    """
    left = remaining()
    if seconds is not None:
        left = seconds if left is None else min(left, seconds)
    if left is None:
        yield
        return
    now = time.monotonic()
    end = now + max(0.0, left)
    alarm = _Alarm(conn, end - min(CANCEL_GRACE_S, max(0.0, left) / 4), end)
    _watchdog.arm(alarm)
    try:
        yield
    finally:
        with alarm.lock:
            alarm.conn = None
