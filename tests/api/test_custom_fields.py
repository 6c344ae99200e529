"""Custom fields: definitions (admin only), every type's validation on writes (422 with custom.<key>),
required fields, null clearing, and type changes with a dry run."""

from __future__ import annotations

from typing import Any

import pytest
from chalice.test import Client

from tests.api.auth_helpers import ORIGIN, Outbox, body_of, problem
from tests.api.crm_helpers import Workspace, concurrently, fields_of, new_workspace
from tests.conftest import TestDatabase


@pytest.fixture
def ws(api: Client, outbox: Outbox) -> Workspace:
    return new_workspace(api, outbox, "fields")


def _field(ws: Workspace, key: str, field_type: str, *, object_type: str = "contact", required: bool = False,
           options: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"object": object_type, "key": key, "label": key.title(), "type": field_type,
                            "required": required}
    if options is not None:
        body["options"] = options
    return ws.create("/custom-fields", body)


def _raw_post(ws: Workspace, path: str, raw: bytes) -> Any:
    headers = {"Content-Type": "application/json", "Cookie": ws.browser.cookie, "X-CSRF-Token": ws.browser.csrf,
               "Origin": ORIGIN}
    return ws.client.http.request("POST", ws.base + path, headers=headers, body=raw)


CASES: dict[str, tuple[list[str] | None, list[tuple[Any, Any]], list[Any]]] = {
    # type: (options, [(valid input, stored value)], [invalid inputs])
    "text": (None, [("hello", "hello")], [5, ["a"], "x" * 10_001]),
    "number": (None, [(3, 3), (-2.5, -2.5), (0, 0)], ["3", True, "NaN", {"n": 1}]),
    "boolean": (None, [(True, True), (False, False)], ["true", 1, 0]),
    "date": (None, [("2026-12-31", "2026-12-31")], ["2026-13-01", "2026-12-31T00:00:00Z", 20261231, "31/12/2026"]),
    "datetime": (None, [("2026-12-31T10:00:00Z", "2026-12-31T10:00:00Z"),
                        ("2026-12-31T10:00:00+02:00", "2026-12-31T10:00:00+02:00")],
                 ["2026-12-31T10:00:00", "tomorrow", 1767175200]),
    "select": (["gold", "silver"], [("gold", "gold")], ["bronze", ["gold"], "GOLD"]),
    "multi_select": (["a", "b", "c"], [(["a", "c"], ["a", "c"]), ([], [])], ["a", ["a", "a"], ["z"], [1]]),
    "url": (None, [("https://example.com/x?y=1", "https://example.com/x?y=1")],
            ["ftp://example.com", "javascript:alert(1)", "example.com", "https://", "http://[abc"]),
    "email": (None, [("Someone@Example.COM", "someone@example.com")], ["nope", "a@b@c.example", "a b@c.example"]),
    "phone": (None, [("+44 20 7183 8750", "+442071838750")], ["020 7183 8750", "+1 555", 14155550123]),
    "currency": (None, [({"amount_minor": 1250, "currency": "EUR"}, {"amount_minor": 1250, "currency": "EUR"})],
                 [{"amount_minor": 12.5, "currency": "EUR"}, {"amount_minor": 1, "currency": "ABC"}, "12 EUR",
                  {"amount_minor": "1250", "currency": "EUR"}, {"amount_minor": 1}]),
}


@pytest.mark.parametrize("field_type", sorted(CASES))
def test_each_type_accepts_valid_values_and_refuses_others_with_the_field_path(ws: Workspace,
                                                                               field_type: str) -> None:
    options, valid, invalid = CASES[field_type]
    _field(ws, "extra", field_type, options=options)
    for value, stored in valid:
        contact = ws.create("/contacts", {"first_name": "Ok", "custom": {"extra": value}})
        assert contact["custom"] == {"extra": stored}, value
        assert body_of(ws.get(f"/contacts/{contact['id']}"))["custom"] == {"extra": stored}
    target = ws.create("/contacts", {"first_name": "Target"})
    for value in invalid:
        body = problem(ws.post("/contacts", {"first_name": "Bad", "custom": {"extra": value}}), 422)
        assert fields_of(body) == ["custom.extra"], (value, body)
        body = problem(ws.patch(f"/contacts/{target['id']}", {"custom": {"extra": value}}), 422)
        assert fields_of(body) == ["custom.extra"], (value, body)


def test_non_finite_numbers_are_refused(ws: Workspace) -> None:
    _field(ws, "score", "number")
    for literal in (b"Infinity", b"-Infinity", b"NaN", b"1e999"):
        response = _raw_post(ws, "/contacts", b'{"first_name": "x", "custom": {"score": ' + literal + b"}}")
        assert fields_of(problem(response, 422)) == ["custom.score"], literal


def test_an_unknown_custom_key_is_422_naming_it(ws: Workspace) -> None:
    _field(ws, "tier", "text")
    body = problem(ws.post("/contacts", {"first_name": "x", "custom": {"tier": "a", "colour": "red"}}), 422)
    assert fields_of(body) == ["custom.colour"]
    # A key is per object: a contact field is unknown on companies.
    assert fields_of(problem(ws.post("/companies", {"name": "x", "custom": {"tier": "a"}}), 422)) == ["custom.tier"]


def test_required_fields_on_create_and_patch_and_null_clears_optional_ones(ws: Workspace) -> None:
    _field(ws, "tier", "select", object_type="company", required=True, options=["gold", "silver"])
    _field(ws, "note", "text", object_type="company")
    assert fields_of(problem(ws.post("/companies", {"name": "x"}), 422)) == ["custom.tier"]
    assert fields_of(problem(ws.post("/companies", {"name": "x", "custom": {"tier": None}}), 422)) == ["custom.tier"]
    company = ws.create("/companies", {"name": "x", "custom": {"tier": "gold", "note": "hi"}})
    path = f"/companies/{company['id']}"
    assert fields_of(problem(ws.patch(path, {"custom": {"tier": None}}), 422)) == ["custom.tier"]
    assert body_of(ws.patch(path, {"name": "renamed"}))["custom"] == {"tier": "gold", "note": "hi"}
    cleared = body_of(ws.patch(path, {"custom": {"note": None}}))
    assert cleared["custom"] == {"tier": "gold"}
    assert body_of(ws.patch(path, {"custom": {"tier": "silver"}}))["custom"] == {"tier": "silver"}


def test_changing_a_type_offers_a_dry_run_and_is_refused_while_records_would_break(ws: Workspace) -> None:
    field = _field(ws, "size", "text")
    fits = ws.create("/contacts", {"first_name": "Fits", "custom": {"size": "12"}})
    breaks = ws.create("/contacts", {"first_name": "Breaks", "custom": {"size": "large"}})
    ws.create("/contacts", {"first_name": "Empty"})
    path = f"/custom-fields/{field['id']}"

    dry = ws.patch(f"{path}?dry_run=true", {"type": "select", "options": ["12", "14"]})
    assert dry.status_code == 200, dry.body
    report = body_of(dry)
    assert report["dry_run"] is True
    assert [f["id"] for f in report["would_fail"]] == [breaks["id"]]
    assert "large" not in dry.body.decode()  # which records, not their values
    assert body_of(ws.get(path))["type"] == "text"  # a dry run changes nothing

    assert "dry_run" in problem(ws.patch(path, {"type": "select", "options": ["12", "14"]}), 409)["detail"]
    assert body_of(ws.get(path))["type"] == "text"

    ws.patch(f"/contacts/{breaks['id']}", {"custom": {"size": None}})
    assert body_of(ws.patch(f"{path}?dry_run=true", {"type": "select", "options": ["12"]}))["would_fail"] == []
    changed = ws.patch(path, {"type": "select", "options": ["12", "14"]})
    assert changed.status_code == 200 and body_of(changed)["type"] == "select"
    assert body_of(ws.get(f"/contacts/{fits['id']}"))["custom"] == {"size": "12"}
    assert fields_of(problem(ws.post("/contacts", {"first_name": "x", "custom": {"size": "large"}}), 422)) == [
        "custom.size"]


def test_a_dry_run_takes_only_true_or_false_and_refuses_what_the_change_would_refuse(ws: Workspace) -> None:
    field = _field(ws, "size", "select", options=["s", "m"])
    path = f"/custom-fields/{field['id']}"
    for odd in ("1", "yes", "on", ""):
        problem(ws.patch(f"{path}?dry_run={odd}", {"type": "text"}), 400)
    assert body_of(ws.get(path))["type"] == "select"  # nothing misread as a real change
    # select -> text keeps its options: the PATCH would be refused, so the dry run is too.
    assert fields_of(problem(ws.patch(f"{path}?dry_run=true", {"type": "text"}), 422)) == ["options"]
    assert fields_of(problem(ws.patch(f"{path}?dry_run=TRUE", {"type": "text"}), 422)) == ["options"]
    assert body_of(ws.patch(f"{path}?dry_run=false", {"label": "Size"}))["label"] == "Size"


def test_patched_options_must_be_distinct_and_non_empty(ws: Workspace) -> None:
    field = _field(ws, "size", "select", options=["s", "m"])
    for options in (["s", "s"], ["s", ""], ["x" * 101]):
        assert fields_of(problem(ws.patch(f"/custom-fields/{field['id']}", {"options": options}), 422)) == ["options"]
    assert body_of(ws.get(f"/custom-fields/{field['id']}"))["options"] == ["s", "m"]


def test_a_definition_change_is_audited_without_values(ws: Workspace) -> None:
    field = _field(ws, "size", "text")
    ws.patch(f"/custom-fields/{field['id']}", {"label": "Shoe size"})
    entries = [e for e in body_of(ws.get("/audit-log"))["data"] if e["action"] == "custom_field.updated"]
    assert len(entries) == 1 and entries[0]["target_id"] == field["id"]
    assert entries[0]["details"] == {"fields": ["label"]}


def test_making_a_field_required_is_refused_while_records_lack_it(ws: Workspace) -> None:
    field = _field(ws, "tier", "text")
    lacking = ws.create("/contacts", {"first_name": "No tier"})
    report = body_of(ws.patch(f"/custom-fields/{field['id']}?dry_run=true", {"required": True}))
    assert [f["id"] for f in report["would_fail"]] == [lacking["id"]]
    problem(ws.patch(f"/custom-fields/{field['id']}", {"required": True}), 409)


def test_a_deleted_fields_stored_values_do_not_block_later_changes(ws: Workspace) -> None:
    old = _field(ws, "old", "text")
    _field(ws, "new", "text")
    contact = ws.create("/contacts", {"first_name": "x", "custom": {"old": "v"}})
    etag = ws.get(f"/contacts/{contact['id']}").headers["ETag"]
    assert ws.delete(f"/custom-fields/{old['id']}").status_code == 204
    # The field's values went with it (and the record's version changed).
    read = ws.get(f"/contacts/{contact['id']}")
    assert body_of(read)["custom"] == {} and read.headers["ETag"] != etag
    # A new field with the same key and another type starts empty.
    _field(ws, "old", "number")
    assert body_of(ws.get(f"/contacts/{contact['id']}"))["custom"] == {}
    patched = ws.patch(f"/contacts/{contact['id']}", {"custom": {"new": "w"}})
    assert patched.status_code == 200, patched.body
    assert body_of(patched)["custom"] == {"new": "w"}


def test_definitions_are_validated_and_keys_unique_per_object(ws: Workspace) -> None:
    assert fields_of(problem(ws.post("/custom-fields", {"object": "contact", "key": "s", "label": "S",
                                                        "type": "select"}), 422)) == ["options"]
    assert fields_of(problem(ws.post("/custom-fields", {"object": "contact", "key": "t", "label": "T",
                                                        "type": "text", "options": ["a"]}), 422)) == ["options"]
    problem(ws.post("/custom-fields", {"object": "contact", "key": "Bad Key", "label": "B", "type": "text"}), 422)
    problem(ws.post("/custom-fields", {"object": "deal", "key": "k", "label": "K", "type": "text"}), 422)
    _field(ws, "k", "text")
    problem(ws.post("/custom-fields", {"object": "contact", "key": "k", "label": "K", "type": "number"}), 409)
    _field(ws, "k", "text", object_type="company")  # another object may reuse the key
    listed = body_of(ws.get("/custom-fields?object=contact"))["data"]
    assert [f["key"] for f in listed] == ["k"]


def test_a_member_cannot_define_or_change_custom_fields(ws: Workspace, outbox: Outbox) -> None:
    field = _field(ws, "tier", "text")
    member = ws.as_member(outbox)
    problem(member.post("/custom-fields", {"object": "contact", "key": "x", "label": "X", "type": "text"}), 403)
    problem(member.patch(f"/custom-fields/{field['id']}", {"label": "Mine"}), 403)
    problem(member.delete(f"/custom-fields/{field['id']}"), 403)
    assert member.get("/custom-fields").status_code == 200
    # ...but may fill them in.
    assert member.create("/contacts", {"first_name": "x", "custom": {"tier": "gold"}})["custom"] == {"tier": "gold"}


def test_a_record_write_racing_a_field_delete_cannot_keep_the_deleted_fields_value(ws: Workspace,
                                                                                fresh_db: TestDatabase) -> None:
    field = _field(ws, "tier", "text")
    contact = ws.create("/contacts", {"first_name": "Ann"})
    # The field's delete is under way (its row locked, gone at COMMIT) when the record's write arrives.
    answer = concurrently(
        fresh_db, ws.id, lambda other: other.execute("DELETE FROM custom_fields WHERE id = %s", (field["id"],)),
        lambda: ws.patch(f"/contacts/{contact['id']}", {"custom": {"tier": "gold"}}))
    # The write read the definitions again after the delete: the key is unknown now.
    assert fields_of(problem(answer, 422)) == ["custom.tier"]
    assert body_of(ws.get(f"/contacts/{contact['id']}"))["custom"] == {}


def test_custom_fields_are_searched_by_key_and_label(ws: Workspace) -> None:
    _field(ws, "shoe_size", "number")
    ws.create("/custom-fields", {"object": "lead", "key": "source", "label": "Lead source", "type": "text"})
    assert [f["key"] for f in body_of(ws.get("/custom-fields?q=SHOE"))["data"]] == ["shoe_size"]
    assert [f["key"] for f in body_of(ws.get("/custom-fields?q=lead%20sou"))["data"]] == ["source"]
    assert body_of(ws.get("/custom-fields?q=nothing"))["data"] == []
