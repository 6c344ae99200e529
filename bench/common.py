"""Shared bench setup: the embedded server under .data/bench-postgres, a migrated bench database."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class LambdaResponse:
    """What the app returned to the Lambda runtime (API Gateway proxy format)."""

    status_code: int
    body: str


def lambda_invoker(app: Any, method: str, path: str, headers: dict[str, str],
                   body: bytes | None = None) -> Callable[[], LambdaResponse]:
    """A call of the app's Lambda entry point, `app(event, context)`, with the event API Gateway sends.

    This is the production handler path. The event is built once (by Chalice's own converter, as its
    local gateway does); chalice.test.Client would also rebuild it, match the route and copy
    os.environ on every call, work that API Gateway does outside the function in production.
    """
    from chalice.local import LambdaContext, LambdaEventConverter, RouteMatcher

    event = LambdaEventConverter(RouteMatcher(list(app.routes)), app.api.binary_types).create_lambda_event(
        method=method, path=path, headers=headers, body=body)
    event["requestContext"]["requestId"] = str(uuid.uuid4())  # API Gateway always sends one

    def invoke() -> LambdaResponse:
        # Each invocation gets its own event, as from the runtime; the app notes its request id in
        # requestContext, the only part it writes to.
        fresh = {**event, "requestContext": dict(event["requestContext"])}
        answer = app(fresh, LambdaContext("api_handler", 1024))
        return LambdaResponse(answer["statusCode"], answer["body"])
    return invoke


def backend_pid(db: Any) -> int:
    """The server process of a pool of size 1 (its one connection)."""
    with db.pool.connection() as conn:
        return int(conn.info.backend_pid)


def _cpu_ns(pid: int) -> int | None:
    # /proc/<pid>/schedstat: nanoseconds on a CPU first (Linux with schedstats; the bench server is local).
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def server_cpu_samples(paths: dict[str, tuple[Callable[[], object], int]], *, rounds: int = 7,
                       n: int = 300) -> dict[str, list[float]] | None:
    """Server CPU seconds per call of each (path, backend pid), one sample per interleaved round; None when
    the server's processes cannot be observed (not Linux, or not a local server)."""
    if any(_cpu_ns(pid) is None for _fn, pid in paths.values()):
        return None
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, (fn, pid) in paths.items():
            before = _cpu_ns(pid)
            for _ in range(n):
                fn()
            after = _cpu_ns(pid)
            assert before is not None and after is not None
            samples[name].append((after - before) / 1e9 / n)
    return samples


def server_cpu_medians(paths: dict[str, tuple[Callable[[], object], int]], *, rounds: int = 7,
                       n: int = 300) -> dict[str, float] | None:
    """Median server CPU seconds per call of each (path, backend pid) over interleaved rounds (None: the
    server's processes cannot be observed)."""
    samples = server_cpu_samples(paths, rounds=rounds, n=n)
    return None if samples is None else {name: statistics.median(values) for name, values in samples.items()}


# One-way delays the network runs add to every client->server write: each round trip then costs the
# proxy's own forwarding (about 0.1 ms here) plus this. Lambda to PostgreSQL in one region is a few
# tenths of a millisecond per round trip, RDS Proxy adds to that.
NETWORK_DELAYS = (0.0002, 0.0005)


def round_trip_us(conninfo: str, n: int = 300) -> float:
    """Median microseconds of `SELECT 1` on one connection: what a round trip costs on that path."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        for _ in range(20):
            conn.execute("SELECT 1").fetchall()
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchall()
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


Paths = tuple[dict[str, Callable[[], object]], list[Any]]


def over_a_network(socket_path: str, build: Callable[[dict[str, Any]], Paths], *, rounds: int,
                   n: int) -> Iterator[tuple[str, dict[str, float]]]:
    """For each of NETWORK_DELAYS: (label with the measured round trip, median seconds per path) of the
    paths `build(via)` makes for connection parameters `via` that reach the database through a proxy in
    its own process delaying every client write. build returns (paths, closables); the first closable
    is the app's Database, installed for the handler path while the paths run."""
    from bench.delayproxy import DelayProxyProcess
    from chalicelib.db.pool import use_database

    for delay in NETWORK_DELAYS:
        proxy = DelayProxyProcess(socket_path, delay)
        via = {"host": "127.0.0.1", "port": proxy.port}
        paths, closables = build(via)
        try:
            rtt = round_trip_us(closables[0].conninfo)
            use_database(closables[0])
            medians = interleaved_medians(paths, rounds=rounds, n=n, warmup=20)
        finally:
            for item in closables:
                item.close()
            use_database(None)
            proxy.close()
        yield f"RTT {rtt / 1000:.2f} ms", medians


def member_with_session(admin_url: str, app_url: str, workspace: uuid.UUID, *, role: str = "owner",
                        create_workspace: bool = True) -> tuple[uuid.UUID, str]:
    """A new user who is a member of `workspace` (created unless it exists), signed in: (user id, cookie value).

    The session is created as sign-in creates it: by the API role, with the user bound (RLS on sessions).
    """
    import psycopg

    from chalicelib import clock
    from chalicelib.audit import Actor
    from chalicelib.auth import sessions
    from chalicelib.db.pool import Database
    from chalicelib.db.tenancy import bind_user, user_tx
    from chalicelib.settings import get_settings

    user = uuid.uuid4()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user, f"bench-{user.hex[:8]}@example.com"))
        if create_workspace:
            conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, 'bench')", (workspace,))
        conn.execute("INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, %s)", (workspace, user, role))
    db = Database(app_url, size=1)
    with user_tx(db=db) as conn:
        bind_user(conn, user)
        token = sessions.create(conn, user_id=user, actor=Actor(), now=clock.now(), settings=get_settings())
    db.close()
    return user, token
