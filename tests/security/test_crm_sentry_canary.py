"""O01/O02 for the CRM: contact fields, a note body and a lead title sent in requests that succeed and in
requests that fail on a dead database; the Sentry envelopes hold none of them.

Runs in a child process: Sentry's integrations patch the interpreter for good.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import TestDatabase
from tests.sentry_harness import run_child

CANARIES = {"first_name": "Zyxcanaryfirst", "last_name": "Qwvcanarylast", "email": "zyx.canary.mail@example.test",
            "phone": "+442071838750", "title": "zyxcanary lead title", "note": "zyxcanary note body text"}


def run_crm_sentry_scenario() -> None:
    """The child: Sentry with a capturing transport, CRM writes that work, then the same on a dead database."""
    from chalice.test import Client

    from chalicelib.db.pool import Database, use_database
    from tests.sentry_harness import capture, report

    capture()
    import app as app_module
    from tests.api.auth_helpers import Outbox, body_of, call, create_workspace, sign_in

    use_database(Database(os.environ["CRM_SENTRY_APP_URL"], size=1), "app")
    box = Outbox(Path(os.environ["DATA_DIR"]) / "outbox")
    c = CANARIES
    contact_body = {k: c[k] for k in ("first_name", "last_name", "email", "phone")}
    with Client(app_module.app) as client:
        owner = sign_in(client, "crm-sentry@example.test", box)
        base = f"/workspaces/{create_workspace(client, owner)['id']}"
        contact = body_of(call(client, "POST", base + "/contacts", owner, contact_body))
        lead = body_of(call(client, "POST", base + "/leads", owner, {"title": c["title"], "contact_id": contact["id"]}))
        note = body_of(call(client, "POST", base + "/notes", owner, {"body": c["note"], "lead_id": lead["id"]}))
        statuses = [int(call(client, "GET", f"{base}/contacts?q={c['last_name']}", owner).status_code)]
        use_database(Database("host=/nonexistent dbname=none", timeout=0.3), "app")
        for method, path, body in (("POST", "/contacts", contact_body), ("POST", "/leads", {"title": c["title"]}),
                                   ("PATCH", f"/notes/{note['id']}", {"body": c["note"]}),
                                   ("GET", f"/contacts?q={c['first_name']}", None)):
            statuses.append(int(call(client, method, base + path, owner, body).status_code))
    report(statuses=statuses)


def test_sentry_events_of_crm_failures_hold_no_contact_field_note_body_or_lead_title(
        fresh_db: TestDatabase, tmp_path: Path) -> None:
    captured = run_child(__name__, "run_crm_sentry_scenario",
                         {"CRM_SENTRY_APP_URL": fresh_db.app_url, "DATA_DIR": str(tmp_path)})
    assert captured["statuses"][0] == 200
    assert all(status >= 500 for status in captured["statuses"][1:]), captured["statuses"]
    assert captured["events"], "no Sentry event was captured: the sweep would prove nothing"
    text = "\n".join(captured["envelopes"])
    leaked = [name for name, value in CANARIES.items() if value in text or value.lower() in text.lower()]
    assert leaked == [], f"reached Sentry: {leaked}"
