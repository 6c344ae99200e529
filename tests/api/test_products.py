"""The price book: products through the API (CRUD, ETag/If-Match, SKU unique per workspace, strict integer
amounts, Idempotency-Key, owners and admins write while members read, other workspaces see nothing)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.auth_helpers import Outbox, body_of, problem
from tests.api.crm_helpers import Workspace

PLAN = {"name": "Pro plan", "sku": "PRO-1", "description": "Monthly", "unit_amount_minor": 4900,
        "currency": "EUR", "tax_rate_bp": 1900}


def test_product_create_read_update_delete_with_etags(ws: Workspace) -> None:
    response = ws.post("/products", PLAN)
    assert response.status_code == 201, response.body
    product = body_of(response)
    assert response.headers["Location"] == f"{ws.base}/products/{product['id']}"
    assert {k: product[k] for k in PLAN} == PLAN and product["active"] is True
    etag = response.headers["ETag"]
    assert ws.get(f"/products/{product['id']}").headers["ETag"] == etag
    changed = ws.patch(f"/products/{product['id']}", {"unit_amount_minor": 5900, "active": False},
                       {"If-Match": etag})
    assert changed.status_code == 200, changed.body
    assert (body_of(changed)["unit_amount_minor"], body_of(changed)["active"]) == (5900, False)
    problem(ws.patch(f"/products/{product['id']}", {"name": "Stale"}, {"If-Match": etag}), 412)
    assert ws.delete(f"/products/{product['id']}").status_code == 204
    problem(ws.get(f"/products/{product['id']}"), 404)


@pytest.mark.parametrize(("change", "field"), [
    ({"unit_amount_minor": -1}, "unit_amount_minor"),
    ({"unit_amount_minor": 12.5}, "unit_amount_minor"),  # never a float: amounts are integers
    ({"unit_amount_minor": "4900"}, "unit_amount_minor"),
    ({"currency": "eur"}, "currency"),
    ({"currency": "XYZ"}, "currency"),  # three letters, but no ISO 4217 currency
    ({"tax_rate_bp": 10_001}, "tax_rate_bp"),
    ({"sku": "has space"}, "sku"),
    ({"name": ""}, "name"),
    ({"total": 1}, "total"),  # unknown fields are refused
])
def test_bad_products_are_422_naming_the_field(ws: Workspace, change: dict[str, Any], field: str) -> None:
    body = problem(ws.post("/products", {**PLAN, **change}), 422)
    assert field in str(body.get("errors")), body


def test_a_sku_is_unique_within_a_workspace_only(ws: Workspace, other: Workspace) -> None:
    ws.create("/products", PLAN)
    problem(ws.post("/products", {**PLAN, "name": "Copy"}), 409)
    assert other.post("/products", PLAN).status_code == 201
    second = ws.create("/products", {**PLAN, "sku": "PRO-2"})
    problem(ws.patch(f"/products/{second['id']}", {"sku": "PRO-1"}), 409)
    problem(ws.patch(f"/products/{second['id']}", {"currency": None}), 422)


def test_members_read_the_price_book_but_only_owners_and_admins_change_it(ws: Workspace, outbox: Outbox) -> None:
    product = ws.create("/products", PLAN)
    member, admin = ws.as_member(outbox), ws.as_member(outbox, "admin")
    assert member.get(f"/products/{product['id']}").status_code == 200
    assert [p["id"] for p in body_of(member.get("/products"))["data"]] == [product["id"]]
    problem(member.post("/products", {**PLAN, "sku": "M-1"}), 403)
    problem(member.patch(f"/products/{product['id']}", {"name": "Cheap"}), 403)
    problem(member.delete(f"/products/{product['id']}"), 403)
    assert admin.patch(f"/products/{product['id']}", {"name": "Admin's"}).status_code == 200


def test_another_workspace_neither_sees_nor_changes_a_product(ws: Workspace, other: Workspace) -> None:
    product = ws.create("/products", PLAN)
    path = f"/products/{product['id']}"
    for response in (other.get(path), other.patch(path, {"name": "pwned"}), other.delete(path)):
        problem(response, 404)
    # Nor through A's own URL, where it is no member.
    intruder = Workspace(other.client, other.browser, ws.id)
    problem(intruder.get(path), 404)
    problem(intruder.get("/products"), 404)
    assert body_of(other.get("/products"))["data"] == []
    assert body_of(ws.get(path))["name"] == PLAN["name"]


def test_the_list_filters_on_active_and_pages(ws: Workspace) -> None:
    made = [ws.create("/products", {**PLAN, "sku": f"S-{n}", "active": n % 2 == 0}) for n in range(5)]
    active = body_of(ws.get("/products?active=true&sort=name"))["data"]
    assert sorted(p["sku"] for p in active) == ["S-0", "S-2", "S-4"]
    problem(ws.get("/products?active=maybe"), 400)
    first = body_of(ws.get("/products?limit=2"))
    assert len(first["data"]) == 2 and first["next_cursor"]
    rest = body_of(ws.get(f"/products?limit=10&cursor={first['next_cursor']}"))["data"]
    assert {p["id"] for p in first["data"]} | {p["id"] for p in rest} == {p["id"] for p in made}


def test_an_idempotency_key_replays_the_first_answer(ws: Workspace) -> None:
    headers = {"Idempotency-Key": "product-create-1"}
    first = ws.post("/products", PLAN, headers)
    again = ws.post("/products", PLAN, headers)
    assert first.status_code == again.status_code == 201
    assert body_of(first)["id"] == body_of(again)["id"]
    assert len(body_of(ws.get("/products"))["data"]) == 1
