"""O01/O02 for sign-in: a real flow (link, code, session, API key), then failures while the request carries the
session cookie, CSRF token, API key, link token and code; the Sentry envelopes hold none of them.

Runs in a child process: Sentry's integrations patch the interpreter for good.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TestDatabase
from tests.sentry_harness import run_child


def run_auth_sentry_scenario() -> None:
    """The child: init Sentry with a capturing transport, sign in for real, then fail with every credential."""
    from chalice.test import Client

    from chalicelib.db.pool import Database, use_database
    from chalicelib.settings import get_settings
    from tests.sentry_harness import capture, report

    capture()
    import app as app_module
    from tests.api.auth_helpers import (
        ORIGIN,
        Outbox,
        call,
        create_key,
        create_workspace,
        post_json,
        request_link,
        session_from,
        sign_in_with_token,
    )

    use_database(Database(os.environ["AUTH_SENTRY_APP_URL"], size=1), "app")
    address = "sentry-canary@example.test"
    box = Outbox(get_settings().data_dir / "outbox")
    with Client(app_module.app) as client:
        request_link(client, address)
        first = box.newest()
        browser = session_from(sign_in_with_token(client, first.token))
        workspace = create_workspace(client, browser)["id"]
        key = create_key(client, browser, workspace, role="admin")["key"]
        request_link(client, address)
        pending = box.newest()

        use_database(Database("host=/nonexistent dbname=none", timeout=0.3), "app")
        statuses = [
            call(client, "GET", "/auth/me", browser).status_code,
            call(client, "PATCH", "/auth/me", browser, {"display_name": "x"}).status_code,
            call(client, "GET", f"/workspaces/{workspace}/members?token={pending.token}", bearer=key).status_code,
            sign_in_with_token(client, pending.token).status_code,
            post_json(client, "/auth/session", {"email": address, "code": pending.code},
                      {"Origin": ORIGIN}).status_code,
            request_link(client, address).status_code,
        ]
    report(**{
        "secrets": {"token": first.token, "pending-token": pending.token, "code": pending.code,
                    "first-code": first.code, "session": browser.cookie_value, "csrf": browser.csrf, "api-key": key,
                    "api-key-secret": key.split("_", 2)[2], "address": address},
        "statuses": statuses,
    })


@pytest.fixture
def scenario(fresh_db: TestDatabase, tmp_path: Path) -> dict[str, Any]:
    return run_child(__name__, "run_auth_sentry_scenario",
                     {"AUTH_SENTRY_APP_URL": fresh_db.app_url, "DATA_DIR": str(tmp_path)})


def test_sentry_events_of_failed_authenticated_requests_hold_no_credential(scenario: dict[str, Any]) -> None:
    assert scenario["statuses"] == [503] * 6, scenario["statuses"]  # a dead database: unavailable, reported
    assert scenario["events"], "no Sentry event was captured: the sweep would prove nothing"
    assert any(e.get("exception") for e in scenario["events"])
    text = "\n".join(scenario["envelopes"])
    for name, secret in scenario["secrets"].items():
        assert secret not in text, f"{name} reached Sentry"
