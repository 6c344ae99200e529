"""B6: the batched audit purge vs one big DELETE, on identical copies of 1M audit rows (40% expired).

The rows belong to 100 workspaces and were written in time order (as the API writes them). Each
side gets a fresh copy of the same seeded database (CREATE DATABASE ... TEMPLATE): the floor is one
`DELETE FROM audit_log WHERE occurred_at < cutoff` as the superuser; ours is purge_audit_log through
the jobs role, workspace by workspace, in short batch transactions timed by its on_batch hook.
Targets: total time <= 1.5x the floor, longest transaction <= 50 ms.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from bench.common import bench_database, bench_environment
from chalicelib.db.migrate import JOBS_ROLE, bootstrap, migrate, role_conninfo
from chalicelib.db.pool import Database
from chalicelib.jobs.purge import Batch, purge_audit_log

SEED_DB = "crm_bench_b6_seed"
ROWS = 1_000_000
WORKSPACES = 100
NOW = datetime(2025, 6, 1, tzinfo=UTC)
RETENTION = timedelta(days=365)
# Rows are spread evenly over SPAN ending at NOW, so 40% of them are older than the retention.
SPAN = RETENTION / 0.6
ROUNDS = 5


def _seed(admin_url: str) -> None:
    """The seeded database (kept between runs while it holds the expected rows)."""
    bootstrap(admin_url, SEED_DB)
    url = role_conninfo(admin_url, dbname=SEED_DB)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM audit_log").fetchone()
        if row is not None and row[0] == ROWS:
            return
        conn.execute("TRUNCATE audit_log")
        conn.execute("DELETE FROM workspaces")
        conn.execute("INSERT INTO workspaces (name) SELECT 'b6 ' || g FROM generate_series(1, %s) g", (WORKSPACES,))
        # Oldest first (g descending), each row to workspace g mod 100: the physical order of real use.
        conn.execute(
            "INSERT INTO audit_log (tenant_id, occurred_at, actor_user_id, action, target_type, target_id, ip,"
            " user_agent, details)"
            " SELECT w.id, %(now)s - %(span)s * (g::float8 / %(rows)s), gen_random_uuid(), 'lead.updated', 'lead',"
            "  gen_random_uuid(), '203.0.113.7', 'Mozilla/5.0 (X11; Linux x86_64) bench',"
            "  jsonb_build_object('field', 'stage', 'n', g)"
            " FROM generate_series(%(rows)s, 1, -1) g"
            " JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM workspaces) w"
            "   ON w.n = g %% %(workspaces)s",
            {"now": NOW, "span": SPAN, "rows": ROWS, "workspaces": WORKSPACES})
        conn.execute("VACUUM (ANALYZE) audit_log")


def _copy(admin_url: str, name: str) -> str:
    """A fresh copy of the seeded database; returns its superuser conninfo."""
    with psycopg.connect(role_conninfo(admin_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(SEED_DB)))
    url = role_conninfo(admin_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM audit_log")  # read it once: both sides start with a warm cache
    return url


def _drop(admin_url: str, name: str) -> None:
    with psycopg.connect(role_conninfo(admin_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _floor(url: str) -> tuple[float, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        cur = conn.execute("DELETE FROM audit_log WHERE occurred_at < %s", (NOW - RETENTION,))
        return time.perf_counter() - started, cur.rowcount


def _ours(admin_url: str, name: str) -> tuple[float, int, list[Batch]]:
    batches: list[Batch] = []
    db = Database(role_conninfo(admin_url, user=JOBS_ROLE, dbname=name), size=1, name="jobs")
    try:
        started = time.perf_counter()
        outcome = purge_audit_log(db, NOW, on_batch=batches.append)
        seconds = time.perf_counter() - started
    finally:
        db.close()
    assert not outcome.failed
    return seconds, outcome.counts.get("audit_rows", 0), batches


def run() -> dict[str, float]:
    """Run B6 and print its figures; returns them for the summary."""
    with bench_database() as bench:
        admin = bench.admin_url
        _seed(admin)
        floors: list[float] = []
        ours: list[float] = []
        longest: list[float] = []
        all_batches = 0
        floor_rows = our_rows = 0
        for round_ in range(ROUNDS):
            for side in ("floor", "ours") if round_ % 2 == 0 else ("ours", "floor"):  # alternate who goes first
                name = f"crm_bench_b6_{side}"
                url = _copy(admin, name)
                if side == "floor":
                    seconds, floor_rows = _floor(url)
                    floors.append(seconds)
                else:
                    seconds, our_rows, batches = _ours(admin, name)
                    ours.append(seconds)
                    longest.append(max(b.seconds for b in batches))
                    all_batches = sum(1 for b in batches if b.table == "audit_log")
                _drop(admin, name)
            assert our_rows == floor_rows, (our_rows, floor_rows)
        floor_s, ours_s = statistics.median(floors), statistics.median(ours)
        results = {
            "B6 floor one DELETE s": floor_s,
            "B6 batched purge s": ours_s,
            "B6 ratio": ours_s / floor_s,
            "B6 longest transaction ms": max(longest) * 1000,
        }
        print(f"B6 purge: {floor_rows} of {ROWS} audit rows in {WORKSPACES} workspaces, median of {ROUNDS} rounds")
        print(f"  one DELETE (superuser)        {floor_s:8.2f} s")
        print(f"  purge_audit_log (jobs, batch) {ours_s:8.2f} s   {all_batches} batches")
        print(f"  ratio {results['B6 ratio']:.2f}x (target <= 1.5x)")
        print(f"  longest batch transaction {results['B6 longest transaction ms']:.1f} ms (target <= 50 ms)")
        return results


if __name__ == "__main__":
    bench_environment()
    run()
