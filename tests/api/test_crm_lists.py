"""List semantics on contacts and companies: limit, signed cursors bound to the query, sort allowlist
with id tiebreaker, q search, filters, custom select filters, and hostile parameters (R19)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from chalice.test import Client

from tests.api.auth_helpers import Outbox, body_of, problem
from tests.api.crm_helpers import Workspace, at, insert_rows, new_workspace, rows_of
from tests.conftest import TestDatabase


@pytest.fixture
def ws(api: Client, outbox: Outbox) -> Workspace:
    return new_workspace(api, outbox, "lister")


def _seed(db: TestDatabase, ws: Workspace, table: str, count: int, **extra: Any) -> list[dict[str, Any]]:
    """`count` rows with tied timestamps and names (so the id tiebreaker matters)."""
    rows = []
    for i in range(count):
        row: dict[str, Any] = {"created_at": at(i // 4), "updated_at": at(1000 - i // 3), **extra}
        if table == "contacts":
            row.update(first_name=f"Name {i // 5:03d}", email=f"person{i:03d}@example.com")
        else:
            row.update(name=f"Name {i // 5:03d}", domain=f"company{i:03d}.example")
        rows.append(row)
    ids = insert_rows(db, table, ws.id, rows)
    for row, record_id in zip(rows, ids, strict=True):
        row["id"] = uuid.UUID(record_id)
        row["name"] = row.get("name") or row["first_name"]
    return rows


def _walk(ws: Workspace, path: str, params: dict[str, str]) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = ws.get(f"{path}?{urlencode(query)}")
        assert response.status_code == 200, response.body
        page = body_of(response)
        assert len(page["data"]) <= int(params.get("limit", "50"))
        seen.extend(item["id"] for item in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the cursor walk did not end")


EXPECTED_ORDER = {
    "created_at": (lambda r: (r["created_at"], r["id"]), True),
    "updated_at": (lambda r: (r["updated_at"], r["id"]), True),
    "name": (lambda r: (r["name"], r["id"]), False),
}


@pytest.mark.parametrize("path", ["/contacts", "/companies"])
def test_cursor_walk_returns_every_row_once_in_order_for_each_sort(ws: Workspace, fresh_db: TestDatabase,
                                                                   path: str) -> None:
    rows = _seed(fresh_db, ws, path.strip("/"), 120)
    for sort, (key, descending) in EXPECTED_ORDER.items():
        expected = [str(r["id"]) for r in sorted(rows, key=key, reverse=descending)]
        params = {"limit": "7"} if sort == "created_at" else {"limit": "7", "sort": sort}
        assert _walk(ws, path, params) == expected, sort
    # The default sort is newest first.
    newest = [str(r["id"]) for r in sorted(rows, key=EXPECTED_ORDER["created_at"][0], reverse=True)]
    assert _walk(ws, path, {"limit": "200"}) == newest


def test_default_limit_is_50_and_above_200_is_a_400_saying_so(ws: Workspace, fresh_db: TestDatabase) -> None:
    _seed(fresh_db, ws, "contacts", 60)
    page = body_of(ws.get("/contacts"))
    assert len(page["data"]) == 50 and page["next_cursor"]
    assert len(body_of(ws.get("/contacts?limit=200"))["data"]) == 60
    assert body_of(ws.get("/contacts?limit=200"))["next_cursor"] is None
    assert "200" in problem(ws.get("/contacts?limit=201"), 400)["detail"]
    for bad in ("0", "-1", "abc", "1.5", "", "%C2%B2", "%D9%A3", "9" * 5000):  # "²" and Arabic-Indic 3: isdigit()
        problem(ws.get(f"/contacts?limit={bad}"), 400)
    assert len(body_of(ws.get("/contacts?limit=007"))["data"]) == 7
    # Given twice, which value would count is a guess: refused rather than guessed.
    assert "more than once" in problem(ws.get("/contacts?limit=1&limit=500"), 400)["detail"]


def test_a_tampered_cursor_is_400(ws: Workspace, fresh_db: TestDatabase) -> None:
    _seed(fresh_db, ws, "companies", 5)
    cursor = body_of(ws.get("/companies?limit=2"))["next_cursor"]
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    for bad in (flipped, cursor[:-4], "not-a-cursor", "", "=" * 8, quote("🙂")):
        if bad:
            problem(ws.get(f"/companies?limit=2&cursor={bad}"), 400)


def test_a_cursor_is_bound_to_its_filters_sort_list_and_workspace(api: Client, outbox: Outbox, ws: Workspace,
                                                                  fresh_db: TestDatabase) -> None:
    rows = _seed(fresh_db, ws, "contacts", 6)
    _seed(fresh_db, ws, "companies", 6)
    cursor = body_of(ws.get("/contacts?limit=2&q=name"))["next_cursor"]
    assert cursor
    assert ws.get(f"/contacts?limit=2&q=name&cursor={cursor}").status_code == 200
    assert ws.get(f"/contacts?limit=3&q=name&cursor={cursor}").status_code == 200  # limit may change
    problem(ws.get(f"/contacts?limit=2&q=other&cursor={cursor}"), 400)
    problem(ws.get(f"/contacts?limit=2&cursor={cursor}"), 400)
    problem(ws.get(f"/contacts?limit=2&q=name&sort=name&cursor={cursor}"), 400)
    problem(ws.get(f"/contacts?limit=2&q=name&owner_id={ws.user_id}&cursor={cursor}"), 400)
    problem(ws.get(f"/companies?limit=2&q=name&cursor={cursor}"), 400)
    other = new_workspace(api, outbox, "other")
    _seed(fresh_db, other, "contacts", 6)
    problem(other.get(f"/contacts?limit=2&q=name&cursor={cursor}"), 400)
    assert rows  # seeded


def test_q_searches_names_and_emails_case_insensitively(ws: Workspace) -> None:
    ws.create("/contacts", {"first_name": "Grace", "last_name": "Hopper", "email": "gh@navy.example"})
    ws.create("/contacts", {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@engine.example"})
    ws.create("/contacts", {"first_name": "100% Real", "email": "under_score@x.example"})
    ws.create("/companies", {"name": "Navy Yard", "domain": "yard.example"})
    ws.create("/companies", {"name": "Analytical", "domain": "engine.example"})

    def names(path: str, q: str) -> list[str]:
        data = body_of(ws.get(f"{path}?{urlencode({'q': q, 'sort': 'name'})}"))["data"]
        return [d.get("name") or d["first_name"] for d in data]

    assert names("/contacts", "HOPPER") == ["Grace"]
    assert names("/contacts", "love") == ["Ada"]
    assert names("/contacts", "navy.exa") == ["Grace"]
    assert names("/contacts", "grace hop") == ["Grace"]
    assert names("/contacts", "%") == ["100% Real"]  # wildcards are literal
    assert names("/contacts", "_") == ["100% Real"]
    assert names("/contacts", "nobody") == []
    assert names("/companies", "yard") == ["Navy Yard"]
    assert names("/companies", "ENGINE") == ["Analytical"]
    problem(ws.get("/contacts?q=" + "x" * 201), 400)


def test_q_matches_word_prefixes_in_any_order_and_pieces_with_punctuation_as_written(ws: Workspace) -> None:
    ws.create("/contacts", {"first_name": "Grace", "last_name": "Hopper", "email": "row3@example.com"})
    ws.create("/contacts", {"first_name": "José", "last_name": "Müller", "email": "row30@example.com"})

    def names(q: str) -> list[str]:
        return sorted(d["first_name"] for d in body_of(ws.get(f"/contacts?{urlencode({'q': q})}"))["data"])

    assert names("hopper grace") == ["Grace"]  # any order
    assert names("row3@example.com") == ["Grace"]  # not row30: the address as written
    assert names("row3") == ["Grace", "José"]  # a word prefix
    assert names("MÜLL") == ["José"] and names("josé") == ["José"]  # case-insensitive beyond ASCII
    assert names("opper") == []  # inside a word is no match: words are matched by their start
    ws.create("/contacts", {"first_name": "Seán", "last_name": "O\u2019Brien"})
    assert names("brien") == ["Seán"] and names("o\u2019brien") == ["Seán"]  # a typographic apostrophe splits too
    assert "at most 8 words" in problem(ws.get("/contacts?q=" + "+".join("abcdefghi")), 400)["detail"]


def test_search_words_follow_every_write(ws: Workspace, fresh_db: TestDatabase) -> None:
    lead = ws.create("/leads", {"title": "Zephyr pilot"})
    assert [d["id"] for d in body_of(ws.get("/leads?q=zeph"))["data"]] == [lead["id"]]
    ws.patch(f"/leads/{lead['id']}", {"title": "Aurora pilot"})
    assert body_of(ws.get("/leads?q=zeph"))["data"] == []
    assert [d["id"] for d in body_of(ws.get("/leads?q=auro"))["data"]] == [lead["id"]]
    ws.patch(f"/leads/{lead['id']}", {"expected_close_date": "2027-01-31"})  # no word changed: none rewritten
    assert rows_of(fresh_db, "SELECT term FROM search_terms WHERE record_id = %s ORDER BY term", (lead["id"],)) == [
        ("aurora",), ("pilot",)]
    ws.delete(f"/leads/{lead['id']}")
    assert rows_of(fresh_db, "SELECT count(*) FROM search_terms WHERE record_id = %s", (lead["id"],)) == [(0,)]


def test_filters_by_company_owner_and_creation_time(ws: Workspace, fresh_db: TestDatabase) -> None:
    company = ws.create("/companies", {"name": "Acme"})
    tagged = insert_rows(fresh_db, "contacts", ws.id, [
        {"first_name": "Early", "company_id": uuid.UUID(company["id"]), "created_at": at(0)},
        {"first_name": "Owned", "owner_id": uuid.UUID(ws.user_id), "created_at": at(10)},
        {"first_name": "Late", "company_id": uuid.UUID(company["id"]), "owner_id": uuid.UUID(ws.user_id),
         "created_at": at(20)},
    ])

    def ids(query: str) -> list[str]:
        response = ws.get(f"/contacts?{query}")
        assert response.status_code == 200, response.body
        return [d["id"] for d in body_of(response)["data"]]

    assert ids(f"company_id={company['id']}") == [tagged[2], tagged[0]]
    assert ids(f"owner_id={ws.user_id}") == [tagged[2], tagged[1]]
    assert ids(f"company_id={company['id']}&owner_id={ws.user_id}") == [tagged[2]]
    assert ids(f"created_after={quote(at(5).isoformat())}") == [tagged[2], tagged[1]]
    assert ids(f"created_before={quote(at(5).isoformat())}") == [tagged[0]]
    assert ids(f"created_after={quote(at(5).isoformat())}&created_before=2030-03-04T09:15:00Z") == [tagged[1]]
    assert ids(f"company_id={uuid.uuid4()}") == []
    problem(ws.get("/contacts?created_after=2030-03-04T09:15:00"), 400)  # no timezone
    problem(ws.get("/contacts?owner_id=me"), 400)


def test_custom_select_filter(ws: Workspace) -> None:
    assert ws.post("/custom-fields", {"object": "contact", "key": "tier", "label": "Tier", "type": "select",
                                      "options": ["gold", "silver"]}).status_code == 201
    assert ws.post("/custom-fields", {"object": "company", "key": "tags", "label": "Tags", "type": "multi_select",
                                      "options": ["a", "b"]}).status_code == 201
    gold = ws.create("/contacts", {"first_name": "G", "custom": {"tier": "gold"}})
    ws.create("/contacts", {"first_name": "S", "custom": {"tier": "silver"}})
    ws.create("/contacts", {"first_name": "N"})
    tagged = ws.create("/companies", {"name": "T", "custom": {"tags": ["a", "b"]}})
    ws.create("/companies", {"name": "U", "custom": {"tags": ["b"]}})
    assert [d["id"] for d in body_of(ws.get("/contacts?custom.tier=gold"))["data"]] == [gold["id"]]
    assert [d["id"] for d in body_of(ws.get("/companies?custom.tags=a"))["data"]] == [tagged["id"]]
    assert len(body_of(ws.get("/companies?custom.tags=b"))["data"]) == 2


def test_a_custom_filter_must_name_a_select_field_of_the_object_and_one_of_its_options(ws: Workspace) -> None:
    # Each of these would otherwise quietly match nothing, which reads as "no such records".
    ws.create("/custom-fields", {"object": "contact", "key": "tier", "label": "Tier", "type": "select",
                                 "options": ["gold", "silver"]})
    ws.create("/custom-fields", {"object": "contact", "key": "vip", "label": "VIP", "type": "boolean"})
    ws.create("/contacts", {"first_name": "G", "custom": {"tier": "gold", "vip": True}})
    assert "one of" in problem(ws.get("/contacts?custom.tier=bronze"), 400)["detail"]
    assert "not a select field" in problem(ws.get("/contacts?custom.vip=true"), 400)["detail"]
    assert "not a select field" in problem(ws.get("/contacts?custom.colour=red"), 400)["detail"]
    assert "not a select field" in problem(ws.get("/companies?custom.tier=gold"), 400)["detail"]  # another object
    assert len(body_of(ws.get("/contacts?custom.tier=gold"))["data"]) == 1


def test_unknown_parameters_and_sorts_outside_the_allowlist_are_400(ws: Workspace) -> None:
    assert "unknown" in problem(ws.get("/contacts?colour=red"), 400)["detail"]
    problem(ws.get("/companies?owner_id=" + str(uuid.uuid4())), 400)  # companies have no owner
    for sort in ("email", "id", "-created_at", "created_at desc", "value"):
        detail = problem(ws.get(f"/contacts?sort={quote(sort)}"), 400)["detail"]
        assert "created_at" in detail and "name" in detail


INJECTIONS = ["'; DROP TABLE contacts; --", "name; DELETE FROM contacts", "1) OR (1=1", "x' OR '1'='1",
              "\\", "%' OR 1=1 --", "$1", "%(q)s", "{}", "created_at, (SELECT pg_sleep(1))"]


def test_sql_looking_values_are_harmless(ws: Workspace, fresh_db: TestDatabase) -> None:
    # R19: values are bound parameters, sort keys come from an allowlist, ids are parsed first.
    ws.create("/custom-fields", {"object": "contact", "key": "tier", "label": "Tier", "type": "select",
                                 "options": ["gold"]})
    ws.create("/contacts", {"first_name": "Only", "custom": {"tier": "gold"}})
    for value in INJECTIONS:
        encoded = quote(value, safe="")
        assert body_of(ws.get(f"/contacts?q={encoded}"))["data"] == []
        problem(ws.get(f"/contacts?custom.tier={encoded}"), 400)  # not one of the field's options
        problem(ws.get(f"/contacts?sort={encoded}"), 400)
        problem(ws.get(f"/contacts?company_id={encoded}"), 400)
        problem(ws.get(f"/contacts?created_after={encoded}"), 400)
        problem(ws.get(f"/contacts?{encoded}=1"), 400)
        problem(ws.get(f"/contacts?custom.{encoded}=1"), 400)
        problem(ws.get(f"/contacts/{encoded}"), 404)
    assert rows_of(fresh_db, "SELECT count(*) FROM contacts") == [(1,)]


def _sample(schema: dict[str, Any]) -> list[str]:
    if "enum" in schema:
        return [str(v) for v in schema["enum"]]
    return {"uuid": [str(uuid.uuid4())], "date-time": ["2026-01-01T00:00:00Z"]}.get(
        schema.get("format", ""), ["1"] if schema.get("type") == "integer" else ["x"])


def test_every_documented_list_parameter_is_accepted_and_nothing_else(ws: Workspace) -> None:
    # The OpenAPI document is generated from the same list specs the routes parse with; this holds the two
    # together on every workspace list route: each documented value works, an undocumented name is a 400.
    spec = body_of(ws.client.http.get("/openapi.json"))
    prefix = "/workspaces/{workspace_id}"
    lists = {path: op["get"] for path, op in spec["paths"].items()
             if path.startswith(prefix) and "get" in op and path.count("{") == 1
             and any(p["name"] == "limit" for p in op["get"].get("parameters", []))}
    assert {"/leads", "/contacts", "/companies", "/notes", "/custom-fields", "/pipelines", "/conversations",
            "/calls", "/audit-log"} <= {path.removeprefix(prefix) for path in lists}
    for path, op in lists.items():
        url = path.replace("{workspace_id}", ws.id)
        for param in op["parameters"]:
            if param["in"] != "query" or param["name"] == "cursor":
                continue
            for value in _sample(param["schema"]):
                answer = ws.client.http.get(f"{url}?{urlencode({param['name']: value})}", headers={
                    "Cookie": ws.browser.cookie})
                assert answer.status_code == 200, (path, param["name"], value, answer.body)
        problem(ws.get(path.removeprefix(prefix) + "?undocumented=1"), 400)
