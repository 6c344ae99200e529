"""B3: create a lead (+ stage-history row + audit row) through the real handler vs one autocommit INSERT.

Paths, same run, interleaved (unix socket, pool size 1, crm_app under RLS everywhere):
  - floor: a single autocommit `INSERT INTO leads ...` (the tenant fixed at connection start, as in B1);
  - write transaction: exactly the handler's writes, pipelined through tenant_tx (set_config,
    INSERT lead RETURNING, INSERT stage history, INSERT audit, and the Sync that commits them);
  - handler: `POST /workspaces/{id}/leads` through the app's Lambda entry point with the API Gateway
    event (cookie + CSRF + Origin, middleware, authorization, validation, the writes).
Target: <= 1.5x the floor, and one round trip for the writes after validation. Round trips are counted
twice: through a delay proxy (elapsed / delay, whole request) and from libpq's protocol trace (which
statements travelled together).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from bench.common import (
    DBNAME,
    bench_database,
    bench_environment,
    interleaved_medians,
    lambda_invoker,
    member_with_session,
    over_a_network,
    per_call,
)
from bench.delayproxy import DelayProxy
from chalicelib.db.migrate import APP_ROLE

BODY = {"title": "Bench deal", "value": {"amount_minor": 125_000, "currency": "EUR"}}


def _seed(admin_url: str, app_url: str) -> tuple[uuid.UUID, uuid.UUID, str]:
    """A workspace with its default pipeline and an owner with a session: (workspace, user, session token)."""
    from chalicelib import clock
    from chalicelib.crm import pipelines
    from chalicelib.db.pool import Database
    from chalicelib.db.tenancy import tenant_tx

    workspace = uuid.uuid4()
    user, token = member_with_session(admin_url, app_url, workspace)
    db = Database(app_url, size=1)
    with tenant_tx(workspace, db=db) as conn:
        pipelines.create_default(conn, tenant_id=workspace, now=clock.now())
    db.close()
    return workspace, user, token


def _first_stage(admin_url: str, workspace: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT s.pipeline_id, s.id FROM stages s JOIN pipelines p ON p.tenant_id = s.tenant_id"
                           " AND p.id = s.pipeline_id WHERE s.tenant_id = %s AND p.is_default"
                           " ORDER BY s.position LIMIT 1", (workspace,)).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0])), uuid.UUID(str(row[1]))


def _paths(app_url: str, workspace: uuid.UUID, user: uuid.UUID, token: str, placement: tuple[uuid.UUID, uuid.UUID],
           ) -> tuple[dict[str, Callable[[], object]], list[Any]]:
    import app as app_module
    from chalicelib import audit
    from chalicelib.auth import sessions
    from chalicelib.auth.principal import Principal
    from chalicelib.crm import leads, store
    from chalicelib.crm.api import Context
    from chalicelib.db.pool import Database
    from chalicelib.db.tenancy import tenant_tx
    from chalicelib.settings import get_settings

    settings = get_settings()
    pipeline_id, stage_id = placement
    db = Database(app_url, size=1)
    # The floor's session carries the tenant from its start (no statement, no round trip), as in B1.
    floor = Database(make_conninfo(app_url, options=f"-c app.tenant_id={workspace}"), size=1, name="floor")
    headers = {"Cookie": f"{settings.session_cookie_name}={token}", "Origin": settings.public_origin,
               "X-CSRF-Token": sessions.csrf_token(token, settings), "Content-Type": "application/json"}
    raw = json.dumps(BODY)
    principal = Principal(audit.Actor(user_id=user), "owner")

    def bare_insert() -> object:
        with floor.connection() as conn:
            return conn.execute(
                "INSERT INTO leads (tenant_id, id, title, pipeline_id, stage_id, status, value_amount_minor,"
                " value_currency) VALUES (%s, %s, %s, %s, %s, 'open', %s, %s)",
                (workspace, uuid.uuid4(), BODY["title"], pipeline_id, stage_id, 125_000, "EUR"))

    def write_transaction() -> object:
        values = {"title": BODY["title"], "contact_id": None, "company_id": None, "owner_id": None,
                  "lost_reason": None, "expected_close_date": None, "value_amount_minor": 125_000,
                  "value_currency": "EUR", "pipeline_id": pipeline_id, "stage_id": stage_id, "status": "open",
                  "custom": {}, "id": uuid.uuid4(), "tenant_id": workspace}
        with tenant_tx(workspace, db=db) as conn:
            ctx = Context(conn, workspace, principal)
            pending = store.insert_pending(conn, leads.TABLE, values)
            leads.record_moves(ctx, [values["id"]], None, stage_id)
            audit.record(conn, tenant_id=workspace, action="lead.created", actor=principal.actor,
                         target_type="lead", target_id=values["id"], details={"fields": sorted(values)})
        return pending()

    invoke = lambda_invoker(app_module.app, "POST", f"/workspaces/{workspace}/leads", headers, raw.encode())

    def handler() -> object:
        response = invoke()
        assert response.status_code == 201, response.body
        return response

    return ({"single autocommit INSERT": bare_insert, "write transaction (tenant_tx)": write_transaction,
             "POST /leads handler": handler}, [db, floor])


def _trace_batches(db: Any, action: Callable[[], object]) -> list[list[str]]:
    """The statements of each client->server batch libpq sent while `action` ran (a Sync shows as "COMMIT":
    it ends the transaction), up to the last transaction's end."""
    from tests.pgtrace import round_trips, trace_lines

    lines = trace_lines(db, action)
    end = max((i for i, line in enumerate(lines) if line.startswith("B") and "ReadyForQuery" in line),
              default=len(lines))
    return [[_statement(line) for line in batch
             if "\tParse\t" in line or "\tQuery\t" in line or line.endswith("\tSync")]
            for batch in round_trips(lines[:end])]


def _statement(line: str) -> str:
    if line.endswith("\tSync"):
        return "COMMIT (Sync)"
    # An empty statement (or simple Query) is the pool's full checkout check (after a long idle, or input).
    if "\tParse\t" not in line:
        return "(the pool's full checkout check)"
    text = line.split("\tParse\t", 1)[1].split('"', 3)[-1].rsplit('"', 1)[0]
    return " ".join(text.replace('"', "").split()[:4]) or "(the pool's full checkout check)"


def _per_request(fn: Callable[[], object], n: int) -> float:
    fn()
    return per_call(fn, n)


def _round_trips(socket_path: str, workspace: uuid.UUID, user: uuid.UUID, token: str,
                 placement: tuple[uuid.UUID, uuid.UUID], delay: float = 0.025) -> dict[str, float]:
    """(time through a proxy adding `delay` per client write - time through a proxy adding nothing) / delay."""
    from chalicelib.db.pool import use_database

    times: dict[float, dict[str, float]] = {}
    for extra in (0.0, delay):
        proxy = DelayProxy(socket_path, extra)
        paths, closables = _paths(f"host=127.0.0.1 port={proxy.port} user={APP_ROLE} dbname={DBNAME}", workspace,
                                  user, token, placement)
        use_database(closables[0])
        try:
            times[extra] = {name: _per_request(fn, 8) for name, fn in paths.items()}
        finally:
            for item in closables:
                item.close()
            proxy.close()
    print(f"B3 round trips (delay proxy adds {delay * 1000:.0f} ms per client write)")
    results: dict[str, float] = {}
    for name in times[delay]:
        trips = (times[delay][name] - times[0.0][name]) / delay
        results[f"B3 {name} round trips"] = round(trips)
        print(f"  {name:32s} {trips:5.2f} -> {round(trips)} round trips")
    return results


def _show_handler_batches(app_url: str, workspace: uuid.UUID, user: uuid.UUID, token: str,
                          placement: tuple[uuid.UUID, uuid.UUID]) -> dict[str, float]:
    from chalicelib.db.pool import use_database

    paths, closables = _paths(app_url, workspace, user, token, placement)
    use_database(closables[0])
    try:
        paths["POST /leads handler"]()
        batches = _trace_batches(closables[0], paths["POST /leads handler"])
    finally:
        for item in closables:
            item.close()
    print("B3 what travels together (libpq trace of one POST /leads; one line per round trip)")
    for i, batch in enumerate(batches, 1):
        print(f"  {i}: " + "; ".join(batch))
    start = next(i for i, b in enumerate(batches) if any(s.startswith("INSERT INTO leads") for s in b))
    writes = batches[start]
    after = len(batches) - start
    one = after == 1 and all(any(s.startswith(w) for s in writes) for w in (
        "INSERT INTO leads", "INSERT INTO lead_stage_history", "INSERT INTO audit_log", "COMMIT"))
    print(f"  writes after validation: {after} round trip(s) (lead, history, audit and COMMIT together: "
          f"{'PASS' if one else 'FAIL'})")
    return {"B3 round trips after validation": float(after), "B3 handler round trips (trace)": float(len(batches))}


def run() -> dict[str, float]:
    """Run B3 and print its figures; returns them for the summary."""
    bench_environment()
    from chalicelib.db.pool import use_database

    results: dict[str, float] = {}
    with bench_database() as bench:
        workspace, user, token = _seed(bench.admin_url, bench.app_url)
        placement = _first_stage(bench.admin_url, workspace)
        paths, closables = _paths(bench.app_url, workspace, user, token, placement)
        use_database(closables[0])
        try:
            rounds, n = int(os.environ.get("B3_ROUNDS", "7")), int(os.environ.get("B3_N", "300"))
            medians = interleaved_medians(paths, rounds=rounds, n=n, warmup=100)
        finally:
            for item in closables:
                item.close()
            use_database(None)
        base = medians["single autocommit INSERT"]
        print(f"B3 create lead (unix socket, pool size 1, 1 thread, median of {rounds} x {n})")
        for name, median in medians.items():
            results[f"B3 {name} ratio"] = median / base
            print(f"  {name:32s} {median * 1e6:8.1f} us/write   ratio {median / base:5.2f}x (target <= 1.5)")
        results.update(_show_handler_batches(bench.app_url, workspace, user, token, placement))
        results.update(_round_trips(bench.socket_path, workspace, user, token, placement))
        results.update(_over_a_network(bench.socket_path, workspace, user, token, placement))
        use_database(None)
    return results


def _over_a_network(socket_path: str, workspace: uuid.UUID, user: uuid.UUID, token: str,
                    placement: tuple[uuid.UUID, uuid.UUID]) -> dict[str, float]:
    """The same paths over TCP through a proxy (its own process) delaying every client write."""
    results: dict[str, float] = {}
    rounds, n = int(os.environ.get("B3_ROUNDS", "7")), int(os.environ.get("B3_NET_N", "100"))
    print(f"B3 over a network (TCP through a delaying proxy; median of {rounds} x {n})")

    def build(via: dict[str, Any]) -> Any:
        conninfo = f"host={via['host']} port={via['port']} user={APP_ROLE} dbname={DBNAME}"
        return _paths(conninfo, workspace, user, token, placement)

    for label, medians in over_a_network(socket_path, build, rounds=rounds, n=n):
        base = medians["single autocommit INSERT"]
        for name, median in medians.items():
            if name != "single autocommit INSERT":
                results[f"B3 {name} ratio ({label})"] = median / base
        print(f"  {label}  floor {base * 1e6:7.1f} us   write transaction "
              f"{medians['write transaction (tenant_tx)'] / base:5.2f}x (<= 1.5)   handler "
              f"{medians['POST /leads handler'] / base:5.2f}x")
    return results


if __name__ == "__main__":
    run()
