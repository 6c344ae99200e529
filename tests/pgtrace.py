"""libpq protocol traces of the pooled connection: which messages a piece of code sent, and in how many
round trips (used by tests and benchmarks that prove batching without timing anything)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg


def trace_lines(db: Any, action: Callable[[], object]) -> list[str]:
    """The frontend (F) and backend (B) message lines libpq traced on `db`'s pooled connection(s) while
    `action` ran (the pool must have size 1 for the trace to cover the action's connection)."""
    with tempfile.TemporaryDirectory() as tmp:
        trace_path = Path(tmp) / "trace"
        with open(trace_path, "w") as trace_file:
            with db.pool.connection() as conn:
                conn.pgconn.trace(trace_file.fileno())
                conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                action()
            finally:
                with db.pool.connection() as conn:
                    conn.pgconn.untrace()
        return [line for line in trace_path.read_text().splitlines() if line[:1] in ("F", "B")]


def round_trips(lines: list[str]) -> list[list[str]]:
    """Frontend message lines grouped by round trip: a batch is a run of frontend messages, and each one
    sent after a backend message starts a new round trip."""
    batches: list[list[str]] = []
    previous = "B"
    for line in lines:
        if line.startswith("F"):
            if previous == "B":
                batches.append([])
            batches[-1].append(line)
        previous = line[0]
    return batches
