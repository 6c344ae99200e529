"""Workspace API keys (shown once, stored hashed, scoped to one workspace and role) and the audit log."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import time_machine
from chalice.test import Client

from tests.api.auth_helpers import (
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

T0 = datetime(2030, 1, 7, 12, 3, tzinfo=UTC)


def _ws(workspace_id: str, rest: str = "") -> str:
    return f"/workspaces/{workspace_id}{rest}"


@pytest.fixture
def team(api: Client, outbox: Outbox) -> dict[str, Any]:
    """A workspace with an owner, an admin and a member."""
    owner = sign_in(api, "key-owner@example.test", outbox)
    workspace = create_workspace(api, owner, "Keyed")
    admin = invite_and_join(api, outbox, owner, workspace["id"], "key-admin@example.test", "admin")
    member = invite_and_join(api, outbox, owner, workspace["id"], "key-member@example.test", "member")
    return {"id": workspace["id"], "owner": owner, "admin": admin, "member": member}


# ---- keys ---------------------------------------------------------------------------------------


def test_key_is_shown_once_and_never_listed_with_its_secret_or_hash(api: Client, team: dict[str, Any],
                                                                   fresh_db: TestDatabase) -> None:
    response = call(api, "POST", _ws(team["id"], "/api-keys"), team["admin"],
                    {"name": "Zapier", "role": "member"})
    assert response.status_code == 201
    created = body_of(response)
    key = created["key"]
    assert key.startswith(f"crm_{created['prefix']}_") and len(key) >= 50
    assert response.headers["Location"] == f"/workspaces/{team['id']}/api-keys/{created['id']}"
    with fresh_db.admin() as conn:
        row = conn.execute("SELECT key_hash FROM api_keys WHERE id = %s", (created["id"],)).fetchone()
    assert row is not None
    stored = bytes(row[0])
    assert key.encode() not in stored
    listing = call(api, "GET", _ws(team["id"], "/api-keys"), team["admin"])
    assert listing.status_code == 200
    text = listing.body.decode()
    secret_part = key.split("_", 2)[2]  # crm_<prefix>_<secret>; the secret may hold "_"
    for forbidden in (key, secret_part, stored.hex(), base64.b64encode(stored).decode(),
                      base64.urlsafe_b64encode(stored).decode().rstrip("=")):
        assert forbidden not in text
    (entry,) = body_of(listing)["data"]
    assert set(entry) == {"id", "name", "prefix", "role", "created_at", "expires_at", "last_used_at", "revoked_at"}
    assert (entry["name"], entry["prefix"], entry["role"]) == ("Zapier", created["prefix"], "member")
    assert "key" not in body_of(call(api, "GET", _ws(team["id"], "/api-keys"), team["owner"]))["data"][0]


def test_bearer_key_acts_in_its_workspace_with_its_role(api: Client, team: dict[str, Any]) -> None:
    member_key = create_key(api, team["admin"], team["id"], role="member")["key"]
    admin_key = create_key(api, team["admin"], team["id"], role="admin")["key"]
    assert call(api, "GET", _ws(team["id"]), bearer=member_key).status_code == 200
    assert call(api, "GET", _ws(team["id"], "/members"), bearer=member_key).status_code == 200
    for method, rest, body in (("GET", "/api-keys", None), ("GET", "/audit-log", None),
                               ("POST", "/api-keys", {"name": "escalate", "role": "admin"}),
                               ("PATCH", "", {"name": "renamed by key"}),
                               ("POST", "/invitations", {"email": "k@example.test"}),
                               ("DELETE", "", None)):
        problem(call(api, method, _ws(team["id"], rest), body=body, bearer=member_key), 403)
    assert call(api, "GET", _ws(team["id"], "/api-keys"), bearer=admin_key).status_code == 200
    # An admin key cannot delete the workspace (owner only) nor hand out ownership, nor mint keys (a
    # leaked key would otherwise outlive its own revocation).
    problem(call(api, "DELETE", _ws(team["id"]), bearer=admin_key), 403)
    for role in ("member", "admin"):
        problem(call(api, "POST", _ws(team["id"], "/api-keys"), body={"name": "child", "role": role},
                     bearer=admin_key), 403)
    problem(call(api, "PATCH", _ws(team["id"], f"/members/{team['member'].user_id}"), body={"role": "owner"},
                 bearer=admin_key), 403)


def test_bearer_writes_need_neither_csrf_token_nor_origin(api: Client, team: dict[str, Any]) -> None:
    admin_key = create_key(api, team["admin"], team["id"], role="admin")["key"]
    renamed = call(api, "PATCH", _ws(team["id"]), body={"name": "By integration"}, bearer=admin_key,
                   origin=None, csrf=None)
    assert renamed.status_code == 200
    # A cross-site Origin does not matter either: there is no ambient credential to abuse.
    other = call(api, "PATCH", _ws(team["id"]), body={"name": "Again"}, bearer=admin_key,
                 origin="https://integration.example", csrf=None)
    assert other.status_code == 200


def test_key_of_workspace_a_is_404_on_workspace_b(api: Client, outbox: Outbox, team: dict[str, Any]) -> None:
    key = create_key(api, team["owner"], team["id"], role="admin")["key"]
    stranger = sign_in(api, "stranger@example.test", outbox)
    other = create_workspace(api, stranger, "B")
    for method, rest in (("GET", ""), ("GET", "/members"), ("GET", "/api-keys"), ("GET", "/audit-log"),
                         ("DELETE", "")):
        problem(call(api, method, _ws(other["id"], rest), bearer=key), 404)
    assert call(api, "GET", _ws(other["id"]), stranger).status_code == 200


def test_revoked_key_is_refused_at_once(api: Client, team: dict[str, Any]) -> None:
    created = create_key(api, team["admin"], team["id"], role="member")
    assert call(api, "GET", _ws(team["id"]), bearer=created["key"]).status_code == 200
    assert call(api, "DELETE", _ws(team["id"], f"/api-keys/{created['id']}"), team["admin"]).status_code == 204
    problem(call(api, "GET", _ws(team["id"]), bearer=created["key"]), 404)
    problem(call(api, "DELETE", _ws(team["id"], f"/api-keys/{created['id']}"), team["admin"]), 404)
    listed = body_of(call(api, "GET", _ws(team["id"], "/api-keys"), team["admin"]))["data"]
    assert listed[0]["revoked_at"] is not None


def test_keys_of_a_deleted_workspace_stop_working_and_work_again_after_restore(api: Client,
                                                                              team: dict[str, Any]) -> None:
    key = create_key(api, team["owner"], team["id"], role="admin")["key"]
    assert call(api, "DELETE", _ws(team["id"]), team["owner"]).status_code == 202
    problem(call(api, "GET", _ws(team["id"], "/members"), bearer=key), 404)
    problem(call(api, "POST", _ws(team["id"], "/restore"), bearer=key), 403)  # owner only
    assert call(api, "POST", _ws(team["id"], "/restore"), team["owner"]).status_code == 200
    assert call(api, "GET", _ws(team["id"], "/members"), bearer=key).status_code == 200


def test_member_cannot_create_list_or_revoke_keys(api: Client, team: dict[str, Any]) -> None:
    created = create_key(api, team["admin"], team["id"])
    problem(call(api, "POST", _ws(team["id"], "/api-keys"), team["member"], {"name": "mine"}), 403)
    problem(call(api, "GET", _ws(team["id"], "/api-keys"), team["member"]), 403)
    problem(call(api, "DELETE", _ws(team["id"], f"/api-keys/{created['id']}"), team["member"]), 403)
    assert call(api, "GET", _ws(team["id"]), bearer=created["key"]).status_code == 200


def test_expired_key_is_refused(api: Client, outbox: Outbox, env: Any) -> None:
    env(session_idle_timeout_s=30 * 86400)
    with time_machine.travel(T0, tick=False) as traveller:
        owner = sign_in(api, "expiring@example.test", outbox)
        workspace = create_workspace(api, owner)
        created = create_key(api, owner, workspace["id"], expires_at=(T0 + timedelta(days=1)).isoformat())
        traveller.shift(timedelta(hours=23, minutes=59))
        assert call(api, "GET", _ws(workspace["id"]), bearer=created["key"]).status_code == 200
        traveller.shift(timedelta(minutes=2))
        problem(call(api, "GET", _ws(workspace["id"]), bearer=created["key"]), 404)


def test_key_expiry_must_be_a_future_time_with_a_timezone(api: Client, team: dict[str, Any]) -> None:
    for expires_at in ("2001-01-01T00:00:00Z", "2099-01-01T00:00:00", "tomorrow"):
        problem(call(api, "POST", _ws(team["id"], "/api-keys"), team["admin"],
                     {"name": "bad", "expires_at": expires_at}), 422)


def test_key_use_is_recorded_as_last_used(api: Client, team: dict[str, Any]) -> None:
    created = create_key(api, team["admin"], team["id"])
    assert created["last_used_at"] is None
    call(api, "GET", _ws(team["id"]), bearer=created["key"])
    listed = body_of(call(api, "GET", _ws(team["id"], "/api-keys"), team["admin"]))["data"]
    assert listed[0]["last_used_at"] is not None


def test_api_keys_cannot_reach_account_routes(api: Client, team: dict[str, Any]) -> None:
    key = create_key(api, team["owner"], team["id"], role="admin")["key"]
    for method, path, body in (("GET", "/auth/me", None), ("GET", "/auth/sessions", None),
                               ("PATCH", "/auth/me", {"display_name": "k"}), ("POST", "/auth/logout-all", None),
                               ("GET", "/workspaces", None)):
        problem(call(api, method, path, body=body, bearer=key), 401)


def test_malformed_bearer_values_are_refused(api: Client, team: dict[str, Any]) -> None:
    real = create_key(api, team["owner"], team["id"])["key"]
    for value in ("", "crm_", real + "x", real.upper(), "' OR 1=1 --", real[:-1]):
        response = call(api, "GET", _ws(team["id"]), headers={"Authorization": f"Bearer {value}"})
        assert response.status_code in (401, 404), value


# ---- audit log ----------------------------------------------------------------------------------


def _audit(api: Client, browser: Browser, workspace_id: str, query: str = "") -> Any:
    return call(api, "GET", _ws(workspace_id, "/audit-log" + query), browser)


def test_workspace_events_are_in_the_audit_log(api: Client, outbox: Outbox, env: Any) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        owner = sign_in(api, "auditor@example.test", outbox, headers={"User-Agent": "Auditor/1"})
        workspace = create_workspace(api, owner)
        joined = invite_and_join(api, outbox, owner, workspace["id"], "joiner@example.test", "member")
        call(api, "PATCH", _ws(workspace["id"], f"/members/{joined.user_id}"), owner, {"role": "admin"})
        call(api, "DELETE", _ws(workspace["id"], f"/members/{joined.user_id}"), owner)
        created = create_key(api, owner, workspace["id"])
        call(api, "DELETE", _ws(workspace["id"], f"/api-keys/{created['id']}"), owner)
        call(api, "DELETE", _ws(workspace["id"]), owner)
        traveller.shift(timedelta(days=1))
        call(api, "POST", _ws(workspace["id"], "/restore"), owner)
        response = _audit(api, owner, workspace["id"])
    assert response.status_code == 200
    entries = body_of(response)["data"]
    actions = [e["action"] for e in entries]
    for expected in ("workspace.created", "invitation.sent", "member.added", "member.role_changed",
                     "member.removed", "api_key.created", "api_key.revoked", "workspace.deleted",
                     "workspace.restored"):
        assert expected in actions, expected
    by_action = {e["action"]: e for e in entries}
    assert by_action["member.role_changed"]["details"] == {"from": "member", "to": "admin"}
    assert by_action["member.removed"]["target_id"] == joined.user_id
    assert by_action["member.added"]["actor_user_id"] == joined.user_id
    assert by_action["api_key.created"]["target_id"] == created["id"]
    removed = by_action["member.removed"]
    assert removed["actor_user_id"] == owner.user_id and removed["ip"] == "127.0.0.1"
    assert created["key"] not in response.body.decode()
    assert [e["occurred_at"] for e in entries] == sorted((e["occurred_at"] for e in entries), reverse=True)


def test_audit_log_is_for_owners_and_admins(api: Client, team: dict[str, Any]) -> None:
    assert _audit(api, team["owner"], team["id"]).status_code == 200
    assert _audit(api, team["admin"], team["id"]).status_code == 200
    problem(_audit(api, team["member"], team["id"]), 403)


def test_audit_log_pages_walk_every_entry_once(api: Client, team: dict[str, Any]) -> None:
    for index in range(3):
        create_key(api, team["owner"], team["id"], name=f"k{index}")
    everything = body_of(_audit(api, team["owner"], team["id"], "?limit=200"))
    assert everything["next_cursor"] is None
    expected = [e["id"] for e in everything["data"]]
    assert len(expected) >= 7
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page = body_of(_audit(api, team["owner"], team["id"], "?limit=2" + (f"&cursor={cursor}" if cursor else "")))
        assert len(page["data"]) <= 2
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected


def test_audit_log_refuses_tampered_and_foreign_cursors(api: Client, outbox: Outbox, team: dict[str, Any]) -> None:
    page = body_of(_audit(api, team["owner"], team["id"], "?limit=1"))
    cursor = page["next_cursor"]
    assert cursor
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[-3] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for bad in (tampered, cursor[:-2], "not-a-cursor", "AAAA", cursor + "A"):
        problem(_audit(api, team["owner"], team["id"], f"?limit=1&cursor={bad}"), 400)
    # The same owner's other workspace: a cursor is bound to the log it came from.
    other = create_workspace(api, team["owner"], "Other")
    problem(_audit(api, team["owner"], other["id"], f"?limit=1&cursor={cursor}"), 400)


def test_audit_log_limit_is_at_most_200(api: Client, team: dict[str, Any]) -> None:
    body = problem(_audit(api, team["owner"], team["id"], "?limit=201"), 400)
    assert "200" in body["detail"]
    for bad in ("0", "-1", "abc", "1.5"):
        problem(_audit(api, team["owner"], team["id"], f"?limit={bad}"), 400)
    assert _audit(api, team["owner"], team["id"], "?limit=200").status_code == 200


def test_audit_logs_are_append_only_for_the_app_role(api: Client, team: dict[str, Any],
                                                   fresh_db: TestDatabase) -> None:
    with fresh_db.admin() as conn:
        before = conn.execute("SELECT count(*) FROM audit_log").fetchone(), conn.execute(
            "SELECT count(*) FROM account_audit_log").fetchone()
    statements = (
        ("UPDATE audit_log SET action = 'forged'", True),
        ("DELETE FROM audit_log", True),
        ("TRUNCATE audit_log", True),
        ("UPDATE account_audit_log SET action = 'forged'", False),
        ("DELETE FROM account_audit_log", False),
        ("TRUNCATE account_audit_log", False),
    )
    for statement, in_tenant in statements:
        with psycopg.connect(fresh_db.app_url) as conn:
            if in_tenant:
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (team["id"],))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)  # type: ignore[arg-type]
    with fresh_db.admin() as conn:
        after = conn.execute("SELECT count(*) FROM audit_log").fetchone(), conn.execute(
            "SELECT count(*) FROM account_audit_log").fetchone()
    assert before == after


def test_tenant_b_cannot_read_tenant_a_audit_entries(api: Client, outbox: Outbox, team: dict[str, Any],
                                                    fresh_db: TestDatabase) -> None:
    stranger = sign_in(api, "b-owner@example.test", outbox)
    other = create_workspace(api, stranger, "B")
    problem(_audit(api, stranger, team["id"]), 404)
    entries = body_of(_audit(api, stranger, other["id"]))["data"]
    assert {e["action"] for e in entries} == {"workspace.created"}
    with psycopg.connect(fresh_db.app_url) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (other["id"],))
        rows = conn.execute("SELECT count(*) FROM audit_log WHERE tenant_id = %s", (team["id"],)).fetchone()
    assert rows == (0,)
