"""Integration credentials over HTTP: masked hints only, admin-only writes, 404 across workspaces."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

from chalice.test import Client

from chalicelib.db.tenancy import tenant_tx
from chalicelib.vault import store
from tests.api.auth_helpers import (
    Outbox,
    body_of,
    call,
    create_workspace,
    fresh_address,
    invite_and_join,
    problem,
    sign_in,
)
from tests.conftest import TestDatabase

SECRET = f"sk_test_CANARY{uuid.uuid4().hex}"
TWILIO_TOKEN = uuid.uuid4().hex  # 32 hex characters


def _stripe(secret: str = SECRET) -> dict[str, Any]:
    return {"secret_key": secret}


def test_put_returns_masked_hints_and_the_secret_never_comes_back(
        api: Client, outbox: Outbox, fresh_db: TestDatabase, logs: io.StringIO) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    response = call(api, "PUT", f"/workspaces/{workspace}/integrations/stripe", owner, _stripe())
    assert response.status_code == 200, response.body
    summary = body_of(response)
    assert summary["provider"] == "stripe" and summary["configured"] is True
    assert SECRET not in response.body.decode()
    assert SECRET[-4:] in json.dumps(summary["hints"])
    listed = call(api, "GET", f"/workspaces/{workspace}/integrations", owner)
    assert listed.status_code == 200
    providers = {item["provider"]: item for item in body_of(listed)["data"]}
    assert providers["stripe"]["configured"] is True
    assert providers["twilio"]["configured"] is False
    assert SECRET not in listed.body.decode()
    # The internal API used by later features decrypts it.
    with tenant_tx(workspace) as conn:
        credentials = store.get_credentials(conn, tenant_id=workspace, provider="stripe")
    assert credentials.secret_key.get_secret_value() == SECRET
    assert SECRET not in logs.getvalue()
    with fresh_db.admin() as conn:
        audit = conn.execute("SELECT action, details::text FROM audit_log WHERE action LIKE 'credentials.%'").fetchall()
    assert [a for a, _ in audit] == ["credentials.updated"]
    assert all(SECRET not in details for _, details in audit)


def test_member_role_cannot_set_or_delete_credentials(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    member = invite_and_join(api, outbox, owner, workspace, fresh_address("member"))
    problem(call(api, "PUT", f"/workspaces/{workspace}/integrations/stripe", member, _stripe()), 403)
    problem(call(api, "DELETE", f"/workspaces/{workspace}/integrations/stripe", member), 403)
    assert call(api, "GET", f"/workspaces/{workspace}/integrations", member).status_code == 200


def test_another_workspace_gets_404(api: Client, outbox: Outbox) -> None:
    owner_a = sign_in(api, fresh_address("a"), outbox)
    workspace_a = create_workspace(api, owner_a, "A")["id"]
    call(api, "PUT", f"/workspaces/{workspace_a}/integrations/stripe", owner_a, _stripe())
    owner_b = sign_in(api, fresh_address("b"), outbox)
    create_workspace(api, owner_b, "B")
    for method, body in (("GET", None), ("PUT", _stripe()), ("DELETE", None)):
        path = f"/workspaces/{workspace_a}/integrations" + ("" if method == "GET" else "/stripe")
        problem(call(api, method, path, owner_b, body), 404)
    listed = body_of(call(api, "GET", f"/workspaces/{workspace_a}/integrations", owner_a))["data"]
    assert {i["provider"]: i["configured"] for i in listed}["stripe"] is True


def test_unknown_provider_is_404_and_bad_shape_is_422(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    problem(call(api, "PUT", f"/workspaces/{workspace}/integrations/paypal", owner, {"key": "x"}), 404)
    bad = problem(call(api, "PUT", f"/workspaces/{workspace}/integrations/twilio", owner,
                       {"account_sid": "AC123", "auth_token": TWILIO_TOKEN}), 422)
    assert [e["field"] for e in bad["errors"]] == ["account_sid"]
    assert TWILIO_TOKEN not in json.dumps(bad)
    unknown = problem(call(api, "PUT", f"/workspaces/{workspace}/integrations/stripe", owner,
                           {"secret_key": SECRET, "extra": 1}), 422)
    assert SECRET not in json.dumps(unknown)


def test_delete_removes_the_credentials(api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    call(api, "PUT", f"/workspaces/{workspace}/integrations/stripe", owner, _stripe())
    assert call(api, "DELETE", f"/workspaces/{workspace}/integrations/stripe", owner).status_code == 204
    listed = body_of(call(api, "GET", f"/workspaces/{workspace}/integrations", owner))["data"]
    assert {i["provider"]: i["configured"] for i in listed}["stripe"] is False
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM integration_credentials").fetchone() == (0,)
