"""Companies, contacts and notes through the API: CRUD, ETag/If-Match, uniqueness, references,
Idempotency-Key, tenant isolation (R01, R02, R12, R13, R14) and the log canary sweep (O01)."""

from __future__ import annotations

import io
import uuid

import pytest
from chalice.test import Client

from chalicelib.observability import configure_logging
from tests.api.auth_helpers import ORIGIN, Outbox, body_of, problem
from tests.api.crm_helpers import Workspace, concurrently, fields_of, new_workspace, rows_of, without_request_id
from tests.conftest import TestDatabase

# ---- companies ----------------------------------------------------------------------------------


def test_company_create_read_update_delete_with_location_and_etags(ws: Workspace) -> None:
    response = ws.post("/companies", {"name": "Acme", "domain": "Acme.EXAMPLE"})
    assert response.status_code == 201, response.body
    company = body_of(response)
    assert response.headers["Location"] == f"{ws.base}/companies/{company['id']}"
    assert company["domain"] == "acme.example" and company["custom"] == {}
    etag = response.headers["ETag"]

    read = ws.get(f"/companies/{company['id']}")
    assert read.status_code == 200 and read.headers["ETag"] == etag
    assert body_of(read) == company

    changed = ws.patch(f"/companies/{company['id']}", {"name": "Acme Inc"}, {"If-Match": etag})
    assert changed.status_code == 200, changed.body
    assert body_of(changed)["name"] == "Acme Inc"
    assert changed.headers["ETag"] != etag

    problem(ws.patch(f"/companies/{company['id']}", {"name": "Stale"}, {"If-Match": etag}), 412)
    problem(ws.delete(f"/companies/{company['id']}", {"If-Match": etag}), 412)
    assert body_of(ws.get(f"/companies/{company['id']}"))["name"] == "Acme Inc"

    deleted = ws.delete(f"/companies/{company['id']}", {"If-Match": changed.headers["ETag"]})
    assert deleted.status_code == 204 and deleted.body in (b"", None)
    problem(ws.get(f"/companies/{company['id']}"), 404)
    problem(ws.delete(f"/companies/{company['id']}"), 404)


def test_company_name_cannot_be_cleared_and_bad_domain_is_422(ws: Workspace) -> None:
    company = ws.create("/companies", {"name": "Acme"})
    assert fields_of(problem(ws.patch(f"/companies/{company['id']}", {"name": None}), 422)) == ["name"]
    assert "domain" in fields_of(problem(ws.post("/companies", {"name": "X", "domain": "not a domain"}), 422))
    assert "nickname" in fields_of(problem(ws.post("/companies", {"name": "X", "nickname": "y"}), 422))


def test_patch_without_if_match_and_with_star_is_accepted(ws: Workspace) -> None:
    company = ws.create("/companies", {"name": "Acme"})
    assert ws.patch(f"/companies/{company['id']}", {"domain": "acme.example"}).status_code == 200
    assert ws.patch(f"/companies/{company['id']}", {"domain": None}, {"If-Match": "*"}).status_code == 200
    assert body_of(ws.get(f"/companies/{company['id']}"))["domain"] is None


# ---- contacts -----------------------------------------------------------------------------------


def test_contact_phone_is_stored_in_e164(ws: Workspace, fresh_db: TestDatabase) -> None:
    response = ws.post("/contacts", {"first_name": "Ann", "email": "Ann@Example.COM", "phone": "+1 (415) 555-0123"})
    assert response.status_code == 201, response.body
    contact = body_of(response)
    assert contact["phone"] == "+14155550123"
    assert contact["email"] == "ann@example.com"
    assert response.headers["Location"] == f"{ws.base}/contacts/{contact['id']}"
    assert response.headers["ETag"] == ws.get(f"/contacts/{contact['id']}").headers["ETag"]
    assert rows_of(fresh_db, "SELECT phone FROM contacts") == [("+14155550123",)]


@pytest.mark.parametrize("phone", ["6505550123", "+1 555", "call me", "+999 123 456 789"])
def test_invalid_phone_is_422_naming_the_field(ws: Workspace, phone: str) -> None:
    body = problem(ws.post("/contacts", {"first_name": "Ann", "phone": phone}), 422)
    assert fields_of(body) == ["phone"]
    assert phone not in str(body)


@pytest.mark.parametrize("email", ["nope", "a@b@c.example", "Ann <ann@example.com>", "a@x.test,b@y.test"])
def test_invalid_contact_email_is_422_naming_the_field(ws: Workspace, email: str) -> None:
    contact = ws.create("/contacts", {"first_name": "Ann"})
    for response in (ws.post("/contacts", {"first_name": "Ann", "email": email}),
                     ws.patch(f"/contacts/{contact['id']}", {"email": email})):
        body = problem(response, 422)
        assert fields_of(body) == ["email"]
        assert email not in str(body)


def test_contact_needs_a_name_or_an_email_on_create_and_after_a_patch(ws: Workspace) -> None:
    assert fields_of(problem(ws.post("/contacts", {"phone": "+14155550123"}), 422)) == ["(body)"]
    solo = ws.create("/contacts", {"last_name": "Solo", "email": "solo@example.com"})
    assert ws.patch(f"/contacts/{solo['id']}", {"email": None}).status_code == 200
    assert fields_of(problem(ws.patch(f"/contacts/{solo['id']}", {"last_name": None}), 422)) == ["(body)"]
    assert ws.patch(f"/contacts/{solo['id']}", {"last_name": None, "first_name": "Han"}).status_code == 200


def test_duplicate_email_is_409_case_insensitively_without_echoing_it(ws: Workspace) -> None:
    ws.create("/contacts", {"email": "dup@example.com"})
    body = problem(ws.post("/contacts", {"email": "DUP@example.com", "first_name": "Again"}), 409)
    assert "dup@example.com" not in str(body).lower() and "contacts_email_unique" not in str(body)
    assert "Key (" not in str(body)


def test_patching_an_email_onto_another_contacts_is_409(ws: Workspace) -> None:
    ws.create("/contacts", {"email": "one@example.com"})
    second = ws.create("/contacts", {"email": "two@example.com"})
    problem(ws.patch(f"/contacts/{second['id']}", {"email": "ONE@example.com"}), 409)
    assert body_of(ws.get(f"/contacts/{second['id']}"))["email"] == "two@example.com"


def test_same_email_in_another_workspace_answers_like_a_fresh_email(ws: Workspace, other: Workspace) -> None:
    # R13: B cannot learn that A has this address: the response is the one a never-seen address gets.
    ws.create("/contacts", {"email": "known@example.com", "first_name": "Kim"})
    known = other.post("/contacts", {"email": "known@example.com", "first_name": "Kim"})
    fresh = other.post("/contacts", {"email": "never-seen@example.com", "first_name": "Kim"})
    assert known.status_code == fresh.status_code == 201
    assert set(body_of(known)) == set(body_of(fresh))
    assert set(known.headers) == set(fresh.headers)
    shape = {k: v for k, v in body_of(known).items() if k not in ("id", "email", "created_at", "updated_at")}
    assert shape == {k: v for k, v in body_of(fresh).items() if k not in ("id", "email", "created_at",
                                                                          "updated_at")}


def test_another_workspaces_company_is_refused_exactly_like_a_random_id(ws: Workspace, other: Workspace,
                                                                       fresh_db: TestDatabase) -> None:
    # R12: the composite foreign key makes both the same "not found".
    theirs = other.create("/companies", {"name": "Theirs"})
    foreign = ws.post("/contacts", {"first_name": "Ann", "company_id": theirs["id"]})
    random = ws.post("/contacts", {"first_name": "Ann", "company_id": str(uuid.uuid4())})
    assert problem(foreign, 422) and problem(random, 422)
    assert without_request_id(foreign) == without_request_id(random)
    assert fields_of(foreign) == ["company_id"]
    assert "Key (" not in foreign.body.decode() and "contacts_company_fk" not in foreign.body.decode()
    contact = ws.create("/contacts", {"first_name": "Ann"})
    patched = ws.patch(f"/contacts/{contact['id']}", {"company_id": theirs["id"]})
    assert without_request_id(patched) == without_request_id(
        ws.patch(f"/contacts/{contact['id']}", {"company_id": str(uuid.uuid4())}))
    assert rows_of(fresh_db, "SELECT count(*) FROM contacts WHERE company_id IS NOT NULL") == [(0,)]


def test_owner_must_be_a_member_of_the_workspace(ws: Workspace, other: Workspace) -> None:
    own = ws.create("/contacts", {"first_name": "Ann", "owner_id": ws.user_id})
    assert own["owner_id"] == ws.user_id
    outsider = ws.post("/contacts", {"first_name": "Ann", "owner_id": other.user_id})
    assert fields_of(problem(outsider, 422)) == ["owner_id"]
    assert without_request_id(outsider) == without_request_id(
        ws.post("/contacts", {"first_name": "Ann", "owner_id": str(uuid.uuid4())}))


def test_member_role_can_write_contacts(ws: Workspace, outbox: Outbox) -> None:
    member = ws.as_member(outbox)
    contact = member.create("/contacts", {"first_name": "By member", "owner_id": member.user_id})
    assert member.patch(f"/contacts/{contact['id']}", {"last_name": "Too"}).status_code == 200
    assert member.delete(f"/contacts/{contact['id']}").status_code == 204


def test_contact_patch_null_clears_and_unknown_fields_are_422(ws: Workspace) -> None:
    contact = ws.create("/contacts", {"first_name": "Ann", "phone": "+442071838750"})
    cleared = body_of(ws.patch(f"/contacts/{contact['id']}", {"phone": None}))
    assert cleared["phone"] is None and cleared["first_name"] == "Ann"
    assert fields_of(problem(ws.patch(f"/contacts/{contact['id']}", {"tenant_id": str(uuid.uuid4())}),
                             422)) == ["tenant_id"]


def test_tenant_id_in_a_body_cannot_move_a_record(ws: Workspace, other: Workspace, fresh_db: TestDatabase) -> None:
    # R02: the tenant comes from the path (and RLS), never from the body.
    problem(ws.post("/contacts", {"first_name": "Ann", "tenant_id": other.id}), 422)
    assert rows_of(fresh_db, "SELECT count(*) FROM contacts") == [(0,)]


def test_nul_characters_are_a_4xx_not_a_500(ws: Workspace) -> None:
    problem(ws.post("/contacts", {"first_name": "A\u0000B"}), 422)
    problem(ws.get("/contacts?q=a%00b"), 400)


# ---- notes --------------------------------------------------------------------------------------


def test_note_needs_exactly_one_subject(ws: Workspace) -> None:
    contact = ws.create("/contacts", {"first_name": "Ann"})
    company = ws.create("/companies", {"name": "Acme"})
    problem(ws.post("/notes", {"body": "orphan"}), 422)
    problem(ws.post("/notes", {"body": "two", "contact_id": contact["id"], "company_id": company["id"]}), 422)
    note = ws.create("/notes", {"body": "called", "contact_id": contact["id"]})
    assert note["author_user_id"] == ws.user_id and note["company_id"] is None


def test_note_crud_and_listing_by_subject(ws: Workspace) -> None:
    contact = ws.create("/contacts", {"first_name": "Ann"})
    company = ws.create("/companies", {"name": "Acme"})
    response = ws.post("/notes", {"body": "first", "company_id": company["id"]})
    assert response.status_code == 201
    note = body_of(response)
    assert response.headers["Location"] == f"{ws.base}/notes/{note['id']}"
    ws.create("/notes", {"body": "second", "contact_id": contact["id"]})
    listed = body_of(ws.get(f"/notes?company_id={company['id']}"))["data"]
    assert [n["id"] for n in listed] == [note["id"]]
    etag = ws.get(f"/notes/{note['id']}").headers["ETag"]
    edited = ws.patch(f"/notes/{note['id']}", {"body": "edited"}, {"If-Match": etag})
    assert body_of(edited)["body"] == "edited"
    problem(ws.patch(f"/notes/{note['id']}", {"body": "late"}, {"If-Match": etag}), 412)
    problem(ws.patch(f"/notes/{note['id']}", {"contact_id": contact["id"]}), 422)  # a note cannot move
    assert ws.delete(f"/notes/{note['id']}").status_code == 204
    problem(ws.get("/notes?q=edited"), 400)  # notes have no search


def test_note_on_another_workspaces_contact_is_refused_like_a_random_id(ws: Workspace, other: Workspace) -> None:
    theirs = other.create("/contacts", {"first_name": "Theirs"})
    foreign = ws.post("/notes", {"body": "peek", "contact_id": theirs["id"]})
    random = ws.post("/notes", {"body": "peek", "contact_id": str(uuid.uuid4())})
    assert fields_of(problem(foreign, 422)) == ["contact_id"]
    assert without_request_id(foreign) == without_request_id(random)


def test_deleting_a_contact_deletes_its_notes(ws: Workspace, fresh_db: TestDatabase) -> None:
    contact = ws.create("/contacts", {"first_name": "Ann"})
    ws.create("/notes", {"body": "n", "contact_id": contact["id"]})
    assert ws.delete(f"/contacts/{contact['id']}").status_code == 204
    assert rows_of(fresh_db, "SELECT count(*) FROM notes") == [(0,)]


# ---- Idempotency-Key ----------------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_first_response(ws: Workspace, fresh_db: TestDatabase) -> None:
    body = {"first_name": "Once", "email": "once@example.com"}
    first = ws.post("/contacts", body, {"Idempotency-Key": "k-1"})
    again = ws.post("/contacts", body, {"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert again.body == first.body
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert rows_of(fresh_db, "SELECT count(*) FROM contacts") == [(1,)]


def test_same_idempotency_key_with_another_body_is_409(ws: Workspace, fresh_db: TestDatabase) -> None:
    assert ws.post("/companies", {"name": "One"}, {"Idempotency-Key": "k-2"}).status_code == 201
    problem(ws.post("/companies", {"name": "Two"}, {"Idempotency-Key": "k-2"}), 409)
    assert rows_of(fresh_db, "SELECT name FROM companies") == [("One",)]


def test_idempotency_keys_are_per_workspace_and_per_route(ws: Workspace, other: Workspace,
                                                          fresh_db: TestDatabase) -> None:
    assert ws.post("/companies", {"name": "A"}, {"Idempotency-Key": "shared"}).status_code == 201
    assert other.post("/companies", {"name": "A"}, {"Idempotency-Key": "shared"}).status_code == 201
    assert ws.post("/contacts", {"first_name": "A"}, {"Idempotency-Key": "shared"}).status_code == 201
    assert rows_of(fresh_db, "SELECT count(*) FROM companies") == [(2,)]


def test_a_failed_request_does_not_burn_its_idempotency_key(ws: Workspace) -> None:
    ws.create("/contacts", {"email": "taken@example.com"})
    problem(ws.post("/contacts", {"email": "taken@example.com"}, {"Idempotency-Key": "k-3"}), 409)
    ws.delete(f"/contacts/{body_of(ws.get('/contacts'))['data'][0]['id']}")
    assert ws.post("/contacts", {"email": "taken@example.com"}, {"Idempotency-Key": "k-3"}).status_code == 201


# ---- isolation (R01) ----------------------------------------------------------------------------


def test_a_member_of_another_workspace_gets_404_and_changes_nothing(ws: Workspace, other: Workspace,
                                                                   fresh_db: TestDatabase) -> None:
    company = ws.create("/companies", {"name": "Acme"})
    contact = ws.create("/contacts", {"first_name": "Ann", "company_id": company["id"]})
    note = ws.create("/notes", {"body": "secret", "contact_id": contact["id"]})
    before = rows_of(fresh_db, "SELECT id, first_name, company_id, updated_at FROM contacts"), \
        rows_of(fresh_db, "SELECT id, name, updated_at FROM companies"), \
        rows_of(fresh_db, "SELECT id, body, updated_at FROM notes")
    for path, item in (("/companies", company), ("/contacts", contact), ("/notes", note)):
        # B's own workspace path with A's ids: RLS hides them.
        problem(other.get(f"{path}/{item['id']}"), 404)
        problem(other.patch(f"{path}/{item['id']}", {}), 404)
        problem(other.delete(f"{path}/{item['id']}"), 404)
        # A's workspace path with B's session: not a member.
        problem(other.client.http.get(f"{ws.base}{path}/{item['id']}", headers={"Cookie": other.browser.cookie}),
                404)
        problem(other.client.http.get(f"{ws.base}{path}", headers={"Cookie": other.browser.cookie}), 404)
    assert body_of(other.get(f"/contacts?company_id={company['id']}"))["data"] == []
    assert body_of(other.get("/contacts?q=ann"))["data"] == []
    assert body_of(other.get(f"/notes?contact_id={contact['id']}"))["data"] == []
    after = rows_of(fresh_db, "SELECT id, first_name, company_id, updated_at FROM contacts"), \
        rows_of(fresh_db, "SELECT id, name, updated_at FROM companies"), \
        rows_of(fresh_db, "SELECT id, body, updated_at FROM notes")
    assert before == after


# ---- canaries never reach a log line (O01) ------------------------------------------------------


def test_contact_fields_and_note_bodies_never_reach_the_logs(api: Client, outbox: Outbox) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        ws = new_workspace(api, outbox, "canary")
        canaries = {"first": "Zyxcanaryfirst", "last": "Zyxcanarylast", "email": "zyxcanary@example.com",
                    "phone": "+14155550199", "note": "zyxcanary note body", "company": "Zyxcanary Corp"}
        company = ws.create("/companies", {"name": canaries["company"], "domain": "zyxcanary.example"})
        contact = ws.create("/contacts", {"first_name": canaries["first"], "last_name": canaries["last"],
                                          "email": canaries["email"], "phone": canaries["phone"],
                                          "company_id": company["id"]})
        ws.create("/notes", {"body": canaries["note"], "contact_id": contact["id"]})
        # Failures log too: a duplicate, an invalid phone, a bad reference, a bad query, a bad cursor.
        problem(ws.post("/contacts", {"email": canaries["email"], "first_name": canaries["first"]}), 409)
        problem(ws.post("/contacts", {"first_name": canaries["first"], "phone": "+1 zyxcanary"}), 422)
        problem(ws.post("/contacts", {"first_name": canaries["first"], "company_id": str(uuid.uuid4())}), 422)
        problem(ws.post("/contacts", {"first_name": "A\u0000zyxcanary"}), 422)
        problem(ws.get("/contacts?q=zyxcanary&sort=zyxcanary"), 400)
        problem(ws.get("/contacts?cursor=zyxcanary"), 400)
        assert body_of(ws.get("/contacts?q=zyxcanary"))["data"]
        ws.patch(f"/contacts/{contact['id']}", {"last_name": "Zyxcanarypatched"})
    finally:
        configure_logging()
    logged = stream.getvalue().lower()
    assert "/contacts" in logged  # the access lines were captured
    assert "zyxcanary" not in logged
    assert "4155550199" not in logged


# ---- response shapes --------------------------------------------------------------------------------


def test_every_resource_answers_exactly_its_documented_shape_in_lists_and_reads(ws: Workspace) -> None:
    # Rows are serialized as plain values (no model instances): each body must still be exactly its
    # out_model, field for field, with the JSON the model itself would produce.
    from chalicelib.crm import companies, contacts, fields_api, leads, notes

    company = ws.create("/companies", {"name": "Acme", "custom": {}})
    contact = ws.create("/contacts", {"first_name": "Ada", "email": "ada@example.com", "company_id": company["id"]})
    lead = ws.create("/leads", {"title": "Deal", "contact_id": contact["id"], "expected_close_date": "2030-05-01",
                                "value": {"amount_minor": 12_345, "currency": "EUR"}})
    ws.create("/leads", {"title": "No value"})
    ws.create("/notes", {"body": "Called", "lead_id": lead["id"]})
    ws.create("/custom-fields", {"object": "lead", "key": "tier", "label": "Tier", "type": "select",
                                 "options": ["gold", "silver"]})
    for resource in (companies.RESOURCE, contacts.RESOURCE, leads.RESOURCE, notes.RESOURCE, fields_api.RESOURCE):
        listed = body_of(ws.get(resource.path))["data"]
        assert listed, resource.path
        for item in [*listed, body_of(ws.get(f"{resource.path}/{listed[0]['id']}"))]:
            model = resource.out_model.model_validate(item, strict=False)
            assert set(item) == set(resource.out_model.model_fields), resource.path
            assert model.model_dump(mode="json") == item, resource.path


def test_if_match_holds_against_a_concurrent_change_no_lost_update(ws: Workspace, fresh_db: TestDatabase) -> None:
    company = ws.create("/companies", {"name": "Acme"})
    etag = ws.get(f"/companies/{company['id']}").headers["ETag"]
    # Another request changes the row and has not committed yet when this PATCH (with the ETag read before
    # that change) arrives.
    answer = concurrently(
        fresh_db, ws.id, lambda other: other.execute("UPDATE companies SET name = 'Acme Inc', updated_at = now()"
                                                     " WHERE id = %s", (company["id"],)),
        lambda: ws.patch(f"/companies/{company['id']}", {"name": "Stale writer"}, {"If-Match": etag}))
    # The PATCH waited on the row lock before checking If-Match, saw the new version and refused.
    problem(answer, 412)
    assert body_of(ws.get(f"/companies/{company['id']}"))["name"] == "Acme Inc"


def test_a_reference_cleared_by_a_delete_gives_the_record_a_new_etag(ws: Workspace) -> None:
    company = ws.create("/companies", {"name": "Acme"})
    contact = ws.create("/contacts", {"first_name": "Ann", "company_id": company["id"]})
    lead = ws.create("/leads", {"title": "Deal", "company_id": company["id"], "contact_id": contact["id"]})
    tags = {path: ws.get(path).headers["ETag"] for path in (f"/contacts/{contact['id']}", f"/leads/{lead['id']}")}
    assert ws.delete(f"/companies/{company['id']}").status_code == 204
    for path, before in tags.items():
        read = ws.get(path)
        assert body_of(read)["company_id"] is None and read.headers["ETag"] != before
        # So an If-Match taken before the reference was cleared no longer passes.
        problem(ws.patch(path, {"custom": {}}, {"If-Match": before}), 412)


def test_a_lone_surrogate_in_a_body_or_a_query_is_refused_not_a_500(ws: Workspace) -> None:
    raw = '{"first_name": "A\\ud800B"}'  # valid JSON, but no UTF-8 text can hold it
    answer = ws.client.http.post(ws.base + "/contacts", body=raw, headers={
        "Content-Type": "application/json", "Cookie": ws.browser.cookie, "X-CSRF-Token": ws.browser.csrf,
        "Origin": ORIGIN})
    assert fields_of(problem(answer, 422)) == ["first_name"]
    # A URL cannot carry one (invalid UTF-8 in it arrives as U+FFFD); a NUL can, and is refused the same way.
    for query in ("q=a%00b", "limit=%00", "sort=%00"):
        assert ws.get(f"/contacts?{query}").status_code == 400, query
