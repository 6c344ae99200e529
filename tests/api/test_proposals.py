"""Proposals through the API: drafts under a lead with server-computed totals, the price book's prices, the
status machine (409 for illegal moves), revisions, the PDF (read back with pypdf), isolation across
workspaces, and canaries that never reach the logs."""

from __future__ import annotations

import io
from typing import Any

import pytest
from chalice.test import Client
from pypdf import PdfReader

from chalicelib.observability import configure_logging
from tests.api.auth_helpers import Outbox, body_of, problem
from tests.api.crm_helpers import Workspace, new_workspace
from tests.conftest import TestDatabase

PDF = {"Accept": "application/pdf"}  # a binary answer needs it, as through API Gateway (curl sends */*)
PRO = {"name": "Pro plan", "sku": "PRO-1", "unit_amount_minor": 4900, "currency": "EUR", "tax_rate_bp": 1900}


def draft(ws: Workspace, lead: str, lines: list[dict[str, Any]], **extra: Any) -> Any:
    return ws.post(f"/leads/{lead}/proposals", {"title": "Proposal", "valid_until": "2027-01-31",
                                                 "currency": "EUR", "line_items": lines, **extra})


def a_lead(ws: Workspace, email: str = "grace@example.test") -> str:
    contact = ws.create("/contacts", {"first_name": "Grace", "last_name": "Hopper", "email": email})
    return str(ws.create("/leads", {"title": "Deal", "contact_id": contact["id"]})["id"])


def test_a_draft_takes_prices_from_the_book_and_the_server_computes_every_total(ws: Workspace) -> None:
    product = ws.create("/products", PRO)
    lead = a_lead(ws)
    response = draft(ws, lead, [
        {"product_id": product["id"], "quantity": 3},
        {"description": "Onboarding", "quantity": "1.5", "unit_amount_minor": 10_001, "tax_rate_bp": 700,
         "discount_bp": 1000},
        {"description": "Goodwill", "quantity": 1, "unit_amount_minor": 500, "discount_bp": 10_000},
    ])
    assert response.status_code == 201, response.body
    proposal = body_of(response)
    assert response.headers["Location"] == f"{ws.base}/proposals/{proposal['id']}" and response.headers["ETag"]
    first, second, third = proposal["line_items"]
    assert (first["sku"], first["description"], first["unit_amount_minor"], first["tax_rate_bp"]) == (
        "PRO-1", "Pro plan", 4900, 1900)
    assert (first["net_minor"], first["tax_minor"]) == (14_700, 2793)
    # 1.5 x 10001 = 15001.5, less 10 % = 13501.35 -> 13501; tax 7 % = 945.07 -> 945
    assert (second["quantity"], second["net_minor"], second["tax_minor"]) == ("1.5", 13_501, 945)
    assert (third["net_minor"], third["tax_minor"], third["total_minor"]) == (0, 0, 0)
    assert proposal["totals"] == {
        "subtotal_minor": 28_201, "tax_minor": 3738, "total_minor": 31_939,
        "tax_by_rate": [{"tax_rate_bp": 0, "net_minor": 0, "tax_minor": 0},
                        {"tax_rate_bp": 700, "net_minor": 13_501, "tax_minor": 945},
                        {"tax_rate_bp": 1900, "net_minor": 14_700, "tax_minor": 2793}]}
    assert proposal["status"] == "draft" and proposal["version"] == 1
    assert body_of(ws.get(f"/proposals/{proposal['id']}")) == proposal
    listed = body_of(ws.get(f"/leads/{lead}/proposals"))["data"]
    assert [(p["id"], p["total_minor"]) for p in listed] == [(proposal["id"], 31_939)]


@pytest.mark.parametrize(("line", "field"), [
    ({"description": "x", "quantity": 1, "unit_amount_minor": 1, "total_minor": 0}, "total_minor"),  # never a total
    ({"description": "x", "quantity": 1.5, "unit_amount_minor": 1}, "quantity"),  # never a float
    ({"description": "x", "quantity": "1.2345", "unit_amount_minor": 1}, "quantity"),
    ({"description": "x", "quantity": 0, "unit_amount_minor": 1}, "quantity"),
    ({"description": "x", "quantity": 1_000_001, "unit_amount_minor": 1}, "quantity"),
    ({"description": "x", "quantity": 1, "unit_amount_minor": 1.0}, "unit_amount_minor"),
    ({"description": "x", "quantity": 1}, "line_items"),  # free text needs its amount
    ({"description": "x", "quantity": 1, "unit_amount_minor": 1, "discount_bp": 10_001}, "discount_bp"),
])
def test_bad_lines_are_422(ws: Workspace, line: dict[str, Any], field: str) -> None:
    body = problem(draft(ws, a_lead(ws), [line]), 422)  # one lead per parametrized case
    assert field in str(body.get("errors")), body


def test_huge_amounts_are_422_not_wrapped(ws: Workspace) -> None:
    lead = a_lead(ws)
    huge = {"description": "Everything", "quantity": 1_000_000, "unit_amount_minor": 10**12}
    body = problem(draft(ws, lead, [huge]), 422)
    assert "too large" in body["detail"]


def test_a_product_line_never_takes_a_client_price(ws: Workspace) -> None:
    product = ws.create("/products", PRO)
    body = problem(draft(ws, a_lead(ws), [{"product_id": product["id"], "quantity": 1, "unit_amount_minor": 0}]),
                   422)
    assert "price book" in str(body)


def test_products_of_another_workspace_inactive_or_in_another_currency_are_refused(ws: Workspace,
                                                                                    other: Workspace) -> None:
    foreign = other.create("/products", PRO)
    inactive = ws.create("/products", {**PRO, "sku": "OLD", "active": False})
    dollars = ws.create("/products", {**PRO, "sku": "USD-1", "currency": "USD"})
    lead = a_lead(ws)
    for product, why in ((foreign, "not found"), (inactive, "inactive"), (dollars, "priced in USD")):
        body = problem(draft(ws, lead, [{"product_id": product["id"], "quantity": 1}]), 422)
        assert body["errors"][0]["field"] == "line_items.0.product_id" and why in body["errors"][0]["message"]


def test_another_workspace_can_do_nothing_with_a_proposal(ws: Workspace, other: Workspace) -> None:
    lead = a_lead(ws)
    proposal = body_of(draft(ws, lead, [{"description": "x", "quantity": 1, "unit_amount_minor": 100}]))
    item = f"/proposals/{proposal['id']}"
    problem(draft(other, lead, []), 404)  # A's lead under B's workspace
    problem(other.get(f"/leads/{lead}/proposals"), 404)
    for response in (other.get(item), other.patch(item, {"title": "pwned"}), other.delete(item),
                     other.post(item + "/void", None), other.post(item + "/revise", None), other.get(item + "/pdf")):
        problem(response, 404)
    intruder = Workspace(other.client, other.browser, ws.id)  # A's own URLs, B's session
    problem(intruder.get(item), 404)
    problem(intruder.get(item + "/pdf", PDF), 404)
    assert body_of(ws.get(item))["title"] == "Proposal"


def test_only_a_draft_is_edited_and_the_status_machine_refuses_illegal_moves(ws: Workspace,
                                                                            fresh_db: TestDatabase) -> None:
    lead = a_lead(ws)
    response = draft(ws, lead, [{"description": "Work", "quantity": 2, "unit_amount_minor": 1000}])
    proposal, etag = body_of(response), response.headers["ETag"]
    item = f"/proposals/{proposal['id']}"
    changed = ws.patch(item, {"title": "Renamed", "line_items": [
        {"description": "More work", "quantity": 3, "unit_amount_minor": 1000, "tax_rate_bp": 1000}]},
        {"If-Match": etag})
    assert changed.status_code == 200, changed.body
    assert body_of(changed)["totals"]["total_minor"] == 3300
    problem(ws.patch(item, {"title": "Stale"}, {"If-Match": etag}), 412)
    problem(ws.post(item + "/revise", None), 409)  # a draft is edited, not revised
    with fresh_db.admin() as conn:  # a shortcut past the send (tests/api/test_proposal_signing.py sends)
        conn.execute("UPDATE proposals SET status = 'sent' WHERE id = %s", (proposal["id"],))
    problem(ws.patch(item, {"title": "Too late"}), 409)
    problem(ws.delete(item), 409)
    revised = ws.post(item + "/revise", None)
    assert revised.status_code == 201, revised.body
    copy = body_of(revised)
    assert (copy["status"], copy["version"], copy["previous_id"]) == ("draft", 2, proposal["id"])
    assert copy["line_items"] == body_of(ws.get(item))["line_items"] and copy["title"] == "Renamed"
    voided = ws.post(item + "/void", None)
    assert voided.status_code == 200 and body_of(voided)["status"] == "void"
    problem(ws.post(item + "/void", None), 409)
    assert ws.delete(f"/proposals/{copy['id']}").status_code == 204
    assert [p["id"] for p in body_of(ws.get(f"/leads/{lead}/proposals"))["data"]] == [proposal["id"]]


def test_a_product_price_change_never_reaches_a_written_line(ws: Workspace) -> None:
    product = ws.create("/products", PRO)
    proposal = body_of(draft(ws, a_lead(ws), [{"product_id": product["id"], "quantity": 1}]))
    assert ws.patch(f"/products/{product['id']}", {"unit_amount_minor": 9900}).status_code == 200
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["totals"]["subtotal_minor"] == 4900
    assert ws.delete(f"/products/{product['id']}").status_code == 204  # the line keeps its SKU and price
    line = body_of(ws.get(f"/proposals/{proposal['id']}"))["line_items"][0]
    assert (line["product_id"], line["sku"], line["unit_amount_minor"]) == (None, "PRO-1", 4900)


def test_the_pdf_holds_the_parties_the_lines_the_totals_and_the_validity(ws: Workspace) -> None:
    product = ws.create("/products", PRO)
    lead = a_lead(ws)
    proposal = body_of(draft(ws, lead, [{"product_id": product["id"], "quantity": 1000},
                                        {"description": "Setup <b>&</b>", "quantity": 1,
                                         "unit_amount_minor": 12_345},
                                        {"description": "A long label <i>that</i> wraps onto a second line & more",
                                         "quantity": 1, "unit_amount_minor": 0}],
                             introduction="Dear Grace,\n\nHere is our offer."))
    response = ws.get(f"/proposals/{proposal['id']}/pdf", PDF)
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.body)).pages)
    for expected in ("alice workspace", "Grace Hopper", "grace@example.test", "Pro plan (PRO-1)", "Setup <b>&</b>",
                     "<i>that</i>", "49,000.00 EUR", "123.45 EUR", "Subtotal", "49,123.45 EUR", "Tax 19 %",
                     "9,310.00 EUR", "Total", "58,433.45 EUR", "2027-01-31", "Here is our offer."):
        assert expected in text, (expected, text)
    assert proposal["totals"]["total_minor"] == 5_843_345


def test_members_draft_proposals(ws: Workspace, outbox: Outbox) -> None:
    member = ws.as_member(outbox)
    lead = a_lead(ws)
    assert draft(member, lead, [{"description": "x", "quantity": 1, "unit_amount_minor": 1}]).status_code == 201


def test_an_idempotency_key_replays_the_first_draft(ws: Workspace) -> None:
    lead = a_lead(ws)
    headers = {"Idempotency-Key": "draft-1"}
    body = {"title": "P", "valid_until": "2027-01-31", "currency": "EUR", "line_items": []}
    first = ws.post(f"/leads/{lead}/proposals", body, headers)
    again = ws.post(f"/leads/{lead}/proposals", body, headers)
    assert first.status_code == again.status_code == 201 and body_of(first)["id"] == body_of(again)["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"


def test_product_and_proposal_text_never_reach_the_logs(api: Client, outbox: Outbox) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        ws = new_workspace(api, outbox, "canary")
        product = ws.create("/products", {**PRO, "name": "Zyxcanary product", "description": "zyxcanary desc"})
        proposal = body_of(draft(ws, a_lead(ws), [{"product_id": product["id"], "quantity": 1}],
                                 title="Zyxcanary title", introduction="zyxcanary intro"))
        assert ws.get(f"/proposals/{proposal['id']}/pdf", PDF).status_code == 200
        bad = [{"description": "zyxcanary bad", "quantity": 0, "unit_amount_minor": 1}]
        problem(draft(ws, a_lead(ws, "other@example.test"), bad), 422)
    finally:
        configure_logging("INFO")
    assert "zyxcanary" not in stream.getvalue().lower()


def test_a_lead_with_a_sent_proposal_is_kept_and_one_with_drafts_only_goes_with_them(
        ws: Workspace, fresh_db: TestDatabase) -> None:
    kept, gone = a_lead(ws), a_lead(ws, "other@example.test")
    sent = body_of(draft(ws, kept, []))
    body_of(draft(ws, gone, []))
    with fresh_db.admin() as conn:
        conn.execute("UPDATE proposals SET status = 'sent' WHERE id = %s", (sent["id"],))
    problem(ws.delete(f"/leads/{kept}"), 409)
    assert ws.get(f"/proposals/{sent['id']}").status_code == 200
    assert ws.delete(f"/leads/{gone}").status_code == 204
    problem(ws.get(f"/leads/{gone}/proposals"), 404)


def test_an_idempotency_key_is_per_lead(ws: Workspace, other: Workspace) -> None:
    first, second = a_lead(ws), a_lead(ws, "other@example.test")
    body = {"title": "P", "valid_until": "2027-01-31", "currency": "EUR", "line_items": []}
    headers = {"Idempotency-Key": "same-key"}
    a = ws.post(f"/leads/{first}/proposals", body, headers)
    b = ws.post(f"/leads/{second}/proposals", body, headers)
    assert a.status_code == b.status_code == 201 and body_of(a)["id"] != body_of(b)["id"]
    assert body_of(b)["lead_id"] == second and "Idempotent-Replayed" not in b.headers
    problem(other.post(f"/leads/{first}/proposals", body, headers), 404)


def test_a_proposal_is_revised_once(ws: Workspace, fresh_db: TestDatabase) -> None:
    proposal = body_of(draft(ws, a_lead(ws), []))
    with fresh_db.admin() as conn:
        conn.execute("UPDATE proposals SET status = 'declined' WHERE id = %s", (proposal["id"],))
    copy = body_of(ws.post(f"/proposals/{proposal['id']}/revise", None))
    body = problem(ws.post(f"/proposals/{proposal['id']}/revise", None), 409)
    assert copy["id"] in body["detail"]


def test_a_product_line_keeps_the_books_name(ws: Workspace) -> None:
    product = ws.create("/products", PRO)
    body = problem(draft(ws, a_lead(ws), [{"product_id": product["id"], "quantity": 1,
                                           "description": "Enterprise plan"}]), 422)
    assert "price book" in str(body)


# Written out, not read from TRANSITIONS: which statuses an operator may void.
VOIDABLE = {"draft": 200, "sent": 200, "signed": 200, "paid": 409, "declined": 409, "expired": 409, "void": 409}


@pytest.mark.parametrize(("status", "expected"), sorted(VOIDABLE.items()))
def test_void_is_refused_once_a_proposal_is_settled(ws: Workspace, fresh_db: TestDatabase, status: str,
                                                    expected: int) -> None:
    proposal = body_of(draft(ws, a_lead(ws), []))
    with fresh_db.admin() as conn:
        conn.execute("UPDATE proposals SET status = %s WHERE id = %s", (status, proposal["id"]))
    response = ws.post(f"/proposals/{proposal['id']}/void", None)
    assert response.status_code == expected, response.body
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == ("void" if expected == 200 else status)
