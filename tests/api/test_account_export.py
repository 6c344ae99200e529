"""GET /auth/me/export: the signed-in operator's own data as one JSON download, and nothing of anyone else's.

Two users in their own workspaces (and one shared): the file holds the caller's account, the memberships of
all its workspaces, its sessions without any secret and its account audit entries. Canaries (the cookie
values, their stored HMACs in hex and base64, the CSRF tokens, the other user's address) never appear in
the file, the log line or Sentry.
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import clock, errors
from chalicelib.accounts import export as account_export
from chalicelib.audit import Actor
from chalicelib.auth.crypto import keyed_hash
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import user_tx
from chalicelib.settings import get_settings
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
from tests.sentry_harness import run_child

EXPORT = "/auth/me/export"
ALICE, BOB = "alice-export@example.test", "bob-export@example.test"
ALICE_AGENT, BOB_AGENT = "ZyxAliceAgent/1.0", "ZyxBobAgent/2.0"
ALICE_NAME, BOB_NAME = "Zyxalice Exporter", "Zyxbob Other"


def session_canaries(browser: Browser) -> dict[str, str]:
    """Every form a session's secret could take in a file: the cookie, its stored HMAC, the CSRF token."""
    digest = keyed_hash("session", browser.cookie_value, get_settings())
    return {"cookie": browser.cookie_value, "hash-hex": digest.hex(), "hash-bytea": "\\x" + digest.hex(),
            "hash-base64": base64.b64encode(digest).decode(), "hash-base64url": base64.urlsafe_b64encode(digest)
            .decode().rstrip("="), "csrf": browser.csrf}


@dataclass
class Pair:
    """Alice (two sessions, one revoked; two workspaces of her own and a seat in Bob's) and Bob."""

    alice: Browser
    alice_old: Browser
    bob: Browser
    alice_workspaces: dict[str, str]  # id -> role
    bob_only: dict[str, Any]


def _two_users(api: Client, outbox: Outbox) -> Pair:
    bob = sign_in(api, BOB, outbox, headers={"User-Agent": BOB_AGENT})
    assert call(api, "PATCH", "/auth/me", bob, {"display_name": BOB_NAME}).status_code == 200
    bob_only = create_workspace(api, bob, "Zyxbob Private")
    shared = create_workspace(api, bob, "Shared Bravo")
    alice_old = sign_in(api, ALICE, outbox, headers={"User-Agent": "OldLaptop/1"})
    assert call(api, "POST", "/auth/logout", alice_old).status_code == 204
    alice = invite_and_join(api, outbox, bob, shared["id"], ALICE, "admin")
    assert call(api, "PATCH", "/auth/me", alice, {"display_name": ALICE_NAME}).status_code == 200
    alpha = create_workspace(api, alice, "Alpha")
    beta = create_workspace(api, alice, "Beta")
    return Pair(alice, alice_old, bob, {alpha["id"]: "owner", beta["id"]: "owner", shared["id"]: "admin"}, bob_only)


def _export(api: Client, browser: Browser, agent: str = ALICE_AGENT) -> Any:
    return call(api, "GET", EXPORT, browser, headers={"User-Agent": agent})


def test_export_is_a_json_download_of_the_account_memberships_sessions_and_audit(api: Client, outbox: Outbox) -> None:
    pair = _two_users(api, outbox)
    response = _export(api, pair.alice)
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/json"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="account-export-') and disposition.endswith('.json"')
    assert "no-store" in response.headers["Cache-Control"]
    document = body_of(response)
    assert set(document) == {"format", "exported_at", "account", "memberships", "sessions", "account_audit_log"}
    assert document["format"] == "crm-account-export/1"
    account = document["account"]
    assert account["id"] == pair.alice.user_id and account["email"] == ALICE
    assert account["display_name"] == ALICE_NAME and account["created_at"] <= account["updated_at"]
    memberships = {m["workspace_id"]: m for m in document["memberships"]}
    assert {k: m["role"] for k, m in memberships.items()} == pair.alice_workspaces
    assert memberships[next(iter(pair.alice_workspaces))]["workspace_name"] == "Alpha"
    assert {m["workspace_name"] for m in memberships.values()} == {"Alpha", "Beta", "Shared Bravo"}
    assert all(m["since"] and m["workspace_deleted_at"] is None for m in memberships.values())


def test_export_lists_every_session_with_its_times_and_none_of_its_secrets(api: Client, outbox: Outbox,
                                                                           fresh_db: TestDatabase) -> None:
    pair = _two_users(api, outbox)
    response = _export(api, pair.alice)
    sessions = body_of(response)["sessions"]
    assert len(sessions) == 2  # the revoked one too: it is held until the purge, so it is exported
    assert all(set(s) == {"id", "created_at", "last_seen_at", "expires_at", "revoked_at", "ip", "user_agent",
                          "current"} for s in sessions)
    old = next(s for s in sessions if s["user_agent"] == "OldLaptop/1")
    current = [s for s in sessions if s["current"]]
    assert len(current) == 1 and current[0]["revoked_at"] is None and old["revoked_at"] is not None
    assert all(s["ip"] == "127.0.0.1" and s["expires_at"] > s["created_at"] for s in sessions)
    live_ids = {s["id"] for s in body_of(call(api, "GET", "/auth/sessions", pair.alice))["data"]}
    assert live_ids == {current[0]["id"]}
    text = response.body.decode()
    with fresh_db.admin() as conn:
        stored = {bytes(r[0]) for r in conn.execute("SELECT token_hash FROM sessions").fetchall()}
    for browser in (pair.alice, pair.alice_old, pair.bob):
        canaries = session_canaries(browser)
        # The canary is the real stored value: a test that computed another hash would prove nothing.
        assert bytes.fromhex(canaries["hash-hex"]) in stored
        for name, canary in canaries.items():
            assert canary not in text, f"{name} of a session is in the export"
    assert "token" not in text and "hash" not in text and "csrf" not in text.lower()


def test_export_holds_the_accounts_audit_entries_and_records_itself_without_content(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    pair = _two_users(api, outbox)
    first = body_of(_export(api, pair.alice))
    actions = [e["action"] for e in first["account_audit_log"]]
    assert actions == ["signin.succeeded", "logout", "signin.succeeded"]  # oldest first; no export yet
    assert all(set(e) == {"id", "occurred_at", "action", "ip", "user_agent", "details"}
               for e in first["account_audit_log"])
    second = body_of(_export(api, pair.alice))
    exported = [e for e in second["account_audit_log"] if e["action"] == "account.exported"]
    assert len(exported) == 1
    assert exported[0]["details"] == {} and exported[0]["user_agent"] == ALICE_AGENT
    assert exported[0]["ip"] == "127.0.0.1"
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT user_id, details FROM account_audit_log WHERE action = 'account.exported'"
                            ).fetchall()
    assert [(str(r[0]), r[1]) for r in rows] == [(pair.alice.user_id, {})] * 2


def test_another_users_data_never_appears_in_the_export(api: Client, outbox: Outbox) -> None:
    pair = _two_users(api, outbox)
    text = _export(api, pair.alice).body.decode()
    bob_sessions = {s["id"] for s in body_of(call(api, "GET", "/auth/sessions", pair.bob))["data"]}
    bob_file = body_of(_export(api, pair.bob, BOB_AGENT))
    bob_events = {e["id"] for e in bob_file["account_audit_log"]}
    for canary in (BOB, BOB_NAME, BOB_AGENT, pair.bob.user_id, pair.bob_only["id"], pair.bob_only["name"],
                   *bob_sessions, *bob_events):
        assert canary not in text, canary
    # And the other way round: Bob's file has the shared workspace (as owner) but nothing of Alice's.
    assert {m["workspace_name"] for m in bob_file["memberships"]} == {"Zyxbob Private", "Shared Bravo"}
    bob_text = json.dumps(bob_file)
    for canary in (ALICE, ALICE_NAME, ALICE_AGENT, pair.alice.user_id, "Alpha", "Beta"):
        assert canary not in bob_text, canary


def test_export_without_a_session_is_401(api: Client, outbox: Outbox) -> None:
    problem(call(api, "GET", EXPORT), 401)
    problem(call(api, "GET", EXPORT, headers={"Cookie": "crm_session=" + "A" * 43}), 401)


def test_a_revoked_session_cannot_export(api: Client, outbox: Outbox) -> None:
    pair = _two_users(api, outbox)
    problem(_export(api, pair.alice_old), 401)
    assert call(api, "POST", "/auth/logout-all", pair.alice).status_code == 204
    problem(_export(api, pair.alice), 401)


def test_an_api_key_cannot_export_a_person(api: Client, outbox: Outbox) -> None:
    owner = sign_in(api, "key-owner@example.test", outbox)
    workspace = create_workspace(api, owner)["id"]
    key = create_key(api, owner, workspace, role="admin")["key"]
    problem(call(api, "GET", EXPORT, bearer=key), 401)
    problem(call(api, "GET", EXPORT, owner, bearer=key), 401)  # a key beside the cookie is refused too


def test_without_a_bound_user_the_export_reads_nothing(app_db: Database, outbox: Outbox) -> None:
    """The statements read only the transaction's verified user: without bind_user there is no account."""
    with pytest.raises(errors.NotFound), user_tx() as conn:
        account_export.export(conn, actor=Actor(), session_id=uuid.uuid4(), now=clock.now())


def test_the_log_line_of_an_export_carries_no_personal_data(api: Client, outbox: Outbox, logs: io.StringIO) -> None:
    pair = _two_users(api, outbox)
    assert _export(api, pair.alice).status_code == 200
    problem(_export(api, pair.alice_old), 401)
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    exports = [line for line in lines if EXPORT in json.dumps(line)]
    assert len(exports) == 2 and {line.get("status") for line in exports} == {200, 401}, exports
    logged = logs.getvalue()
    for canary in (ALICE, ALICE_NAME, ALICE_AGENT, pair.alice.user_id, "Shared Bravo",
                   *session_canaries(pair.alice).values(), *session_canaries(pair.alice_old).values()):
        assert canary not in logged, canary


# ---- Sentry: a child process (Sentry's integrations patch the interpreter for good) ----------------------


def run_export_sentry_scenario() -> None:
    """The child: export for real (breadcrumbs), then an export the dead database fails (an event)."""
    from chalicelib.db.pool import Database, use_database
    from tests.sentry_harness import capture, report

    capture()
    import app as app_module

    use_database(Database(os.environ["EXPORT_SENTRY_APP_URL"], size=1), "app")
    box = Outbox(get_settings().data_dir / "outbox")
    with Client(app_module.app) as client:
        browser = sign_in(client, ALICE, box, headers={"User-Agent": ALICE_AGENT})
        call(client, "PATCH", "/auth/me", browser, {"display_name": ALICE_NAME})
        workspace = create_workspace(client, browser, "Zyxsentry Workspace")
        exported = _export(client, browser)
        use_database(Database("host=/nonexistent dbname=none", timeout=0.3), "app")
        failed = call(client, "GET", EXPORT, browser)
    report(statuses=[exported.status_code, failed.status_code], secrets={
        "address": ALICE, "name": ALICE_NAME, "agent": ALICE_AGENT, "user-id": browser.user_id,
        "workspace": workspace["name"], **session_canaries(browser)})


@pytest.fixture
def sentry_scenario(fresh_db: TestDatabase, tmp_path: Path) -> dict[str, Any]:
    return run_child(__name__, "run_export_sentry_scenario",
                     {"EXPORT_SENTRY_APP_URL": fresh_db.app_url, "DATA_DIR": str(tmp_path)})


def test_sentry_events_around_an_export_hold_none_of_its_content(sentry_scenario: dict[str, Any]) -> None:
    assert sentry_scenario["statuses"] == [200, 503], sentry_scenario["statuses"]
    assert sentry_scenario["events"], "no Sentry event was captured: the sweep would prove nothing"
    text = "\n".join(sentry_scenario["envelopes"])
    assert EXPORT in text  # the failed request is in the event (its route), so the sweep looked at it
    for name, secret in sentry_scenario["secrets"].items():
        assert secret not in text, f"{name} reached Sentry"
