"""Leads: placement in pipelines, money as integer minor units, stage history, references, lists, preconditions,
Idempotency-Key, and the create transaction (lead + stage history + audit written together)."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.db.pool import Database
from tests.api.auth_helpers import ORIGIN, Outbox, body_of, call, create_key, problem
from tests.api.crm_helpers import Workspace, at, insert_rows, new_workspace, rows_of, without_request_id
from tests.conftest import TestDatabase
from tests.fix_crm import installed, shared_app
from tests.pgtrace import round_trips, trace_lines


@pytest.fixture
def ws(api: Client, outbox: Outbox) -> Workspace:
    return new_workspace(api, outbox)


def _sales(ws: Workspace) -> dict[str, Any]:
    [sales] = [p for p in body_of(ws.get("/pipelines"))["data"] if p["is_default"]]
    return dict(sales)


def _stage_ids(pipeline: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["id"] for s in pipeline["stages"]}


def _lead(ws: Workspace, **body: Any) -> dict[str, Any]:
    return ws.create("/leads", {"title": "Deal", **body})


def _history(ws: Workspace, lead_id: str) -> list[dict[str, Any]]:
    response = ws.get(f"/leads/{lead_id}/stage-history")
    assert response.status_code == 200, response.body
    return list(body_of(response)["data"])


# ---- placement ----------------------------------------------------------------------------------------------------


def test_create_with_defaults_goes_to_first_stage_of_default_pipeline(ws: Workspace) -> None:
    sales = _sales(ws)
    response = ws.post("/leads", {"title": "Big deal"})
    assert response.status_code == 201, response.body
    lead = body_of(response)
    assert response.headers["Location"] == f"/workspaces/{ws.id}/leads/{lead['id']}"
    assert response.headers["ETag"]
    assert lead["title"] == "Big deal"
    assert (lead["pipeline_id"], lead["stage_id"], lead["status"]) == (sales["id"], sales["stages"][0]["id"], "open")
    assert lead["value"] is None and lead["custom"] == {} and lead["owner_id"] is None
    read = ws.get(f"/leads/{lead['id']}")
    assert body_of(read) == lead
    assert read.headers["ETag"] == response.headers["ETag"]


def test_create_with_pipeline_only_goes_to_its_first_stage(ws: Workspace) -> None:
    other = ws.create("/pipelines", {"name": "Other", "stages": [{"name": "Intro"}, {"name": "Done", "kind": "won"}]})
    lead = _lead(ws, pipeline_id=other["id"])
    assert (lead["pipeline_id"], lead["stage_id"], lead["status"]) == (other["id"], other["stages"][0]["id"], "open")


def test_create_with_stage_only_takes_its_pipeline_and_kind(ws: Workspace) -> None:
    other = ws.create("/pipelines", {"name": "Other", "stages": [{"name": "Intro"}, {"name": "Done", "kind": "won"}]})
    lead = _lead(ws, stage_id=other["stages"][1]["id"])
    assert (lead["pipeline_id"], lead["stage_id"], lead["status"]) == (other["id"], other["stages"][1]["id"], "won")
    lost = _lead(ws, stage_id=_stage_ids(_sales(ws))["Lost"])
    assert lost["status"] == "lost"


def test_stage_of_another_pipeline_than_pipeline_id_is_422(ws: Workspace, fresh_db: TestDatabase) -> None:
    other = ws.create("/pipelines", {"name": "Other"})
    body = problem(ws.post("/leads", {"title": "x", "pipeline_id": other["id"],
                                      "stage_id": _sales(ws)["stages"][1]["id"]}), 422)
    assert [e["field"] for e in body["errors"]] == ["stage_id"]
    assert rows_of(fresh_db, "SELECT count(*) FROM leads") == [(0,)]


BAD_MONEY = [
    ({"amount_minor": 1.5, "currency": "EUR"}, "value.amount_minor"),
    ({"amount_minor": "100", "currency": "EUR"}, "value.amount_minor"),
    ({"amount_minor": 100.0, "currency": "EUR"}, "value.amount_minor"),
    ({"amount_minor": True, "currency": "EUR"}, "value.amount_minor"),
    ({"amount_minor": 2**63, "currency": "EUR"}, "value.amount_minor"),
    ({"amount_minor": 100, "currency": "XYZ"}, "value.currency"),
    ({"amount_minor": 100, "currency": "eur"}, "value.currency"),
    ({"amount_minor": 100}, "value.currency"),
    ({"currency": "EUR"}, "value.amount_minor"),
    ({"amount_minor": 100, "currency": "EUR", "precision": 2}, "value.precision"),
]


def test_bad_money_is_422_naming_the_field(ws: Workspace, fresh_db: TestDatabase) -> None:
    lead = _lead(ws)
    for value, field in BAD_MONEY:
        for response in (ws.post("/leads", {"title": "x", "value": value}),
                         ws.patch(f"/leads/{lead['id']}", {"value": value})):
            body = problem(response, 422)
            assert field in [e["field"] for e in body["errors"]], (value, body)
    assert rows_of(fresh_db, "SELECT count(*), count(value_amount_minor) FROM leads") == [(1, 0)]


def test_an_amount_beyond_the_json_parsers_digit_limit_is_400_not_500(ws: Workspace) -> None:
    raw = '{"title": "x", "value": {"amount_minor": ' + "1" * 5000 + ', "currency": "EUR"}}'
    problem(ws.client.http.post(ws.base + "/leads", body=raw, headers={
        "Content-Type": "application/json", "Cookie": ws.browser.cookie, "X-CSRF-Token": ws.browser.csrf,
        "Origin": ORIGIN}), 400)


def test_money_round_trips_as_integer_minor_units(ws: Workspace, fresh_db: TestDatabase) -> None:
    for amount in (0, 1, -250, 123_456_789_012_345_678, 2**63 - 1):
        response = ws.post("/leads", {"title": "x", "value": {"amount_minor": amount, "currency": "JPY"}})
        assert response.status_code == 201, response.body
        # An integer in the JSON text itself: no exponent, no fraction.
        assert f'"amount_minor": {amount},' in json.dumps(json.loads(response.body)), response.body
        # The raw number as sent on the wire (not a substring test: a timestamp may well contain "1.0").
        raw = re.search(rb'"amount_minor":\s*([-+0-9.eE]+)', response.body)
        assert raw is not None and raw.group(1) == str(amount).encode(), response.body
        lead = body_of(response)
        assert lead["value"] == {"amount_minor": amount, "currency": "JPY"}
        assert type(lead["value"]["amount_minor"]) is int
        assert body_of(ws.get(f"/leads/{lead['id']}"))["value"] == lead["value"]
        assert rows_of(fresh_db, "SELECT value_amount_minor, value_currency FROM leads WHERE id = %s",
                       (lead["id"],)) == [(amount, "JPY")]


def test_value_is_changed_and_cleared_by_patch(ws: Workspace) -> None:
    lead = _lead(ws, value={"amount_minor": 100, "currency": "EUR"})
    changed = body_of(ws.patch(f"/leads/{lead['id']}", {"value": {"amount_minor": 250, "currency": "USD"}}))
    assert changed["value"] == {"amount_minor": 250, "currency": "USD"}
    cleared = body_of(ws.patch(f"/leads/{lead['id']}", {"value": None}))
    assert cleared["value"] is None


# ---- stage history and status --------------------------------------------------------------------------------------


def test_every_stage_change_is_in_the_history_including_creation(ws: Workspace) -> None:
    stages = _stage_ids(_sales(ws))
    lead = _lead(ws)
    assert ws.patch(f"/leads/{lead['id']}", {"title": "renamed"}).status_code == 200  # no move, no entry
    for name in ("Qualified", "Proposal", "Qualified", "Won"):
        response = ws.patch(f"/leads/{lead['id']}", {"stage_id": stages[name]})
        assert response.status_code == 200, response.body
    # The same stage again is no move.
    assert ws.patch(f"/leads/{lead['id']}", {"stage_id": stages["Won"]}).status_code == 200
    history = _history(ws, lead["id"])
    moves = [(h["from_stage_id"], h["to_stage_id"]) for h in history]
    path = [stages[n] for n in ("New", "Qualified", "Proposal", "Qualified", "Won")]
    assert moves == [(None, path[0]), *itertools.pairwise(path)]
    assert all(h["actor_user_id"] == ws.user_id and h["actor_api_key_id"] is None for h in history)
    times = [h["changed_at"] for h in history]
    assert times == sorted(times) and all(t.endswith(("Z", "+00:00")) for t in times)


def test_stage_history_is_paged_with_cursors_bound_to_the_lead(ws: Workspace) -> None:
    stages = _stage_ids(_sales(ws))
    lead, other = _lead(ws), _lead(ws)
    for name in ("Qualified", "Proposal", "Won", "Lost"):
        ws.patch(f"/leads/{lead['id']}", {"stage_id": stages[name]})
    pages, cursor = [], None
    while True:
        page = body_of(ws.get(f"/leads/{lead['id']}/stage-history?limit=2" + (f"&cursor={cursor}" if cursor else "")))
        pages.append([h["to_stage_id"] for h in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        last = cursor
    assert pages == [[stages["New"], stages["Qualified"]], [stages["Proposal"], stages["Won"]], [stages["Lost"]]]
    assert [h["to_stage_id"] for h in _history(ws, lead["id"])] == [s for p in pages for s in p]
    problem(ws.get(f"/leads/{other['id']}/stage-history?limit=2&cursor={last}"), 400)  # another lead's cursor
    problem(ws.get(f"/leads/{lead['id']}/stage-history?lead_id={other['id']}"), 400)
    problem(ws.get(f"/leads/{lead['id']}/stage-history?limit=201"), 400)


def test_history_records_the_api_key_as_actor(ws: Workspace) -> None:
    key = create_key(ws.client, ws.browser, ws.id)
    stages = _stage_ids(_sales(ws))
    created = call(ws.client, "POST", f"{ws.base}/leads", body={"title": "by key"}, bearer=key["key"], origin=None)
    assert created.status_code == 201, created.body
    lead = body_of(created)
    moved = call(ws.client, "PATCH", f"{ws.base}/leads/{lead['id']}", body={"stage_id": stages["Won"]},
                 bearer=key["key"], origin=None)
    assert moved.status_code == 200, moved.body
    history = _history(ws, lead["id"])
    assert [(h["actor_user_id"], h["actor_api_key_id"]) for h in history] == [(None, key["id"])] * 2


def test_status_follows_the_stage_kind(ws: Workspace) -> None:
    stages = _stage_ids(_sales(ws))
    lead = _lead(ws)
    for name, status in (("Won", "won"), ("Lost", "lost"), ("Proposal", "open")):
        assert body_of(ws.patch(f"/leads/{lead['id']}", {"stage_id": stages[name]}))["status"] == status
    problem(ws.patch(f"/leads/{lead['id']}", {"status": "won"}), 422)  # derived, never sent


def test_moving_to_another_pipeline_takes_its_first_stage_and_is_recorded(ws: Workspace) -> None:
    sales = _sales(ws)
    other = ws.create("/pipelines", {"name": "Other", "stages": [{"name": "Closed", "kind": "won"}, {"name": "B"}]})
    lead = _lead(ws)
    moved = body_of(ws.patch(f"/leads/{lead['id']}", {"pipeline_id": other["id"]}))
    assert (moved["pipeline_id"], moved["stage_id"], moved["status"]) == (other["id"], other["stages"][0]["id"], "won")
    assert [(h["from_stage_id"], h["to_stage_id"]) for h in _history(ws, lead["id"])] == [
        (None, sales["stages"][0]["id"]), (sales["stages"][0]["id"], other["stages"][0]["id"])]
    problem(ws.patch(f"/leads/{lead['id']}", {"pipeline_id": sales["id"], "stage_id": other["stages"][1]["id"]}),
            422)
    problem(ws.patch(f"/leads/{lead['id']}", {"stage_id": None}), 422)
    problem(ws.patch(f"/leads/{lead['id']}", {"pipeline_id": None}), 422)


def test_history_of_unknown_lead_is_404(ws: Workspace) -> None:
    problem(ws.get(f"/leads/{uuid.uuid4()}/stage-history"), 404)


# ---- references (R12) -------------------------------------------------------------------------------------------


def _foreign_refs(api: Client, outbox: Outbox) -> dict[str, str]:
    """Ids of rows of another workspace, one per reference field of a lead."""
    other = new_workspace(api, outbox, "other")
    sales = _sales(other)
    return {
        "contact_id": other.create("/contacts", {"first_name": "Ann"})["id"],
        "company_id": other.create("/companies", {"name": "Other Inc"})["id"],
        "owner_id": other.user_id,
        "stage_id": sales["stages"][1]["id"],
        "pipeline_id": sales["id"],
    }


def test_references_to_another_workspace_are_refused_like_random_ids(
        ws: Workspace, api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    foreign = _foreign_refs(api, outbox)
    lead = _lead(ws)
    before = rows_of(fresh_db, "SELECT * FROM leads WHERE tenant_id = %s ORDER BY id", (ws.id,))
    for field, value in foreign.items():
        for method, path in (("POST", "/leads"), ("PATCH", f"/leads/{lead['id']}")):
            answers = []
            for sent in (value, str(uuid.uuid4())):
                body = {"title": "ref", field: sent} if method == "POST" else {field: sent}
                response = ws.call(method, path, body)
                answers.append((response.status_code, without_request_id(response)))
            # Same status, same body (but the request id): nothing tells A's row from no row.
            assert answers[0] == answers[1], (field, method, answers)
            assert answers[0][0] == 422, (field, method, answers)
            assert field in [e["field"] for e in answers[0][1]["errors"]]
    assert rows_of(fresh_db, "SELECT * FROM leads WHERE tenant_id = %s ORDER BY id", (ws.id,)) == before


def test_references_of_the_same_workspace_are_accepted(ws: Workspace, outbox: Outbox) -> None:
    contact = ws.create("/contacts", {"first_name": "Bo"})
    company = ws.create("/companies", {"name": "Acme"})
    member = ws.as_member(outbox)
    lead = _lead(ws, contact_id=contact["id"], company_id=company["id"], owner_id=member.user_id)
    assert (lead["contact_id"], lead["company_id"], lead["owner_id"]) == (contact["id"], company["id"],
                                                                          member.user_id)


# ---- lists ------------------------------------------------------------------------------------------------------


def _walk(ws: Workspace, query: str, limit: int = 3) -> list[dict[str, Any]]:
    """Every row of a list, page by page through next_cursor."""
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        sep = "&" if query else ""
        suffix = f"{query}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = ws.get(f"/leads?{suffix}")
        assert response.status_code == 200, response.body
        page = body_of(response)
        assert len(page["data"]) <= limit
        seen.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the cursor walk did not end")


@dataclass
class Listing:
    """A workspace seeded once for the (read-only) list tests of this module."""

    ws: Workspace
    db: TestDatabase
    seeded: dict[str, Any]
    data_dir: Path
    app: Database


def _seed(ws: Workspace, db: TestDatabase, outbox: Outbox) -> dict[str, Any]:
    """Eleven leads with set times, values, stages, owners and references (inserted directly)."""
    sales = _sales(ws)
    other = ws.create("/pipelines", {"name": "Other"})
    stages = _stage_ids(sales)
    member = ws.as_member(outbox)
    ws.create("/custom-fields", {"object": "lead", "key": "source", "label": "Source", "type": "select",
                                 "options": ["web", "referral", "event"]})
    [contact] = insert_rows(db, "contacts", ws.id, [{"first_name": "Cy"}])
    [company] = insert_rows(db, "companies", ws.id, [{"name": "Acme"}])
    kinds = {"New": "open", "Qualified": "open", "Won": "won", "Lost": "lost"}
    specs = [
        # title, minutes after T0 created, minutes updated, amount, stage, owner, custom
        ("acme renewal", 0, 50, 500, "New", ws.user_id, {"source": "web"}),
        ("beta pilot", 1, 1, None, "New", None, {}),
        ("Big ACME deal", 2, 40, 500, "Qualified", member.user_id, {"source": "referral"}),
        ("delta", 3, 3, 10, "Won", ws.user_id, {"source": "web"}),
        ("echo 50% off", 4, 60, 7, "Lost", None, {}),
        ("foxtrot", 5, 5, 9_000_000_000_000, "New", None, {"source": "event"}),
        ("golf", 5, 5, -3, "Qualified", member.user_id, {}),
        ("hotel 50 off", 6, 6, 0, "New", None, {}),
        ("india", 7, 70, 500, "Won", None, {"source": "web"}),
        ("juliet", 8, 8, None, "New", ws.user_id, {}),
    ]
    rows = [{"title": t, "created_at": at(c), "updated_at": at(u), "value_amount_minor": v,
             "value_currency": "EUR" if v is not None else None, "pipeline_id": sales["id"],
             "stage_id": stages[s], "status": kinds[s], "owner_id": o, "custom": cu,
             "contact_id": contact if i % 3 == 0 else None, "company_id": company if i % 2 == 0 else None}
            for i, (t, c, u, v, s, o, cu) in enumerate(specs)]
    rows.append({"title": "kilo other pipeline", "created_at": at(9), "updated_at": at(9), "pipeline_id": other["id"],
                 "stage_id": other["stages"][0]["id"], "status": "open"})
    ids = insert_rows(db, "leads", ws.id, rows)
    for row, lead_id in zip(rows, ids, strict=True):
        row["id"] = lead_id
    return {"rows": rows, "stages": stages, "sales": sales, "other": other, "member": member.user_id,
            "contact": contact, "company": company}


@pytest.fixture(scope="module")
def listing_world(pg_admin_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listing]:
    """Built once: the list tests only read."""
    with shared_app(pg_admin_url, template_db, tmp_path_factory.mktemp("lists")) as shared:
        ws = new_workspace(shared.client, shared.outbox)
        yield Listing(ws, shared.db, _seed(ws, shared.db, shared.outbox), shared.data_dir, shared.app)


@pytest.fixture
def listing(listing_world: Listing) -> Iterator[tuple[Workspace, dict[str, Any]]]:
    """The module's seeded workspace, installed again for each test (other tests install their own)."""
    with installed(listing_world.app, listing_world.data_dir):
        yield listing_world.ws, listing_world.seeded


def _titles(rows: list[dict[str, Any]]) -> list[str]:
    return [r["title"] for r in rows]


def _expected(seeded: dict[str, Any], key: Callable[[dict[str, Any]], Any], reverse: bool,
              keep: Callable[[dict[str, Any]], bool] = lambda r: True) -> list[str]:
    rows = [r for r in seeded["rows"] if keep(r)]
    return _titles(sorted(rows, key=lambda r: (key(r), r["id"]), reverse=reverse))


def test_default_list_is_newest_first_with_id_tiebreak(listing: tuple[Workspace, dict[str, Any]]) -> None:
    ws, seeded = listing
    assert _titles(_walk(ws, "")) == _expected(seeded, lambda r: r["created_at"], True)
    assert _titles(_walk(ws, "sort=created_at", limit=50)) == _expected(seeded, lambda r: r["created_at"], True)


def test_sort_by_value_is_largest_first(listing: tuple[Workspace, dict[str, Any]]) -> None:
    ws, seeded = listing
    walked = _walk(ws, "sort=value")
    assert _titles(walked) == _expected(seeded, lambda r: r.get("value_amount_minor") or 0, True)
    assert walked[0]["value"] == {"amount_minor": 9_000_000_000_000, "currency": "EUR"}


def test_sort_by_title_and_updated_at(listing: tuple[Workspace, dict[str, Any]], listing_world: Listing) -> None:
    ws, seeded = listing
    titles = [r[0] for r in rows_of(listing_world.db, "SELECT title FROM leads ORDER BY title, id")]
    assert _titles(_walk(ws, "sort=title", limit=4)) == titles
    assert _titles(_walk(ws, "sort=updated_at", limit=2)) == _expected(seeded, lambda r: r["updated_at"], True)


def test_unknown_sort_and_oversized_limit_are_400(listing: tuple[Workspace, dict[str, Any]]) -> None:
    ws, _ = listing
    problem(ws.get("/leads?sort=status"), 400)
    assert "200" in problem(ws.get("/leads?limit=201"), 400)["detail"]
    problem(ws.get("/leads?owner_id=not-an-id"), 400)
    problem(ws.get("/leads?status=maybe"), 400)


def test_cursor_is_bound_to_its_sort_and_filters(listing: tuple[Workspace, dict[str, Any]]) -> None:
    ws, _seeded = listing
    cursor = body_of(ws.get("/leads?sort=value&limit=2"))["next_cursor"]
    assert cursor
    problem(ws.get(f"/leads?sort=title&limit=2&cursor={cursor}"), 400)
    problem(ws.get(f"/leads?sort=value&status=won&limit=2&cursor={cursor}"), 400)
    problem(ws.get(f"/leads?sort=value&limit=2&cursor={cursor[:-2]}xx"), 400)
    assert ws.get(f"/leads?sort=value&limit=5&cursor={cursor}").status_code == 200


@pytest.mark.parametrize("name", ["stage_id", "pipeline_id", "status", "owner_id", "contact_id", "company_id"])
def test_filters(listing: tuple[Workspace, dict[str, Any]], name: str) -> None:
    ws, seeded = listing
    value = {"stage_id": seeded["stages"]["New"], "pipeline_id": seeded["other"]["id"], "status": "won",
             "owner_id": seeded["member"], "contact_id": seeded["contact"], "company_id": seeded["company"]}[name]
    got = _walk(ws, f"{name}={value}", limit=2)
    assert got, name
    assert _titles(got) == _expected(seeded, lambda r: r["created_at"], True,
                                     keep=lambda r: str(r.get(name)) == value)


def test_filters_combine(listing: tuple[Workspace, dict[str, Any]]) -> None:
    ws, seeded = listing
    got = _walk(ws, f"status=open&owner_id={seeded['member']}&sort=title")
    assert _titles(got) == ["Big ACME deal", "golf"]


def test_search_matches_titles_case_insensitively(listing: tuple[Workspace, dict[str, Any]]) -> None:
    ws, _seeded = listing
    assert sorted(_titles(_walk(ws, "q=ACME"))) == ["Big ACME deal", "acme renewal"]
    # LIKE wildcards in q are literal characters.
    assert _titles(_walk(ws, "q=50%25")) == ["echo 50% off"]
    assert _titles(_walk(ws, "q=_")) == []
    assert len(_walk(ws, "q=50")) == 2


def test_custom_select_filter(listing: tuple[Workspace, dict[str, Any]]) -> None:
    ws, seeded = listing
    got = _walk(ws, "custom.source=web", limit=2)
    assert _titles(got) == _expected(seeded, lambda r: r["created_at"], True,
                                     keep=lambda r: r.get("custom", {}).get("source") == "web")
    problem(ws.get("/leads?custom.source=nothing"), 400)  # not one of the field's options


def test_created_after_and_before(listing: tuple[Workspace, dict[str, Any]]) -> None:
    ws, _seeded = listing
    got = _walk(ws, f"created_after={at(4).isoformat()}&created_before={at(7).isoformat()}".replace("+", "%2B"))
    assert sorted(_titles(got)) == ["foxtrot", "golf", "hotel 50 off"]


def test_custom_values_are_validated(ws: Workspace) -> None:
    ws.create("/custom-fields", {"object": "lead", "key": "source", "label": "Source", "type": "select",
                                 "options": ["web"]})
    body = problem(ws.post("/leads", {"title": "x", "custom": {"source": "fax"}}), 422)
    assert [e["field"] for e in body["errors"]] == ["custom.source"]
    assert _lead(ws, custom={"source": "web"})["custom"] == {"source": "web"}


# ---- preconditions and deletion ------------------------------------------------------------------------------


def test_patch_honours_if_match(ws: Workspace) -> None:
    lead = _lead(ws)
    etag = ws.get(f"/leads/{lead['id']}").headers["ETag"]
    first = ws.patch(f"/leads/{lead['id']}", {"title": "first"}, headers={"If-Match": etag})
    assert first.status_code == 200, first.body
    assert first.headers["ETag"] != etag
    problem(ws.patch(f"/leads/{lead['id']}", {"title": "second"}, headers={"If-Match": etag}), 412)
    assert body_of(ws.get(f"/leads/{lead['id']}"))["title"] == "first"
    assert ws.patch(f"/leads/{lead['id']}", {"title": "third"}, headers={"If-Match": "*"}).status_code == 200


def test_delete_honours_if_match_and_removes_history(ws: Workspace, fresh_db: TestDatabase) -> None:
    lead = _lead(ws)
    etag = ws.get(f"/leads/{lead['id']}").headers["ETag"]
    ws.patch(f"/leads/{lead['id']}", {"title": "changed"})
    problem(ws.delete(f"/leads/{lead['id']}", headers={"If-Match": etag}), 412)
    current = ws.get(f"/leads/{lead['id']}").headers["ETag"]
    response = ws.delete(f"/leads/{lead['id']}", headers={"If-Match": current})
    assert response.status_code == 204, response.body
    problem(ws.get(f"/leads/{lead['id']}"), 404)
    problem(ws.delete(f"/leads/{lead['id']}"), 404)
    assert rows_of(fresh_db, "SELECT count(*) FROM lead_stage_history WHERE lead_id = %s", (lead["id"],)) == [(0,)]
    actions = rows_of(fresh_db, "SELECT action FROM audit_log WHERE target_id = %s ORDER BY occurred_at",
                      (lead["id"],))
    assert [a for (a,) in actions] == ["lead.created", "lead.updated", "lead.deleted"]


def test_member_may_write_leads(ws: Workspace, outbox: Outbox) -> None:
    member = ws.as_member(outbox)
    lead = member.create("/leads", {"title": "mine"})
    assert member.patch(f"/leads/{lead['id']}", {"title": "still mine"}).status_code == 200
    assert member.delete(f"/leads/{lead['id']}").status_code == 204


# ---- Idempotency-Key ----------------------------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_response(ws: Workspace, fresh_db: TestDatabase) -> None:
    body = {"title": "once", "value": {"amount_minor": 100, "currency": "EUR"}}
    first = ws.post("/leads", body, headers={"Idempotency-Key": "k-1"})
    again = ws.post("/leads", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert json.loads(again.body) == json.loads(first.body)
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert rows_of(fresh_db, "SELECT count(*) FROM leads") == [(1,)]
    assert rows_of(fresh_db, "SELECT count(*) FROM lead_stage_history") == [(1,)]
    problem(ws.post("/leads", {**body, "title": "twice"}, headers={"Idempotency-Key": "k-1"}), 409)
    assert rows_of(fresh_db, "SELECT count(*) FROM leads") == [(1,)]
    # Another key is another request.
    assert ws.post("/leads", body, headers={"Idempotency-Key": "k-2"}).status_code == 201
    assert rows_of(fresh_db, "SELECT count(*) FROM leads") == [(2,)]


def test_failed_create_does_not_burn_the_idempotency_key(ws: Workspace, fresh_db: TestDatabase) -> None:
    bad = {"title": "x", "contact_id": str(uuid.uuid4())}
    problem(ws.post("/leads", bad, headers={"Idempotency-Key": "k-bad"}), 422)
    assert rows_of(fresh_db, "SELECT count(*) FROM idempotency_keys") == [(0,)]
    assert ws.post("/leads", {"title": "x"}, headers={"Idempotency-Key": "k-bad"}).status_code == 201


# ---- the create transaction (B3 semantics) ---------------------------------------------------------------------------


def test_create_writes_lead_history_and_audit_in_one_transaction(ws: Workspace, fresh_db: TestDatabase) -> None:
    lead = _lead(ws, value={"amount_minor": 5, "currency": "EUR"})
    [(lead_tx,)] = rows_of(fresh_db, "SELECT xmin::text FROM leads WHERE id = %s", (lead["id"],))
    history = rows_of(fresh_db, "SELECT xmin::text, from_stage_id, to_stage_id, actor_user_id FROM lead_stage_history"
                                " WHERE lead_id = %s", (lead["id"],))
    audit = rows_of(fresh_db, "SELECT xmin::text, action, actor_user_id, details FROM audit_log WHERE target_id = %s",
                    (lead["id"],))
    assert [(h[0], h[1], str(h[2]), str(h[3])) for h in history] == [(lead_tx, None, lead["stage_id"], ws.user_id)]
    assert [(a[0], a[1], str(a[2])) for a in audit] == [(lead_tx, "lead.created", ws.user_id)]
    # Ids and field names only: no title or value in the audit trail.
    assert "Deal" not in json.dumps(audit[0][3])


def test_failed_create_leaves_no_history_or_audit_row(ws: Workspace, fresh_db: TestDatabase) -> None:
    before = rows_of(fresh_db, "SELECT count(*) FROM audit_log")
    for ref in ("contact_id", "company_id", "owner_id"):
        problem(ws.post("/leads", {"title": "x", ref: str(uuid.uuid4())}), 422)
    assert rows_of(fresh_db, "SELECT count(*) FROM leads") == [(0,)]
    assert rows_of(fresh_db, "SELECT count(*) FROM lead_stage_history") == [(0,)]
    assert rows_of(fresh_db, "SELECT count(*) FROM audit_log") == before


def _round_trips_after(app_db: Database, marker: str, action: Callable[[], None]) -> tuple[int, str]:
    """How many client->server batches libpq sent from the one holding `marker` to the answer of the Sync
    that commits, and the text of the first of them."""
    lines = trace_lines(app_db, action)
    start = next(i for i, line in enumerate(lines) if line.startswith("F") and marker in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("B") and "ReadyForQuery" in lines[i])
    batches = round_trips(lines[start:end])
    return len(batches), "\n".join(batches[0])


def test_writes_after_validation_travel_in_one_round_trip(ws: Workspace, app_db: Database) -> None:
    def create() -> None:
        _lead(ws, value={"amount_minor": 5, "currency": "EUR"})

    batches, first = _round_trips_after(app_db, "INSERT INTO \"leads\"", create)
    for needed in ("INSERT INTO \"leads\"", "INSERT INTO lead_stage_history", "INSERT INTO audit_log", "\tSync"):
        assert needed in first, f"{needed} was not sent with the lead's INSERT"
    # ...and no other batch until the Sync that commits is answered.
    assert batches == 1, first


def test_create_takes_two_round_trips_authorization_with_validation_then_writes(
        ws: Workspace, app_db: Database) -> None:
    def create() -> None:
        _lead(ws, custom={})

    batches, first = _round_trips_after(app_db, "set_config('app.tenant_id'", create)
    # 1: the tenant, the caller's authorization, the stage and the custom field definitions;
    # 2: the writes and the Sync that commits them.
    for needed in ("set_config", "app.authorize_session", "FROM stages", "FROM custom_fields"):
        assert needed in first, (needed, first)
    assert batches == 2, batches
