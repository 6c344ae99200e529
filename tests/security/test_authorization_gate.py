"""Reads travel with their authorization (one round trip), and a refused caller's statements never run.

The authorization is one statement (app.authorize_session / app.authorize_api_key) queued first in the
tenant transaction; when it refuses, PostgreSQL aborts the transaction and skips everything queued after
it. These tests look at the wire (libpq's trace) and at the database, not at timings.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from chalice.test import Client

from chalicelib import clock
from chalicelib.auth import sessions
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.settings import get_settings
from tests.api.auth_helpers import Outbox, body_of, call, create_key, problem
from tests.api.crm_helpers import Workspace, new_workspace
from tests.conftest import TestDatabase
from tests.pgtrace import round_trips, trace_lines


@pytest.fixture
def ws(api: Client, outbox: Outbox) -> Workspace:
    workspace = new_workspace(api, outbox, "alice")
    workspace.create("/leads", {"title": "Canary deal zephyr"})
    return workspace


@pytest.fixture
def other(api: Client, outbox: Outbox) -> Workspace:
    return new_workspace(api, outbox, "bob")


def _wire(app_db: Database, action: Callable[[], Any]) -> list[str]:
    """The protocol lines of `action` from its tenant's set_config on."""
    lines = trace_lines(app_db, action)
    start = next(i for i, line in enumerate(lines) if line.startswith("F") and "set_config('app.tenant_id'" in line)
    return lines[start:]


def _refused_then_nothing_ran(lines: list[str], sqlstate: str) -> None:
    backend = [line for line in lines if line.startswith("B")]
    refusal = next(i for i, line in enumerate(backend) if "ErrorResponse" in line)
    assert f"C \"{sqlstate}\"" in backend[refusal], backend[refusal]
    # Before the refusal only set_config answered; after it, no row and no completed statement: the Sync
    # ends the aborted transaction with a rollback.
    assert not [line for line in backend[:refusal] if "DataRow" in line and "Canary" in line]
    after = backend[refusal + 1:]
    assert not [line for line in after if "DataRow" in line], after
    assert not [line for line in after if "CommandComplete" in line], after


def test_member_list_page_travels_with_its_authorization_and_commit(ws: Workspace, app_db: Database) -> None:
    batches = round_trips(_wire(app_db, lambda: ws.get("/leads?q=zephyr")))
    first = "\n".join(batches[0])
    for needed in ("app.authorize_session", 'FROM "leads"', "\tSync"):
        assert needed in first, f"{needed} not in the first round trip"
    assert len(batches) == 1, batches


def test_member_read_of_one_record_is_one_round_trip(ws: Workspace, app_db: Database) -> None:
    lead = body_of(ws.get("/leads"))["data"][0]
    batches = round_trips(_wire(app_db, lambda: ws.get(f"/leads/{lead['id']}")))
    assert len(batches) == 1 and "app.authorize_session" in "\n".join(batches[0])


def test_member_of_another_workspace_gets_404_and_the_search_never_runs(
        ws: Workspace, other: Workspace, app_db: Database) -> None:
    responses: list[Any] = []
    lines = _wire(app_db, lambda: responses.append(
        call(other.client, "GET", f"{ws.base}/leads?q=zephyr", other.browser)))
    problem(responses[0], 404)
    _refused_then_nothing_ran(lines, "CR404")
    assert "Canary" not in "\n".join(lines)


def test_revoked_session_gets_401_and_the_read_never_runs(ws: Workspace, fresh_db: TestDatabase,
                                                          app_db: Database) -> None:
    lead = body_of(ws.get("/leads"))["data"][0]
    with fresh_db.admin() as admin:
        admin.execute("UPDATE sessions SET revoked_at = now() WHERE user_id = %s", (ws.user_id,))
    responses: list[Any] = []
    lines = _wire(app_db, lambda: responses.append(ws.get(f"/leads/{lead['id']}")))
    problem(responses[0], 401)
    _refused_then_nothing_ran(lines, "CR401")


def test_api_key_of_another_workspace_gets_404_and_the_read_never_runs(
        ws: Workspace, other: Workspace, app_db: Database) -> None:
    key = create_key(other.client, other.browser, other.id)["key"]
    responses: list[Any] = []
    lines = _wire(app_db, lambda: responses.append(call(ws.client, "GET", f"{ws.base}/leads", bearer=key)))
    problem(responses[0], 404)
    _refused_then_nothing_ran(lines, "CR404")
    # The key still works where it belongs, in one round trip too.
    own = call(other.client, "GET", f"{other.base}/leads", bearer=key)
    assert own.status_code == 200, own.body


def test_deleted_workspace_reads_are_404(ws: Workspace, fresh_db: TestDatabase) -> None:
    with fresh_db.admin() as admin:
        admin.execute("UPDATE workspaces SET deleted_at = now() WHERE id = %s", (ws.id,))
    problem(ws.get("/leads"), 404)
    problem(ws.get("/companies"), 404)


def test_a_refused_authorization_aborts_writes_queued_behind_it(ws: Workspace, fresh_db: TestDatabase,
                                                               app_db: Database) -> None:
    # The gate is PostgreSQL's, not the route's: a write queued after a refused authorization is skipped.
    tenant = uuid.UUID(ws.id)
    with pytest.raises(psycopg.Error) as refused, tenant_tx(tenant, db=app_db) as conn:
        sessions.authorize_pending(conn, token="not-a-session", workspace_id=tenant, now=clock.now(),
                                   roles=["owner", "admin", "member"], allow_deleted=False, settings=get_settings())
        conn.execute("INSERT INTO companies (tenant_id, name) VALUES (%s, 'Smuggled')", (tenant,))
    assert refused.value.sqlstate == "CR401"
    with fresh_db.admin() as admin:
        assert admin.execute("SELECT count(*) FROM companies WHERE name = 'Smuggled'").fetchone() == (0,)


def test_member_below_the_role_gets_403_from_the_database(ws: Workspace, outbox: Outbox) -> None:
    member = ws.as_member(outbox, "member")
    answer = member.post("/custom-fields", {"object": "lead", "key": "tier", "label": "Tier", "type": "text"})
    assert problem(answer, 403)["detail"] == "this needs the admin role"


def test_non_member_create_gets_404_and_nothing_queued_runs(ws: Workspace, other: Workspace, app_db: Database,
                                                          fresh_db: TestDatabase) -> None:
    responses: list[Any] = []
    lines = _wire(app_db, lambda: responses.append(
        call(other.client, "POST", f"{ws.base}/leads", other.browser, {"title": "Smuggled lead"})))
    problem(responses[0], 404)
    _refused_then_nothing_ran(lines, "CR404")
    with fresh_db.admin() as admin:
        assert admin.execute("SELECT count(*) FROM leads WHERE title = 'Smuggled lead'").fetchone() == (0,)
        assert admin.execute("SELECT count(*) FROM audit_log WHERE tenant_id = %s AND action = 'lead.created'"
                             " AND actor_user_id = %s", (ws.id, other.user_id)).fetchone() == (0,)


def test_member_below_the_role_writes_nothing(ws: Workspace, outbox: Outbox, fresh_db: TestDatabase) -> None:
    member = ws.as_member(outbox, "member")
    problem(member.post("/custom-fields", {"object": "lead", "key": "smuggled", "label": "S", "type": "text"}), 403)
    lead = body_of(ws.get("/leads"))["data"][0]
    problem(member.delete(f"/custom-fields/{uuid.uuid4()}"), 403)
    with fresh_db.admin() as admin:
        assert admin.execute("SELECT count(*) FROM custom_fields WHERE key = 'smuggled'").fetchone() == (0,)
        assert admin.execute("SELECT count(*) FROM leads WHERE id = %s", (lead["id"],)).fetchone() == (1,)


def test_cookie_write_without_csrf_is_refused_before_the_database(ws: Workspace, app_db: Database) -> None:
    responses: list[Any] = []
    lines = trace_lines(app_db, lambda: responses.append(
        call(ws.client, "POST", f"{ws.base}/leads", ws.browser, {"title": "No token"}, csrf=None)))
    problem(responses[0], 403)
    assert not [line for line in lines if "set_config" in line], lines


def _conversation(ws: Workspace, db: TestDatabase) -> str:
    """An email conversation with one message, inserted as the superuser (the inbox is not under test)."""
    with db.admin() as admin:
        row = admin.execute(
            "WITH ch AS (INSERT INTO channels (tenant_id, type, address, secrets_ciphertext)"
            "            VALUES (%(t)s, 'email', 'in@example.test', '\\x00') RETURNING id),"
            " c AS (INSERT INTO conversations (tenant_id, channel_id, thread_key) SELECT %(t)s, id, 'root' FROM ch"
            "       RETURNING id),"
            " m AS (INSERT INTO messages (tenant_id, conversation_id, direction, body, status, sent_at)"
            "       SELECT %(t)s, id, 'in', 'Canary message', 'received', now() FROM c)"
            " SELECT id FROM c", {"t": ws.id}).fetchone()
    assert row is not None
    return str(row[0])


def _read_paths(ws: Workspace, db: TestDatabase) -> list[str]:
    [sales] = [p for p in body_of(ws.get("/pipelines"))["data"] if p["is_default"]]
    lead = body_of(ws.get("/leads"))["data"][0]
    return ["", "/leads", f"/leads/{lead['id']}", "/pipelines", "/companies", "/contacts", "/notes", "/custom-fields",
            f"/pipelines/{sales['id']}/board", f"/leads/{lead['id']}/stage-history", "/conversations", "/calls",
            "/settings/telephony", "/members", "/api-keys", "/audit-log", "/integrations", "/channels",
            f"/pipelines/{sales['id']}", f"/conversations/{_conversation(ws, db)}/messages"]


def test_every_workspace_read_route_is_one_round_trip_for_a_member_and_runs_nothing_for_others(
        ws: Workspace, other: Workspace, app_db: Database, fresh_db: TestDatabase) -> None:
    for path in _read_paths(ws, fresh_db):
        answers: list[Any] = []
        batches = round_trips(_wire(app_db, lambda path=path, answers=answers: answers.append(ws.get(path))))
        assert answers[0].status_code == 200, (path, answers[0].body)
        assert len(batches) == 1 and "app.authorize_session" in "\n".join(batches[0]), path
        refused: list[Any] = []
        lines = _wire(app_db, lambda path=path, refused=refused: refused.append(
            call(other.client, "GET", ws.base + path, other.browser)))
        problem(refused[0], 404)
        _refused_then_nothing_ran(lines, "CR404")


@pytest.mark.parametrize("expiry", ["idle", "absolute"])
def test_expired_session_gets_401_on_crm_reads_and_writes(ws: Workspace, fresh_db: TestDatabase,
                                                          app_db: Database, expiry: str) -> None:
    idle = get_settings().session_idle_timeout_s
    change = ("UPDATE sessions SET last_seen_at = now() - make_interval(secs => %s) WHERE user_id = %s"
              if expiry == "idle" else "UPDATE sessions SET expires_at = now() - make_interval(secs => %s)"
              " WHERE user_id = %s")
    with fresh_db.admin() as admin:
        admin.execute(change, (idle + 60 if expiry == "idle" else 1, ws.user_id))
    problem(ws.get("/leads"), 401)
    writes: list[Any] = []
    lines = _wire(app_db, lambda: writes.append(ws.post("/leads", {"title": "After expiry"})))
    problem(writes[0], 401)
    _refused_then_nothing_ran(lines, "CR401")
    with fresh_db.admin() as admin:
        assert admin.execute("SELECT count(*) FROM leads WHERE title = 'After expiry'").fetchone() == (0,)


def test_crm_activity_alone_keeps_a_session_alive(ws: Workspace, fresh_db: TestDatabase) -> None:
    # The authorization touches last_seen_at (at most once a minute), so an operator who only works in
    # the CRM is not signed out by the idle timeout.
    with fresh_db.admin() as admin:
        admin.execute("UPDATE sessions SET last_seen_at = now() - interval '5 minutes' WHERE user_id = %s",
                      (ws.user_id,))
    assert ws.get("/leads").status_code == 200
    with fresh_db.admin() as admin:
        row = admin.execute("SELECT now() - max(last_seen_at) < interval '1 minute' FROM sessions"
                            " WHERE user_id = %s", (ws.user_id,)).fetchone()
    assert row == (True,)


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_cross_site_origin_is_refused_before_the_database_even_with_the_csrf_token(
        ws: Workspace, app_db: Database, fresh_db: TestDatabase, method: str) -> None:
    lead = body_of(ws.get("/leads"))["data"][0]
    responses: list[Any] = []
    lines = trace_lines(app_db, lambda: responses.append(call(
        ws.client, method, f"{ws.base}/leads/{lead['id']}", ws.browser,
        {"title": "Cross-site"} if method == "PATCH" else None, origin="https://evil.example")))
    problem(responses[0], 403)
    assert not [line for line in lines if "set_config" in line]
    with fresh_db.admin() as admin:
        assert admin.execute("SELECT title FROM leads WHERE id = %s", (lead["id"],)).fetchone() == (lead["title"],)


def test_non_member_cannot_create_a_custom_field_and_nothing_queued_runs(
        ws: Workspace, other: Workspace, app_db: Database, fresh_db: TestDatabase) -> None:
    key = create_key(other.client, other.browser, other.id, role="admin")["key"]
    for caller in ({"browser": other.browser}, {"bearer": key}):
        responses: list[Any] = []
        lines = _wire(app_db, lambda caller=caller, responses=responses: responses.append(call(
            ws.client, "POST", f"{ws.base}/custom-fields", caller.get("browser"),
            {"object": "lead", "key": "smuggled", "label": "S", "type": "text"}, bearer=caller.get("bearer"))))
        problem(responses[0], 404)
        _refused_then_nothing_ran(lines, "CR404")
    with fresh_db.admin() as admin:
        assert admin.execute("SELECT count(*) FROM custom_fields WHERE key = 'smuggled'").fetchone() == (0,)


def _pipeline_writes(ws: Workspace) -> list[tuple[str, str, Any]]:
    [sales] = [p for p in body_of(ws.get("/pipelines"))["data"] if p["is_default"]]
    spare = ws.create("/pipelines", {"name": "Spare", "stages": [{"name": "One"}, {"name": "Two"}]})
    one = f"/pipelines/{sales['id']}"
    return [("POST", "/pipelines", {"name": "Smuggled"}), ("PATCH", one, {"name": "Smuggled"}),
            ("POST", one + "/stages", {"name": "Smuggled"}),
            ("PATCH", f"{one}/stages/{sales['stages'][0]['id']}", {"name": "Smuggled", "position": 3}),
            ("DELETE", f"/pipelines/{spare['id']}/stages/{spare['stages'][0]['id']}", None),
            ("DELETE", f"/pipelines/{spare['id']}", None)]


def _pipelines_snapshot(db: TestDatabase, workspace_id: str) -> list[Any]:
    with db.admin() as admin:
        return admin.execute(
            "SELECT p.id, p.name, p.is_default, p.updated_at, s.id, s.name, s.position, s.updated_at"
            " FROM pipelines p JOIN stages s ON s.tenant_id = p.tenant_id AND s.pipeline_id = p.id"
            " WHERE p.tenant_id = %s ORDER BY p.id, s.position", (workspace_id,)).fetchall()


def test_pipeline_and_stage_writes_of_outsiders_and_members_run_nothing(
        ws: Workspace, other: Workspace, outbox: Outbox, app_db: Database, fresh_db: TestDatabase) -> None:
    writes = _pipeline_writes(ws)
    member = ws.as_member(outbox, "member")
    before = _pipelines_snapshot(fresh_db, ws.id)
    for method, path, body in writes:
        responses: list[Any] = []
        lines = _wire(app_db, lambda method=method, path=path, body=body, responses=responses: responses.append(
            call(other.client, method, ws.base + path, other.browser, body)))
        problem(responses[0], 404)
        _refused_then_nothing_ran(lines, "CR404")
        problem(member.call(method, path, body), 403)
    assert _pipelines_snapshot(fresh_db, ws.id) == before
    with fresh_db.admin() as admin:
        assert admin.execute("SELECT count(*) FROM audit_log WHERE tenant_id = %s AND (action LIKE 'pipeline.%%'"
                             " OR action LIKE 'stage.%%') AND actor_user_id <> %s",
                             (ws.id, ws.user_id)).fetchone() == (0,)
    # The owner's same writes all succeed (the list above is not refused for a reason of its own), and the
    # authorization shares its round trip with the route's first statements.
    for method, path, body in writes:
        answers: list[Any] = []
        batches = round_trips(_wire(app_db, lambda method=method, path=path, body=body, answers=answers:
                                    answers.append(ws.call(method, path, body))))
        assert answers[0].status_code in (200, 201, 204), (method, path, answers[0].body)
        first = [line for line in batches[0] if "\tParse\t" in line]
        assert "app.authorize_session" in "\n".join(first) and len(first) > 2, (method, path, first)
