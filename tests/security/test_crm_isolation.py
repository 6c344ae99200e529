"""Tenant isolation of the CRM (R01, R02, R12, R16, R20) and the canary sweep of its logs (O01).

b1 (owner of workspace B only) calls every CRM route of the app with A's ids, once under A's workspace id and
once under B's own: every answer is 404 (422 for a reference in a body), never 2xx, and no row of A (or B)
changes, compared as the superuser over every table that has a tenant_id column.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from chalice.test import Client
from psycopg import errors as pg_errors
from psycopg import sql

import app as app_module
from chalicelib.api import is_fallback_view
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from tests.api.auth_helpers import (
    ORIGIN,
    Browser,
    Outbox,
    body_of,
    call,
    create_key,
    create_workspace,
    invite_and_join,
    problem,
    sign_in,
)
from tests.conftest import TestDatabase
from tests.fix_crm import installed, shared_app, table_rows

CRM = ("companies", "contacts", "leads", "notes", "custom-fields", "pipelines", "imports", "products", "proposals")
PARAM_RE = re.compile(r"\{([a-z_]+)\}")

# Valid-looking bodies; "{name}" is replaced by A's row of that name. Every reference a body can carry points
# at A's rows, so a request made inside B can only fail on them.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/companies"): {"name": "Idor Inc", "domain": "idor.example.test"},
    ("PATCH", "/companies/{company_id}"): {"name": "pwned"},
    ("POST", "/contacts"): {"first_name": "Idor", "email": "idor@example.test", "company_id": "{company_id}"},
    ("PATCH", "/contacts/{contact_id}"): {"first_name": "pwned", "company_id": "{company_id}"},
    ("POST", "/leads"): {"title": "idor", "contact_id": "{contact_id}", "company_id": "{company_id}",
                         "stage_id": "{stage_id}", "value": {"amount_minor": 1, "currency": "EUR"}},
    ("PATCH", "/leads/{lead_id}"): {"title": "pwned", "stage_id": "{stage_id}"},
    ("POST", "/notes"): {"body": "idor", "lead_id": "{lead_id}"},
    ("PATCH", "/notes/{note_id}"): {"body": "pwned"},
    ("POST", "/custom-fields"): {"object": "lead", "key": "idor", "label": "Idor", "type": "text"},
    ("PATCH", "/custom-fields/{field_id}"): {"label": "pwned", "type": "number"},
    ("POST", "/pipelines"): {"name": "idor"},
    ("PATCH", "/pipelines/{pipeline_id}"): {"name": "pwned", "is_default": True},
    ("POST", "/pipelines/{pipeline_id}/stages"): {"name": "idor", "position": 0},
    ("PATCH", "/pipelines/{pipeline_id}/stages/{stage_id}"): {"name": "pwned", "kind": "won", "position": 0},
    ("POST", "/products"): {"name": "Idor", "sku": "IDOR-1", "unit_amount_minor": 1, "currency": "EUR"},
    ("PATCH", "/products/{product_id}"): {"name": "pwned", "unit_amount_minor": 0},
    ("POST", "/leads/{lead_id}/proposals"): {"title": "idor", "valid_until": "2027-01-01", "currency": "EUR",
                                             "line_items": [{"product_id": "{product_id}", "quantity": 1}]},
    ("PATCH", "/proposals/{proposal_id}"): {"title": "pwned",
                                            "line_items": [{"product_id": "{product_id}", "quantity": 1}]},
    ("POST", "/proposals/{proposal_id}/void"): {},
    ("POST", "/proposals/{proposal_id}/revise"): {},
    ("POST", "/proposals/{proposal_id}/send"): {"signer_email": "idor@example.test"},
    ("POST", "/proposals/{proposal_id}/payment-link"): {},
    ("POST", "/leads/{lead_id}/proposals/draft"): {},
}
# Query strings that name A's rows too (a stage delete with a target, a dry run, list filters).
QUERIES: dict[tuple[str, str], str] = {
    ("DELETE", "/pipelines/{pipeline_id}/stages/{stage_id}"): "target_stage_id={stage_id}",
    ("PATCH", "/custom-fields/{field_id}"): "dry_run=true",
    ("GET", "/leads"): "contact_id={contact_id}&company_id={company_id}&stage_id={stage_id}",
    ("GET", "/contacts"): "company_id={company_id}",
}
CSV_BODIES = {"contacts": "first_name,email\nIdor,a-contact@example.test\n",
              "companies": "name\nIdor Inc\n", "leads": "title,contact_id\nidor,{contact_id}\n"}


def _crm_routes() -> list[tuple[str, str]]:
    found = []
    for path, entries in app_module.app.routes.items():
        rest = path.removeprefix("/workspaces/{workspace_id}/")
        if rest == path or rest.split("/")[0] not in CRM:
            continue
        found += [(method, path) for method, entry in entries.items() if not is_fallback_view(entry.view_name)]
    return sorted(found, key=lambda r: (r[1], r[0]))


ROUTES = _crm_routes()
IDS = [f"{m} {p.removeprefix('/workspaces/{workspace_id}')}" for m, p in ROUTES]


def test_the_walk_covers_every_crm_resource() -> None:
    resources = {p.removeprefix("/workspaces/{workspace_id}/").split("/")[0] for _, p in ROUTES}
    assert {"companies", "contacts", "leads", "notes", "custom-fields", "pipelines", "products",
            "proposals"} <= resources
    assert len(ROUTES) >= 30
    # Every write route has a body here (a new route must be added, or the walk would send it nothing).
    for method, path in ROUTES:
        local = path.removeprefix("/workspaces/{workspace_id}")
        if method in ("POST", "PATCH", "PUT") and not local.startswith("/imports/"):
            assert (method, local) in BODIES, f"no body for {method} {local}"


# ---- the world: A with one row of everything, B with its own -------------------------------------------------


@dataclass
class World:
    db: TestDatabase
    client: Client
    a: str
    b: str
    a1: Browser
    b1: Browser
    b1_key: str
    app_db: Database
    data_dir: Path
    ids: dict[str, str] = field(default_factory=dict)
    b_ids: dict[str, str] = field(default_factory=dict)
    b_board: Any = None


def _created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.body
    return dict(body_of(response))


def _populate(client: Client, owner: Browser, workspace: str, tag: str) -> dict[str, str]:
    """A company, contact, lead, note, extra pipeline with a stage, and a custom field; returns their ids."""
    base = f"/workspaces/{workspace}"

    def post(path: str, body: Any) -> dict[str, Any]:
        return _created(call(client, "POST", base + path, owner, body))

    company = post("/companies", {"name": f"{tag} company"})
    contact = post("/contacts", {"first_name": f"{tag} contact", "email": f"{tag}-c@example.test",
                                 "company_id": company["id"]})
    pipeline = post("/pipelines", {"name": f"{tag} pipeline", "stages": [{"name": "One"}, {"name": "Two"}]})
    stage = pipeline["stages"][1]["id"]
    lead = post("/leads", {"title": f"{tag} lead", "contact_id": contact["id"], "company_id": company["id"],
                           "stage_id": stage, "value": {"amount_minor": 700, "currency": "EUR"}})
    note = post("/notes", {"body": f"{tag} note", "lead_id": lead["id"]})
    custom = post("/custom-fields", {"object": "lead", "key": "source", "label": "Source", "type": "select",
                                     "options": ["web"]})
    product = post("/products", {"name": f"{tag} product", "sku": f"{tag}-1", "unit_amount_minor": 100,
                                 "currency": "EUR"})
    proposal = post(f"/leads/{lead['id']}/proposals", {"title": f"{tag} proposal", "valid_until": "2027-01-01",
                                                       "currency": "EUR",
                                                       "line_items": [{"product_id": product["id"], "quantity": 2}]})
    return {"company_id": company["id"], "contact_id": contact["id"], "lead_id": lead["id"], "note_id": note["id"],
            "pipeline_id": pipeline["id"], "stage_id": stage, "field_id": custom["id"], "object": "leads",
            "product_id": product["id"], "proposal_id": proposal["id"]}


@pytest.fixture(scope="module")
def world(pg_admin_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Built once for the walk: no call of the walk may change anything (which each test checks)."""
    with shared_app(pg_admin_url, template_db, tmp_path_factory.mktemp("crm-isolation")) as shared:
        client, box = shared.client, shared.outbox
        a1 = sign_in(client, "a1@example.test", box)
        a = str(create_workspace(client, a1, "Alpha")["id"])
        b1 = sign_in(client, "b1@example.test", box)
        b = str(create_workspace(client, b1, "Beta")["id"])
        b1_key = str(create_key(client, b1, b, role="admin")["key"])
        world = World(shared.db, client, a, b, a1, b1, b1_key, shared.app, shared.data_dir,
                      _populate(client, a1, a, "alpha"), _populate(client, b1, b, "beta"))
        world.b_board = _boards(world)
        yield world


@pytest.fixture
def w(world: World) -> Iterator[World]:
    """The module's world, installed for this test."""
    with installed(world.app_db, world.data_dir):
        yield world


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, str):
        return PARAM_RE.sub(lambda m: ids[m.group(1)], value)
    return value


def _request(w: World, method: str, path: str, workspace: str, *, by_key: bool = False) -> Any:
    """`path` of workspace `workspace` with A's ids, a body and query naming A's rows, as b1."""
    local = path.removeprefix("/workspaces/{workspace_id}")
    url = f"/workspaces/{workspace}" + _fill(local, w.ids)
    query = QUERIES.get((method, local))
    if query:
        url += "?" + _fill(query, w.ids)
    if local.startswith("/imports/"):
        object_name = w.ids["object"]
        headers = {"Content-Type": "text/csv", "Origin": ORIGIN}
        if by_key:
            headers["Authorization"] = f"Bearer {w.b1_key}"
        else:
            headers.update({"Cookie": w.b1.cookie, "X-CSRF-Token": w.b1.csrf})
        return w.client.http.request(method, url, headers=headers,
                                     body=_fill(CSV_BODIES[object_name], w.ids).encode())
    body = _fill(BODIES.get((method, local)), w.ids)
    if by_key:
        return call(w.client, method, url, body=body, bearer=w.b1_key, origin=None)
    return call(w.client, method, url, w.b1, body)


def _mentions_a(w: World, response: Any) -> list[str]:
    text = response.body.decode() if isinstance(response.body, bytes) else str(response.body)
    found = [name for name, value in w.ids.items() if name != "object" and value in text]
    found += [word for word in ("alpha", "Alpha", "a1@example.test") if word in text]
    return found


# ---- R01: A's workspace id, A's ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=IDS)
def test_b1_gets_404_for_every_crm_route_of_workspace_a(w: World, method: str, path: str) -> None:
    before = table_rows(w.db, w.a, w.b)
    for by_key in (False, True):
        response = _request(w, method, path, w.a, by_key=by_key)
        assert response.status_code == 404, (by_key, response.status_code, response.body)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert _mentions_a(w, response) == []
    assert table_rows(w.db, w.a, w.b) == before


# ---- R01/R12: B's workspace id, A's ids --------------------------------------------------------------------------


def _names_a_row(method: str, path: str) -> bool:
    local = path.removeprefix("/workspaces/{workspace_id}")
    carried = json.dumps(BODIES.get((method, local))) + QUERIES.get((method, local), "") + local
    return bool(set(PARAM_RE.findall(carried)) - {"object"}) or local.startswith("/imports/")


A_ID_ROUTES = [(m, p) for m, p in ROUTES if _names_a_row(m, p) and not (m == "GET" and p.count("{") == 1)]


@pytest.mark.parametrize(("method", "path"), A_ID_ROUTES,
                         ids=[f"{m} {p.removeprefix('/workspaces/{workspace_id}')}" for m, p in A_ID_ROUTES])
def test_a_ids_used_inside_workspace_b_are_not_found(w: World, method: str, path: str) -> None:
    before = table_rows(w.db, w.a, w.b)
    local = path.removeprefix("/workspaces/{workspace_id}")
    record_in_path = any(name != "object" for name in PARAM_RE.findall(local))
    response = _request(w, method, path, w.b)
    after = table_rows(w.db, w.a, w.b)
    if local.startswith("/imports/"):
        # An import answers 200 with per-row errors: A's ids must be refused in every row, nothing written
        # but B's own audit entry of the (failed) import.
        result = body_of(response)
        assert response.status_code == 200, response.body
        assert (result["created"], result["updated"], len(result["errors"])) == (0, 0, 1)
        added = sorted(set(after["audit_log"]) - set(before["audit_log"]))
        assert [json.loads(row)["tenant_id"] for row in added] == [w.b]
        assert not [v for k, v in w.ids.items() if k != "object" and any(v in row for row in added)]
        after["audit_log"] = before["audit_log"]
    elif record_in_path:
        problem(response, 404)
    else:
        problem(response, 422)  # the body's reference to A's row is no row of B
    assert _mentions_a(w, response) == []
    assert after == before


def test_a_real_custom_field_change_inside_workspace_b_is_not_found(w: World) -> None:
    # The walk sends this PATCH as a dry run (QUERIES); the change itself is refused the same way.
    before = table_rows(w.db, w.a, w.b)
    for query in ("", "?dry_run=false"):
        response = call(w.client, "PATCH", f"/workspaces/{w.b}/custom-fields/{w.ids['field_id']}{query}", w.b1,
                        BODIES[("PATCH", "/custom-fields/{field_id}")])
        problem(response, 404)
        assert _mentions_a(w, response) == []
    assert table_rows(w.db, w.a, w.b) == before


def test_b_lists_never_contain_a_rows(w: World) -> None:
    lists = [p for m, p in ROUTES if m == "GET" and p.count("{") == 1]
    assert len(lists) >= 6
    filters = {"/leads": ["contact_id", "company_id", "stage_id", "pipeline_id"], "/contacts": ["company_id"],
               "/notes": ["lead_id", "contact_id", "company_id"]}
    for path in lists:
        local = path.removeprefix("/workspaces/{workspace_id}")
        queries = ["", *(f"{name}={w.ids[name]}" for name in filters.get(local, []))]
        if local in ("/leads", "/contacts", "/companies"):
            queries.append("q=alpha")
        for query in queries:
            response = call(w.client, "GET", f"/workspaces/{w.b}{local}?{query}&limit=200", w.b1)
            assert response.status_code in (200, 400), (local, query, response.body)
            if response.status_code == 400:
                continue  # a filter this list does not have
            assert _mentions_a(w, response) == [], (local, query)
            if query and "q=" not in query:
                assert body_of(response)["data"] == [], (local, query)
        unfiltered = body_of(call(w.client, "GET", f"/workspaces/{w.b}{local}", w.b1))["data"]
        assert unfiltered, local  # B sees its own rows


def test_b_counts_and_board_are_unaffected(w: World) -> None:
    # After the walk above (file order): B's board is what it was before anyone attacked.
    assert _boards(w) == w.b_board
    assert w.b_board[w.b_ids["pipeline_id"]]["columns"][1]["leads"] == 1
    assert w.b_board[w.b_ids["pipeline_id"]]["columns"][1]["totals"] == {"EUR": 700}


def _boards(w: World) -> dict[str, Any]:
    pipelines = body_of(call(w.client, "GET", f"/workspaces/{w.b}/pipelines", w.b1))["data"]
    return {p["id"]: body_of(call(w.client, "GET", f"/workspaces/{w.b}/pipelines/{p['id']}/board", w.b1))
            for p in pipelines}


# ---- R02: tenant spoofing on write ------------------------------------------------------------------------------


def test_tenant_id_in_a_body_is_refused(w: World) -> None:
    before = table_rows(w.db, w.a, w.b)
    base = f"/workspaces/{w.b}"
    for method, path, body in (("POST", "/leads", {"title": "x", "tenant_id": w.a}),
                               ("PATCH", f"/leads/{w.b_ids['lead_id']}", {"tenant_id": w.a}),
                               ("POST", "/companies", {"name": "x", "tenant_id": w.a}),
                               ("PATCH", f"/pipelines/{w.b_ids['pipeline_id']}", {"tenant_id": w.a})):
        body_ = problem(call(w.client, method, base + path, w.b1, body), 422)
        assert "tenant_id" in [e["field"] for e in body_["errors"]]
    assert table_rows(w.db, w.a, w.b) == before


def test_app_role_cannot_write_rows_of_another_tenant(w: World) -> None:
    a, b = uuid.UUID(w.a), uuid.UUID(w.b)
    app_db = w.app_db
    before = table_rows(w.db, w.a, w.b)
    attempts = [
        # An UPDATE moving B's lead to A.
        ("UPDATE leads SET tenant_id = %s WHERE id = %s", (a, uuid.UUID(w.b_ids["lead_id"]))),
        # An INSERT naming A.
        ("INSERT INTO companies (tenant_id, name) VALUES (%s, 'spoof')", (a,)),
        # An upsert whose conflict target is A's row.
        ("INSERT INTO companies (tenant_id, id, name) VALUES (%s, %s, 'spoof')"
         " ON CONFLICT (tenant_id, id) DO UPDATE SET name = 'spoof'", (a, uuid.UUID(w.ids["company_id"]))),
    ]
    for statement, params in attempts:
        with pytest.raises(pg_errors.InsufficientPrivilege, match="row-level security"), \
                tenant_tx(b, db=app_db) as conn:
            conn.execute(statement, params)
    with tenant_tx(b, db=app_db) as conn:
        # A's rows are simply not there for B: nothing to update or delete.
        assert conn.execute("UPDATE leads SET title = 'x' WHERE id = %s RETURNING id",
                            (uuid.UUID(w.ids["lead_id"]),)).fetchall() == []
        assert conn.execute("DELETE FROM notes WHERE id = %s RETURNING id",
                            (uuid.UUID(w.ids["note_id"]),)).fetchall() == []
    assert table_rows(w.db, w.a, w.b) == before


# ---- R16: a user of both workspaces -----------------------------------------------------------------------------


def test_member_of_both_workspaces_touches_only_the_workspace_of_the_path(api: Client, outbox: Outbox,
                                                                            fresh_db: TestDatabase) -> None:
    a_owner = sign_in(api, "owner-a@example.test", outbox)
    a = str(create_workspace(api, a_owner, "A")["id"])
    b_owner = sign_in(api, "owner-b@example.test", outbox)
    b = str(create_workspace(api, b_owner, "B")["id"])
    invite_and_join(api, outbox, a_owner, a, "ab@example.test", "member")
    ab = invite_and_join(api, outbox, b_owner, b, "ab@example.test", "member")
    shared = {"first_name": "Sam", "email": "sam@example.test"}
    in_a = _created(call(api, "POST", f"/workspaces/{a}/contacts", ab, shared))
    in_b = _created(call(api, "POST", f"/workspaces/{b}/contacts", ab, shared))
    lead_b = _created(call(api, "POST", f"/workspaces/{b}/leads", ab, {"title": "B deal",
                                                                       "contact_id": in_b["id"]}))
    found = body_of(call(api, "GET", f"/workspaces/{a}/contacts?q=sam%40example", ab))["data"]
    assert [c["id"] for c in found] == [in_a["id"]]
    before_b = table_rows(fresh_db, b)
    # B's contact id under A's path is nobody, even for a member of both.
    problem(call(api, "DELETE", f"/workspaces/{a}/contacts/{in_b['id']}", ab), 404)
    problem(call(api, "POST", f"/workspaces/{a}/leads", ab, {"title": "x", "contact_id": in_b["id"]}), 422)
    assert call(api, "DELETE", f"/workspaces/{a}/contacts/{in_a['id']}", ab).status_code == 204
    assert table_rows(fresh_db, b) == before_b
    assert body_of(call(api, "GET", f"/workspaces/{b}/leads/{lead_b['id']}", ab))["contact_id"] == in_b["id"]


# ---- R20: list and search plans use indexes under RLS, with many other tenants' rows ------------------------------


def test_lead_list_and_search_plans_use_indexes_under_rls(fresh_db: TestDatabase, app_db: Database) -> None:
    with fresh_db.admin() as conn:
        conn.execute(
            "WITH t AS (INSERT INTO workspaces (name) SELECT 'w' || g FROM generate_series(1, 40) g RETURNING id),"
            " p AS (INSERT INTO pipelines (tenant_id, name, is_default) SELECT id, 'Sales', true FROM t"
            "       RETURNING tenant_id, id),"
            " s AS (INSERT INTO stages (tenant_id, pipeline_id, name, position, kind)"
            "       SELECT tenant_id, id, 'New', 0, 'open' FROM p RETURNING tenant_id, id, pipeline_id)"
            " INSERT INTO leads (tenant_id, title, pipeline_id, stage_id, status, created_at)"
            " SELECT s.tenant_id, 'deal ' || md5(g::text), s.pipeline_id, s.id, 'open',"
            "        now() - g * interval '1 minute'"
            " FROM s, generate_series(1, 500) g")
        conn.execute("ANALYZE")
        [(tenant,)] = conn.execute("SELECT tenant_id FROM leads LIMIT 1").fetchall()
    from chalicelib.crm import leads, store
    from chalicelib.crm.listing import parse_list

    for query in ({"limit": "50"}, {"q": "deal 0a", "limit": "50"}, {"sort": "value"}, {"sort": "title"},
                  {"status": "open", "limit": "50"}):
        statement, params = store.list_statement(
            leads.TABLE, parse_list(leads.TABLE.listing, query, tenant=uuid.UUID(str(tenant))))
        with tenant_tx(str(tenant), db=app_db) as conn:
            rows = conn.execute(sql.SQL("EXPLAIN ") + statement, params).fetchall()
        plan = "\n".join(str(r[0]) for r in rows)
        assert "Seq Scan" not in plan, (query, plan)
        assert "Index" in plan, (query, plan)


# ---- O01: canaries in every personal or free-text field never reach a log line ---------------------------------------


def test_canaries_in_crm_fields_never_reach_the_logs(api: Client, outbox: Outbox, logs: Any,
                                                     fresh_db: TestDatabase) -> None:
    owner = sign_in(api, "canary-owner@example.test", outbox)
    ws = str(create_workspace(api, owner, "Canary")["id"])
    base = f"/workspaces/{ws}"
    planted: list[str] = []

    def plant(kind: str) -> str:
        # The catalogue's form, which logsafe's value patterns would redact anyway, plus a plain one that no
        # pattern recognises: only keeping values out of log calls keeps that one out.
        marked, plain = f"CANARY-{kind}-{uuid.uuid4()}", f"canary {kind} {uuid.uuid4().hex[:8]}"
        planted.extend((marked, plain))
        return f"{marked} {plain}"

    def send(method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        response = call(api, method, base + path, owner, body)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, response.body)
        if response.status_code >= 400:
            # Error bodies name fields, never values (R14).
            assert not any(c in response.body.decode() for c in planted), response.body
        return response

    email_local = f"canary-{uuid.uuid4().hex}"
    planted.append(email_local)
    send("POST", "/custom-fields", {"object": "lead", "key": "memo", "label": "Memo", "type": "text"}, 201)
    send("POST", "/custom-fields", {"object": "contact", "key": "score", "label": "Score", "type": "number"}, 201)
    company = body_of(send("POST", "/companies", {"name": plant("company")}, 201))
    contact = body_of(send("POST", "/contacts", {"first_name": plant("first"), "last_name": plant("last"),
                                                 "email": f"{email_local}@example.test",
                                                 "company_id": company["id"]}, 201))
    lead = body_of(send("POST", "/leads", {"title": plant("title"), "contact_id": contact["id"],
                                           "custom": {"memo": plant("memo")}}, 201))
    note = body_of(send("POST", "/notes", {"body": plant("note"), "lead_id": lead["id"]}, 201))
    for path in (f"/companies/{company['id']}", f"/contacts/{contact['id']}", f"/leads/{lead['id']}",
                 f"/notes/{note['id']}", f"/leads/{lead['id']}/stage-history"):
        send("GET", path, expect=200)
    # Canaries in query strings and paths: the request line logs the route template only.
    for query in (f"q={quote(text)}" for text in (planted[1], planted[2], email_local, planted[4], planted[6])):
        for collection in ("/companies", "/contacts", "/leads"):
            send("GET", f"{collection}?{query}", expect=200)
    send("GET", f"/leads/{plant('path')}", expect=404)
    # Error paths with canary values: a duplicate email, a custom value of the wrong type, a bad phone.
    send("POST", "/contacts", {"first_name": plant("dup"), "email": f"{email_local}@example.test"}, 409)
    send("POST", "/contacts", {"first_name": "x", "custom": {"score": plant("score")}}, 422)
    send("POST", "/contacts", {"first_name": "x", "phone": plant("phone")}, 422)
    send("POST", "/leads", {"title": plant("title2"), "contact_id": str(uuid.uuid4())}, 422)
    send("PATCH", f"/leads/{lead['id']}", {"title": plant("title3"), "custom": {"memo": plant("memo2")}}, 200)
    send("PATCH", f"/contacts/{contact['id']}", {"last_name": plant("last2")}, 200)
    send("PATCH", f"/notes/{note['id']}", {"body": plant("note2")}, 200)
    send("PATCH", f"/companies/{company['id']}", {"name": plant("company2")}, 200)
    sales = body_of(send("GET", "/pipelines", expect=200))["data"][0]
    send("PATCH", f"/leads/{lead['id']}", {"stage_id": sales["stages"][3]["id"]}, 200)
    send("GET", f"/pipelines/{sales['id']}/board", expect=200)
    for path in (f"/notes/{note['id']}", f"/leads/{lead['id']}", f"/contacts/{contact['id']}",
                 f"/companies/{company['id']}"):
        send("DELETE", path, expect=204)

    captured = logs.getvalue()
    lines = [json.loads(line) for line in captured.splitlines() if line.strip()]
    routes = {line.get("route") for line in lines if line.get("msg") == "request"}
    assert "/workspaces/{workspace_id}/leads/{lead_id}" in routes
    assert "/workspaces/{workspace_id}/contacts" in routes
    leaked = [c for c in planted if c in captured or c.lower() in captured.lower()]
    assert leaked == [], leaked
    # The audit trail holds ids and field names, never the values.
    with fresh_db.admin() as conn:
        trail = " ".join(str(r[0]) for r in conn.execute("SELECT to_jsonb(a)::text FROM audit_log a"))
    assert not [c for c in planted if c in trail]
