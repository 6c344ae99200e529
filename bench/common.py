"""Shared bench setup: the embedded server under .data/bench-postgres, a migrated bench database."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from chalicelib.db.embedded import start_embedded, stop_embedded
from chalicelib.db.migrate import APP_ROLE, bootstrap, migrate, role_conninfo

ROOT = Path(__file__).resolve().parent.parent
DBNAME = "crm_bench"


@dataclass(frozen=True)
class BenchDatabase:
    """Connection strings of the bench database and the unix socket of its server."""

    admin_url: str
    app_url: str
    socket_path: str


def bench_environment() -> None:
    """Local settings for benchmarks, kept apart from a developer's .data."""
    os.environ["STAGE"] = "local"
    os.environ["DATA_DIR"] = str(ROOT / ".data" / "bench")
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("SENTRY_DSN", None)


@contextlib.contextmanager
def bench_database() -> Iterator[BenchDatabase]:
    """Start (or reuse) the bench server, migrate the bench database, stop the server afterwards."""
    server, started = start_embedded(ROOT / ".data" / "bench-postgres")
    try:
        admin = str(server.get_uri())
        bootstrap(admin, DBNAME)
        migrate(role_conninfo(admin, dbname=DBNAME))
        yield BenchDatabase(role_conninfo(admin, dbname=DBNAME), role_conninfo(admin, user=APP_ROLE, dbname=DBNAME),
                            str(Path(str(server.pgdata)) / ".s.PGSQL.5432"))
    finally:
        if started:
            stop_embedded(server)


def per_call(fn: Callable[[], object], n: int) -> float:
    """Mean seconds per call over n calls."""
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def interleaved_medians(paths: dict[str, Callable[[], object]], *, rounds: int = 7, n: int = 1000,
                        warmup: int = 300) -> dict[str, float]:
    """Median seconds per call of each path, measured in interleaved rounds (noise hits all alike)."""
    for fn in paths.values():
        per_call(fn, warmup)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            samples[name].append(per_call(fn, n))
    return {name: statistics.median(values) for name, values in samples.items()}
