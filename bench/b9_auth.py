"""B9: an authenticated workspace read (session cookie + membership) vs the same handler without auth.

All go through chalice.test.Client and the full middleware, and read their row after the transaction
block (as the API's routes do). Two authenticated variants: workspace_read, where the authorization
travels with the read (no extra round trip), and workspace_scope, which awaits it first (one extra).
Target <= 1.5x, and at most one extra database round trip (shown through a delay proxy).
Also prints the magic-link enumeration check: request timings for known vs unknown addresses
(300 samples each, Mann-Whitney U; a large p means no measurable difference).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg
from chalice.app import Blueprint, Response
from chalice.test import Client

from bench.common import DBNAME, bench_database, bench_environment, interleaved_medians, member_with_session, per_call
from bench.delayproxy import DelayProxy
from chalicelib.db.migrate import APP_ROLE

bp = Blueprint("bench_auth")


def _read(workspace_id: str) -> Response:
    from chalicelib.db.tenancy import tenant_tx
    from chalicelib.http import json_response

    with tenant_tx(workspace_id) as conn:
        found = conn.execute("SELECT id, name FROM workspaces WHERE id = %s", (workspace_id,)).fetchone
    row = found()
    return json_response({"id": str(row[0]), "name": row[1]} if row else {})


def _register() -> None:
    from chalicelib.auth.principal import workspace_read, workspace_scope
    from chalicelib.http import endpoint, json_response

    @endpoint(bp, "/bench/{workspace_id}/open", "GET", summary="no authentication")
    def open_read(workspace_id: str) -> Response:
        return _read(workspace_id)

    @endpoint(bp, "/bench/{workspace_id}/authed", "GET", summary="session + membership, then the same read")
    def authed_read(workspace_id: str) -> Response:
        with workspace_scope(bp.current_request, workspace_id) as (conn, _principal):
            found = conn.execute("SELECT id, name FROM workspaces WHERE id = %s", (workspace_id,)).fetchone
        row = found()
        return json_response({"id": str(row[0]), "name": row[1]} if row else {})

    @endpoint(bp, "/bench/{workspace_id}/read", "GET", summary="session + membership travelling with the read")
    def travelling_read(workspace_id: str) -> Response:
        with workspace_read(bp.current_request, workspace_id) as conn:
            found = conn.execute("SELECT id, name FROM workspaces WHERE id = %s", (workspace_id,)).fetchone
        row = found()
        return json_response({"id": str(row[0]), "name": row[1]} if row else {})


def _seed(admin_url: str, app_url: str) -> tuple[str, str]:
    """A user with a session in one workspace; returns (workspace id, cookie value)."""
    workspace = uuid.uuid4()
    _user, token = member_with_session(admin_url, app_url, workspace)
    return str(workspace), token


def _requests(client: Client, workspace: str, cookie: str) -> dict[str, Callable[[], object]]:
    header = {"Cookie": f"crm_session={cookie}"}

    def open_read() -> object:
        response = client.http.get(f"/bench/{workspace}/open")
        assert response.status_code == 200
        return response

    def authed_read() -> object:
        response = client.http.get(f"/bench/{workspace}/authed", headers=header)
        assert response.status_code == 200, response.body
        return response

    def travelling_read() -> object:
        response = client.http.get(f"/bench/{workspace}/read", headers=header)
        assert response.status_code == 200, response.body
        return response

    return {"no auth": open_read, "authorization with the read": travelling_read,
            "authorization awaited": authed_read}


def run() -> dict[str, float]:
    """Run B9 and the enumeration check; print and return the figures."""
    bench_environment()
    os.environ["MAGIC_LINK_LIMIT_PER_IP"] = "100000"  # the enumeration check sends 600 requests from one IP
    from chalicelib.api import create_app
    from chalicelib.db.pool import Database, use_database

    _register()
    app = create_app("bench", [bp], max_body_bytes=65536)
    results: dict[str, float] = {}
    with bench_database() as bench:
        workspace, cookie = _seed(bench.admin_url, bench.app_url)
        use_database(Database(bench.app_url, size=1))
        with Client(app) as client:
            medians = interleaved_medians(_requests(client, workspace, cookie), rounds=7, n=500, warmup=200)
        base = medians["no auth"]
        print("B9 authenticated request (chalice.test.Client, pool size 1, median of 7 x 500 requests)")
        for name, median in medians.items():
            results[f"B9 {name} ratio"] = median / base
            print(f"  {name:24s} {median * 1e6:8.1f} us/request   ratio {median / base:5.2f}x (target <= 1.5)")
        delay = 0.025
        proxy = DelayProxy(bench.socket_path, delay)
        use_database(Database(f"host=127.0.0.1 port={proxy.port} user={APP_ROLE} dbname={DBNAME}", size=1))
        print(f"B9 round trips (delay proxy, {delay * 1000:.0f} ms per client write)")
        with Client(app) as client:
            for name, fn in _requests(client, workspace, cookie).items():
                fn()
                trips = per_call(fn, 10) / delay
                results[f"B9 {name} round trips"] = round(trips)
                print(f"  {name:24s} {trips:5.2f} -> {round(trips)} round trips")
        proxy.close()
        use_database(Database(bench.app_url, size=1))
        results.update(_enumeration(bench.admin_url))
        use_database(None)
    return results


def _mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, no tie correction)."""
    ranked = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    rank_sum_a = sum(i + 1 for i, (_, group) in enumerate(ranked) if group == 0)
    n1, n2 = len(a), len(b)
    u = rank_sum_a - n1 * (n1 + 1) / 2
    mean, sd = n1 * n2 / 2, math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return math.erfc(abs(u - mean) / sd / math.sqrt(2))


def _enumeration(admin_url: str, samples: int = 300) -> dict[str, float]:
    import app as app_module

    known = [f"known-{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(samples)]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for email in known:
            conn.execute("INSERT INTO users (email) VALUES (%s)", (email,))
    unknown = [f"nobody-{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(samples)]
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    headers = {"Content-Type": "application/json"}
    with Client(app_module.app) as client:
        for known_email, unknown_email in zip(known, unknown, strict=True):
            for kind, email in (("known", known_email), ("unknown", unknown_email)):
                started = time.perf_counter()
                response = client.http.post("/auth/magic-link", body=json.dumps({"email": email}), headers=headers)
                timings[kind].append(time.perf_counter() - started)
                assert response.status_code == 202
    p = _mann_whitney_p(timings["known"], timings["unknown"])
    known_us, unknown_us = (statistics.median(timings[k]) * 1e6 for k in ("known", "unknown"))
    delta = known_us - unknown_us
    print(f"Magic-link enumeration ({samples} samples per class): median known {known_us:.0f} us, unknown "
          f"{unknown_us:.0f} us, delta {delta:+.0f} us, Mann-Whitney p = {p:.2f} (p > 0.05: no measurable difference)")
    return {"enumeration p": p, "enumeration delta us": delta}


if __name__ == "__main__":
    run()
