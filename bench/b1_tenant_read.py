"""B1: a primary-key read through tenant_tx vs a raw autocommit read (1 thread, pool size 1).

Prints the time ratio (target <= 1.3x) and the round-trip counts, measured through a delay proxy:
with D ms added to every client->server write, elapsed / D is the number of round trips.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
from psycopg.conninfo import make_conninfo

from bench.common import DBNAME, bench_database, interleaved_medians, per_call
from bench.delayproxy import DelayProxy
from chalicelib.db.migrate import APP_ROLE
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx

OTHER_TENANTS = 20_000
QUERY = "SELECT id, name, created_at FROM workspaces WHERE id = %s"


def _seed(admin_url: str) -> uuid.UUID:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        count = conn.execute("SELECT count(*) FROM workspaces").fetchone()
        if count is None or count[0] < OTHER_TENANTS:
            # Many other tenants' rows: RLS must still be one index probe, not a scan.
            conn.execute("INSERT INTO workspaces (name) SELECT 'other ' || g FROM generate_series(1, %s) g",
                         (OTHER_TENANTS,))
            conn.execute("ANALYZE workspaces")
        row = conn.execute("SELECT id FROM workspaces ORDER BY created_at, id LIMIT 1").fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _paths(db: Database, baseline: Database, tenant: uuid.UUID) -> dict[str, Callable[[], object]]:
    def raw() -> object:
        with baseline.pool.connection() as conn:
            return conn.execute(QUERY, (tenant,)).fetchone()

    def tenant_fetch_inside() -> object:
        with tenant_tx(tenant, db=db) as conn:
            return conn.execute(QUERY, (tenant,)).fetchone()

    def tenant_fetch_after() -> object:
        with tenant_tx(tenant, db=db) as conn:
            cur = conn.execute(QUERY, (tenant,))
        return cur.fetchone()

    return {"raw autocommit": raw, "tenant_tx (fetch inside)": tenant_fetch_inside,
            "tenant_tx (fetch after block)": tenant_fetch_after}


def _baseline(conninfo: str, tenant: uuid.UUID) -> Database:
    """The floor: the same role and pool settings, the tenant fixed at connection start.

    A plain autocommit read under RLS sees no row at all, so the floor's sessions carry the tenant
    as a startup parameter (no statement, no round trip). The app never does this: a session-level
    tenant would leak through the pool; here each floor connection serves one tenant only.
    """
    return Database(make_conninfo(conninfo, options=f"-c app.tenant_id={tenant}"), size=1, name="floor")


def run() -> dict[str, float]:
    """Run B1 and print its figures; returns them for the summary."""
    with bench_database() as bench:
        tenant = _seed(bench.admin_url)
        db = Database(bench.app_url, size=1)
        baseline = _baseline(bench.app_url, tenant)
        paths = _paths(db, baseline, tenant)
        for fn in paths.values():
            assert fn() is not None  # every path really reads the row
        medians = interleaved_medians(paths)
        base = medians["raw autocommit"]
        results: dict[str, float] = {}
        print("B1 tenant read (unix socket, pool size 1, 1 thread, median of 7 x 1000 reads)")
        for name, median in medians.items():
            results[f"B1 {name} ratio"] = median / base
            print(f"  {name:32s} {median * 1e6:8.1f} us/read   ratio {median / base:5.2f}x")
        db.close()
        baseline.close()
        results.update(_round_trips(bench.socket_path, tenant))
        return results


def _round_trips(socket_path: str, tenant: uuid.UUID, delay: float = 0.025) -> dict[str, float]:
    proxy = DelayProxy(socket_path, delay)
    url = f"host=127.0.0.1 port={proxy.port} user={APP_ROLE} dbname={DBNAME}"
    db, baseline = Database(url, size=1), _baseline(url, tenant)
    results: dict[str, float] = {}
    try:
        print(f"B1 round trips per read (delay proxy adds {delay * 1000:.0f} ms per client write)")
        for name, fn in _paths(db, baseline, tenant).items():
            fn()
            trips = per_call(fn, 12) / delay
            results[f"B1 {name} round trips"] = round(trips)
            print(f"  {name:32s} {trips:5.2f} -> {round(trips)} round trips")
    finally:
        db.close()
        baseline.close()
        proxy.close()
    return results


if __name__ == "__main__":
    run()
