"""CSV import: contacts matched by email, companies, bad rows reported by row and field, references
checked against this workspace only, Idempotency-Key, limits, content type, and no contents in logs."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from chalice.app import Chalice
from chalice.test import Client

import app as app_module
from chalicelib.api import create_app
from chalicelib.observability import configure_logging
from chalicelib.routes import imports
from chalicelib.settings import get_settings
from tests.api.auth_helpers import Outbox, body_of, problem
from tests.api.crm_helpers import Workspace, fields_of, new_workspace, rows_of
from tests.conftest import TestDatabase

IMPORT_PATH = "/workspaces/{workspace_id}/imports/{object}"


def _import_app() -> Chalice:
    """The app serving the import route: the real one once it registers the blueprint, else a small one.

    A blueprint belongs to one app at a time, so the fallback app holds only the import blueprint; the
    session cookie it reads is the real app's (same database, same settings).
    """
    if IMPORT_PATH in app_module.app.routes:
        return app_module.app
    return create_app("imports-under-test", [imports.bp], max_body_bytes=get_settings().max_body_bytes)


IMPORT_APP = _import_app()


@pytest.fixture
def importer(api: Client) -> Iterator[Client]:
    if IMPORT_APP is app_module.app:
        yield api
        return
    with Client(IMPORT_APP) as client:
        yield client


@pytest.fixture
def ws(api: Client, outbox: Outbox) -> Workspace:
    return new_workspace(api, outbox, "importer")


def _csv(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows]) + "\n"


def _errors(response: object) -> list[tuple[int, str]]:
    return [(e["row"], e["field"]) for e in body_of(response)["errors"]]


def test_contacts_import_creates_updates_by_email_and_reports_bad_rows(ws: Workspace, importer: Client,
                                                                       fresh_db: TestDatabase) -> None:
    company = ws.create("/companies", {"name": "Acme"})
    existing = ws.create("/contacts", {"first_name": "Old", "last_name": "Keep", "email": "row7@example.com",
                                       "phone": "+14155550100"})
    rows = [f"First{i},Last{i},row{i}@example.com,+1 415 555 {i:04d},{company['id'] if i % 2 else ''},"
            f"{ws.user_id if i % 3 == 0 else ''}" for i in range(1, 202)]
    rows[9] = "Bad,Phone,row10@example.com,not a phone,,"  # row 10
    rows[49] = f"Ghost,Company,row50@example.com,,{uuid.uuid4()},"  # row 50
    rows[99] = "Dup,Email,ROW7@example.com,,,"  # row 100: the file already has row7 in row 7
    rows[6] = "Seven,,Row7@Example.com,,,"  # row 7 matches the existing contact (case-insensitively)
    text = _csv("first_name,last_name,email,phone,company_id,owner_id", rows)

    response = ws.post_csv(importer, "/imports/contacts", text)
    assert response.status_code == 200, response.body
    result = body_of(response)
    assert (result["created"], result["updated"]) == (197, 1)
    assert _errors(response) == [(10, "phone"), (50, "company_id"), (100, "email")]
    assert all(e["message"] for e in result["errors"])
    assert rows_of(fresh_db, "SELECT count(*) FROM contacts") == [(1 + 197,)]

    updated = body_of(ws.get(f"/contacts/{existing['id']}"))
    # Non-empty cells replace, empty cells keep: the last name and phone survive.
    assert (updated["first_name"], updated["last_name"], updated["phone"]) == ("Seven", "Keep", "+14155550100")
    assert updated["updated_at"] != existing["updated_at"]
    one = body_of(ws.get("/contacts?q=row3@example.com"))["data"][0]
    assert one["phone"] == "+14155550003" and one["company_id"] == company["id"]
    assert one["owner_id"] == ws.user_id
    audit = rows_of(fresh_db, "SELECT action, details FROM audit_log WHERE action = 'import.completed'")
    assert audit == [("import.completed", {"object": "contacts", "created": 197, "updated": 1, "errors": 3})]


def test_a_refused_row_does_not_take_its_email_from_a_later_good_row(ws: Workspace, importer: Client) -> None:
    text = _csv("first_name,email,company_id", [f"Ghost,same@example.com,{uuid.uuid4()}", "Good,SAME@example.com,",
                                                "Again,same@example.com,"])
    response = ws.post_csv(importer, "/imports/contacts", text)
    assert body_of(response)["created"] == 1
    assert _errors(response) == [(1, "company_id"), (3, "email")]
    assert "row 2" in body_of(response)["errors"][1]["message"]
    assert [c["first_name"] for c in body_of(ws.get("/contacts?q=same@example.com"))["data"]] == ["Good"]


def test_a_reference_to_another_workspaces_company_is_an_error_row(ws: Workspace, importer: Client,
                                                                   api: Client, outbox: Outbox) -> None:
    other = new_workspace(api, outbox, "other")
    theirs = other.create("/companies", {"name": "Theirs"})
    text = _csv("first_name,company_id,owner_id", [f"A,{theirs['id']},", f"B,{uuid.uuid4()},", "C,,",
                                                   f"D,,{other.user_id}"])
    response = ws.post_csv(importer, "/imports/contacts", text)
    result = body_of(response)
    assert result["created"] == 1
    assert result["errors"][0] == {**result["errors"][1], "row": 1}  # the same answer as a random id
    assert _errors(response) == [(1, "company_id"), (2, "company_id"), (4, "owner_id")]
    assert body_of(other.get(f"/companies/{theirs['id']}"))["name"] == "Theirs"


def test_the_email_upsert_never_touches_another_workspaces_contact(ws: Workspace, importer: Client, api: Client,
                                                                   outbox: Outbox, fresh_db: TestDatabase) -> None:
    # R02/R13: the conflict target includes tenant_id, so B's identical address is no match for A's import.
    other = new_workspace(api, outbox, "other")
    theirs = other.create("/contacts", {"first_name": "Theirs", "email": "same@example.com"})
    response = ws.post_csv(importer, "/imports/contacts", "email,first_name\nSAME@example.com,Mine\n")
    assert body_of(response) == {"created": 1, "updated": 0, "errors": []}
    assert body_of(other.get(f"/contacts/{theirs['id']}")) == theirs
    assert sorted(rows_of(fresh_db, "SELECT first_name FROM contacts")) == [("Mine",), ("Theirs",)]


def test_companies_import_always_creates_and_validates_custom_columns(ws: Workspace, importer: Client,
                                                                     fresh_db: TestDatabase) -> None:
    ws.create("/custom-fields", {"object": "company", "key": "tier", "label": "Tier", "type": "select",
                                 "options": ["gold", "silver"], "required": True})
    ws.create("/custom-fields", {"object": "company", "key": "employees", "label": "N", "type": "number"})
    ws.create("/custom-fields", {"object": "company", "key": "tags", "label": "Tags", "type": "multi_select",
                                 "options": ["b2b", "eu"]})
    ws.create("/custom-fields", {"object": "company", "key": "active", "label": "A", "type": "boolean"})
    ws.create("/custom-fields", {"object": "company", "key": "budget", "label": "B", "type": "currency"})
    text = _csv("Name,domain,custom.tier,custom.employees,custom.tags,custom.active,custom.budget", [
        "Acme,ACME.example,gold,12,b2b;eu,yes,150000 EUR",
        "Acme,acme.example,silver,3.5,,no,",          # same name and domain: created again
        "Bad tier,,bronze,,,,",                       # row 3
        "No tier,,,,,,",                              # row 4: required
        "Bad number,,gold,twelve,,maybe,12",          # row 5: three unreadable cells
        ",,gold,,,,",                                 # row 6: no name
        "Bad domain,not a domain,gold,,,,",           # row 7
        "Bad code,,gold,,,,12 ZZZ",                   # row 8: read, then refused by the field
    ])
    response = ws.post_csv(importer, "/imports/companies", text)
    assert response.status_code == 200, response.body
    result = body_of(response)
    assert (result["created"], result["updated"]) == (2, 0)
    assert _errors(response) == [(3, "custom.tier"), (4, "custom.tier"), (5, "custom.employees"),
                                 (5, "custom.active"), (5, "custom.budget"), (6, "name"), (7, "domain"),
                                 (8, "custom.budget")]
    stored = rows_of(fresh_db, "SELECT domain, custom FROM companies ORDER BY custom->>'tier'")
    assert stored == [("acme.example", {"tier": "gold", "employees": 12, "tags": ["b2b", "eu"], "active": True,
                                        "budget": {"amount_minor": 150000, "currency": "EUR"}}),
                      ("acme.example", {"tier": "silver", "employees": 3.5, "active": False})]


def test_contact_custom_values_are_merged_on_update(ws: Workspace, importer: Client) -> None:
    ws.create("/custom-fields", {"object": "contact", "key": "tier", "label": "T", "type": "select",
                                 "options": ["gold", "silver"], "required": True})
    ws.create("/custom-fields", {"object": "contact", "key": "city", "label": "C", "type": "text"})
    contact = ws.create("/contacts", {"email": "kim@example.com", "custom": {"tier": "gold", "city": "Oslo"}})
    text = _csv("email,custom.city,custom.tier", ["kim@example.com,Bergen,", "new@example.com,Paris,",
                                                  "newer@example.com,,silver"])
    response = ws.post_csv(importer, "/imports/contacts", text)
    result = body_of(response)
    assert (result["created"], result["updated"]) == (1, 1)
    # The stored required tier satisfies the update; a new contact without one is refused.
    assert _errors(response) == [(2, "custom.tier")]
    assert body_of(ws.get(f"/contacts/{contact['id']}"))["custom"] == {"tier": "gold", "city": "Bergen"}


def test_unknown_columns_are_422_and_malformed_files_400(ws: Workspace, importer: Client) -> None:
    body = problem(ws.post_csv(importer, "/imports/contacts", "first_name,colour,custom.nope\nA,red,x\n"), 422)
    assert fields_of(body) == ["colour", "custom.nope"]
    problem(ws.post_csv(importer, "/imports/contacts", ""), 400)
    problem(ws.post_csv(importer, "/imports/contacts", "first_name,first_name\nA,B\n"), 400)
    problem(ws.post_csv(importer, "/imports/contacts", b"first_name\n\xff\xfe\n"), 400)
    problem(ws.post_csv(importer, "/imports/contacts", "first_name\nA\x00B\n"), 400)
    problem(ws.post_csv(importer, "/imports/contacts", 'first_name\n"unterminated\n'), 400)
    problem(ws.post_csv(importer, "/imports/deals", "title\nA\n"), 404)


def test_rows_wider_than_the_header_are_errors_and_blank_lines_are_skipped_but_counted(
        ws: Workspace, importer: Client) -> None:
    text = "\ufefffirst_name,last_name\r\nAnn,Lee\r\n\r\n , \r\nBen,Ng,extra\r\n\"Quoted, Name\",\r\n"
    response = ws.post_csv(importer, "/imports/contacts", text)
    assert body_of(response)["created"] == 2
    assert _errors(response) == [(4, "(row)")]  # row numbers follow the file's lines
    assert body_of(ws.get("/contacts?q=quoted"))["data"][0]["first_name"] == "Quoted, Name"


def test_wrong_content_type_is_415(ws: Workspace, importer: Client) -> None:
    for content_type in ("application/json", "text/plain", "text/csv; charset=latin-1", "*/*"):
        problem(ws.post_csv(importer, "/imports/contacts", "first_name\nA\n", content_type=content_type), 415)
    for charset in ("UTF-8", "us-ascii"):  # ASCII is UTF-8
        ok = ws.post_csv(importer, "/imports/contacts", "first_name\nA\n", content_type=f"text/csv; charset={charset}")
        assert ok.status_code == 200, ok.body


def test_more_than_10000_rows_is_413(ws: Workspace, importer: Client, fresh_db: TestDatabase) -> None:
    # Documented: the row limit answers like the byte limit, 413, and nothing is written.
    too_many = _csv("first_name", ["x"] * 10_001)
    body = problem(ws.post_csv(importer, "/imports/contacts", too_many), 413)
    assert "10000" in body["detail"]
    assert rows_of(fresh_db, "SELECT count(*) FROM contacts") == [(0,)]


def test_exactly_10000_rows_are_imported(ws: Workspace, importer: Client, fresh_db: TestDatabase) -> None:
    text = _csv("first_name,email", [f"P{i},p{i}@example.com" for i in range(10_000)])
    response = ws.post_csv(importer, "/imports/contacts", text)
    assert body_of(response) == {"created": 10_000, "updated": 0, "errors": []}
    assert rows_of(fresh_db, "SELECT count(*) FROM contacts") == [(10_000,)]


def test_the_body_limit_applies(ws: Workspace, importer: Client) -> None:
    huge = "first_name\n" + "y" * (get_settings().max_body_bytes + 1)
    problem(ws.post_csv(importer, "/imports/contacts", huge), 413)


def test_idempotency_key_replays_the_import(ws: Workspace, importer: Client, fresh_db: TestDatabase) -> None:
    text = _csv("first_name,email", ["A,a@example.com", "B,bad-email"])
    first = ws.post_csv(importer, "/imports/contacts", text, headers={"Idempotency-Key": "imp-1"})
    again = ws.post_csv(importer, "/imports/contacts", text, headers={"Idempotency-Key": "imp-1"})
    assert first.status_code == again.status_code == 200
    assert again.body == first.body and again.headers.get("Idempotent-Replayed") == "true"
    assert rows_of(fresh_db, "SELECT count(*) FROM contacts") == [(1,)]
    assert rows_of(fresh_db, "SELECT count(*) FROM audit_log WHERE action = 'import.completed'") == [(1,)]
    problem(ws.post_csv(importer, "/imports/contacts", text + "C,\n", headers={"Idempotency-Key": "imp-1"}), 409)
    # The same key on another object's import is another request.
    other = ws.post_csv(importer, "/imports/companies", "name\nX\n", headers={"Idempotency-Key": "imp-1"})
    assert body_of(other)["created"] == 1


def test_a_member_may_import_and_an_outsider_gets_404(ws: Workspace, importer: Client, api: Client,
                                                      outbox: Outbox, fresh_db: TestDatabase) -> None:
    member = ws.as_member(outbox)
    assert body_of(member.post_csv(importer, "/imports/companies", "name\nByMember\n"))["created"] == 1
    outsider = new_workspace(api, outbox, "outsider")
    intruder = Workspace(api, outsider.browser, ws.id)
    problem(intruder.post_csv(importer, "/imports/companies", "name\nIntruder\n"), 404)
    assert rows_of(fresh_db, "SELECT name FROM companies") == [("ByMember",)]
    unauthenticated = importer.http.request("POST", f"{ws.base}/imports/companies",
                                            headers={"Content-Type": "text/csv"}, body=b"name\nX\n")
    problem(unauthenticated, 401)


def test_imported_contents_never_reach_the_logs(api: Client, outbox: Outbox, importer: Client) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        ws = new_workspace(api, outbox, "canary")
        text = _csv("first_name,last_name,email,phone", [
            "Zyxcanaryfirst,Zyxcanarylast,zyxcanary@example.com,+14155550199",
            "Zyxcanarybad,,zyxcanary-bad,+1 zyxcanary",
            "Zyxcanarydup,,ZYXCANARY@example.com,",
        ])
        response = ws.post_csv(importer, "/imports/contacts", text)
        assert body_of(response)["created"] == 1
        problem(ws.post_csv(importer, "/imports/contacts", "zyxcanarycolumn\nzyxcanary\n"), 422)
        problem(ws.post_csv(importer, "/imports/contacts", 'first_name\n"zyxcanary\n'), 400)
    finally:
        configure_logging()
    logged = stream.getvalue().lower()
    assert "/imports/" in logged
    assert "zyxcanary" not in logged and "4155550199" not in logged


def test_leads_import_places_values_and_records_history(ws: Workspace, importer: Client, api: Client,
                                                        outbox: Outbox, fresh_db: TestDatabase) -> None:
    [sales] = [p for p in body_of(ws.get("/pipelines"))["data"] if p["is_default"]]
    stages = {s["name"]: s["id"] for s in sales["stages"]}
    other_pipeline = ws.create("/pipelines", {"name": "Renewals"})
    contact = ws.create("/contacts", {"first_name": "Buyer"})
    theirs = new_workspace(api, outbox, "theirs").create("/contacts", {"first_name": "Theirs"})
    ws.create("/custom-fields", {"object": "lead", "key": "source", "label": "S", "type": "select",
                                 "options": ["web", "fair"]})
    header = ("title,contact_id,pipeline_id,stage_id,owner_id,value_amount_minor,value_currency,lost_reason,"
              "expected_close_date,custom.source")
    rows = [
        f"Default,{contact['id']},,,{ws.user_id},125000,eur,,2030-06-30,web",   # 1: first stage of Sales
        f"Won deal,,,{stages['Won']},,99,JPY,,,",                                # 2: status from the stage
        f"Renewal,,{other_pipeline['id']},,,,,,,fair",                           # 3: first stage of Renewals
        f"Mismatch,,{other_pipeline['id']},{stages['Won']},,,,,,",               # 4: stage of another pipeline
        f"Unknown stage,,,{uuid.uuid4()},,,,,,",                                 # 5
        "Fraction,,,,,12.50,EUR,,,",                                             # 6
        "Bad currency,,,,,100,EURO,,,",                                          # 7
        "No amount,,,,,,EUR,,,",                                                 # 8
        f"Foreign contact,{theirs['id']},,,,,,,,",                               # 9
        ",,,,,,,,,",                                                             # 10: empty, skipped
        ",,,,,,,,2030-01-01,",                                                   # 11: no title
        "Bad option,,,,,,,,,radio",                                              # 12
        "Bad date,,,,,,,,2030-02-30,",                                           # 13
        f"Lost,,,{stages['Lost']},,,,too expensive,,",                           # 14
    ]
    response = ws.post_csv(importer, "/imports/leads", _csv(header, rows))
    assert response.status_code == 200, response.body
    result = body_of(response)
    assert (result["created"], result["updated"]) == (4, 0)
    assert _errors(response) == [(4, "stage_id"), (5, "stage_id"), (6, "value_amount_minor"),
                                 (7, "value_currency"), (8, "value_amount_minor"), (9, "contact_id"),
                                 (11, "title"), (12, "custom.source"), (13, "expected_close_date")]
    leads = {d["title"]: d for d in body_of(ws.get("/leads?limit=200"))["data"]}
    assert set(leads) == {"Default", "Won deal", "Renewal", "Lost"}
    assert (leads["Default"]["stage_id"], leads["Default"]["status"]) == (stages["New"], "open")
    assert leads["Default"]["value"] == {"amount_minor": 125000, "currency": "EUR"}
    assert leads["Default"]["contact_id"] == contact["id"] and leads["Default"]["owner_id"] == ws.user_id
    assert leads["Default"]["custom"] == {"source": "web"} and leads["Default"]["expected_close_date"] == "2030-06-30"
    assert (leads["Won deal"]["pipeline_id"], leads["Won deal"]["status"]) == (sales["id"], "won")
    assert leads["Renewal"]["pipeline_id"] == other_pipeline["id"]
    assert leads["Renewal"]["stage_id"] == other_pipeline["stages"][0]["id"]
    assert (leads["Lost"]["status"], leads["Lost"]["lost_reason"]) == ("lost", "too expensive")
    history = rows_of(fresh_db, "SELECT lead_id, from_stage_id, to_stage_id, actor_user_id FROM lead_stage_history")
    assert sorted((str(h[0]), h[1], str(h[2]), str(h[3])) for h in history) == sorted(
        (lead["id"], None, lead["stage_id"], ws.user_id) for lead in leads.values())
