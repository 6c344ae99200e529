"""B10: import 10,000 contacts from CSV through the real handler vs one executemany of the same rows.

Paths, same run, alternating (unix socket, pool size 1, crm_app under RLS everywhere):
  - floor: one `executemany` of `INSERT INTO contacts (tenant_id, first_name, last_name, email, phone)`
    with the same 10,000 rows, in one transaction (the tenant fixed at connection start, as in B1);
  - import: `POST /workspaces/{id}/imports/contacts` with the text/csv body through the app's Lambda
    entry point (cookie + CSRF + Origin, middleware, authorization, CSV parsing, per-row validation,
    phone normalization, the email upsert, the audit entry).
Each round uses new addresses, so both paths create 10,000 contacts every time. Both pay the same
search-words trigger (migration 0015). Target: import rows/s >= 0.5x the floor's.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg.conninfo import make_conninfo

from bench.b3_write import _seed
from bench.common import bench_database, bench_environment, lambda_invoker

ROWS = 10_000


def _rows(tag: str) -> list[tuple[str, str, str, str]]:
    """10,000 distinct contacts: names, an address unique to this round, a valid US number."""
    return [(f"First{i}", f"Last{i}", f"c{i}.{tag}@example.com", f"+1 415 555 {i % 10_000:04d}") for i in range(ROWS)]


def _csv(rows: list[tuple[str, str, str, str]]) -> bytes:
    return ("first_name,last_name,email,phone\n" + "".join(",".join(r) + "\n" for r in rows)).encode()


def run() -> dict[str, float]:
    """Run B10 and print its figures; returns them for the summary."""
    bench_environment()
    import app as app_module
    from chalicelib.auth import sessions
    from chalicelib.crm.values import normalize_phone
    from chalicelib.db.pool import Database, use_database
    from chalicelib.settings import get_settings

    settings = get_settings()
    rounds = int(os.environ.get("B10_ROUNDS", "5"))
    with bench_database() as bench:
        workspace, _user, token = _seed(bench.admin_url, bench.app_url)
        db = Database(bench.app_url, size=1)
        use_database(db)
        floor = psycopg.connect(make_conninfo(bench.app_url, options=f"-c app.tenant_id={workspace}"))
        headers = {"Cookie": f"{settings.session_cookie_name}={token}", "Origin": settings.public_origin,
                   "X-CSRF-Token": sessions.csrf_token(token, settings), "Content-Type": "text/csv"}
        url = f"/workspaces/{workspace}/imports/contacts"

        def executemany(rows: list[tuple[str, str, str, str]]) -> Callable[[], object]:
            # The floor stores what the import stores: E.164 numbers (normalized before the clock starts).
            stored = [(workspace, first, last, email, normalize_phone(phone)) for first, last, email, phone in rows]

            def insert() -> object:
                with floor.transaction(), floor.cursor() as cur:
                    cur.executemany("INSERT INTO contacts (tenant_id, first_name, last_name, email, phone)"
                                    " VALUES (%s, %s, %s, %s, %s)", stored)
                return None
            return insert

        def imported(rows: list[tuple[str, str, str, str]]) -> Callable[[], object]:
            invoke = lambda_invoker(app_module.app, "POST", url, headers, _csv(rows))

            def post() -> object:
                response = invoke()
                assert response.status_code == 200, response.body
                return response
            return post

        samples: dict[str, list[float]] = {"executemany (floor)": [], "CSV import handler": []}
        try:
            for round_ in range(rounds + 1):  # the first round warms up and is not counted
                makers = [("executemany (floor)", executemany), ("CSV import handler", imported)]
                for name, make in makers if round_ % 2 else reversed(makers):
                    action = make(_rows(uuid.uuid4().hex[:10]))  # untimed: the data of this call
                    started = time.perf_counter()
                    result = action()
                    elapsed = time.perf_counter() - started
                    if name == "CSV import handler":
                        assert '"created":10000' in str(result.body), result.body  # type: ignore[attr-defined]
                    if round_:
                        samples[name].append(elapsed)
        finally:
            floor.close()
            use_database(None)
            db.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["executemany (floor)"] / medians["CSV import handler"]
    print(f"B10 import {ROWS:,} contacts (unix socket, pool size 1, median of {rounds})")
    for name, median in medians.items():
        print(f"  {name:22s} {median * 1000:8.1f} ms   {ROWS / median:9,.0f} rows/s")
    print(f"  import rows/s = {ratio:4.2f}x the floor's (target >= 0.5) {'PASS' if ratio >= 0.5 else 'FAIL'}")
    return {"B10 import rows/s ratio": ratio,
            "B10 import rows/s": ROWS / medians["CSV import handler"],
            "B10 floor rows/s": ROWS / medians["executemany (floor)"]}


if __name__ == "__main__":
    run()
