"""O01/O02 for outgoing webhooks: an endpoint whose receiver answers 500 with a canary, events carrying a canary,
and a dispatcher that fails on a dead database; the Sentry envelopes hold neither canary nor the signing secret.

Runs in a child process: Sentry's integrations patch the interpreter for good.
"""

from __future__ import annotations

import http.server
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import TestDatabase
from tests.sentry_harness import run_child

CANARY = "canary hook body 5e2d71"
ANSWER = "canary receiver answer 90c4ab"


def run_webhooks_sentry_scenario() -> None:
    """The child: Sentry with a capturing transport, an endpoint, a failing receiver, a dead jobs database."""
    from chalice.test import Client

    from chalicelib.db.pool import Database, use_database
    from chalicelib.db.tenancy import tenant_tx
    from chalicelib.outgoing import delivery, events, trigger
    from tests.sentry_harness import capture, report

    capture()
    import app as app_module
    from tests.api.auth_helpers import Outbox, body_of, call, create_workspace, sign_in

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(500)
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER.encode())

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    os.environ["OUTBOUND_ALLOW_HOSTS"] = host
    from chalicelib.settings import get_settings

    get_settings.cache_clear()
    use_database(Database(os.environ["HOOKS_SENTRY_APP_URL"], size=1), "app")
    jobs = Database(os.environ["HOOKS_SENTRY_JOBS_URL"], size=1)
    box = Outbox(Path(os.environ["DATA_DIR"]) / "outbox")
    with Client(app_module.app) as client:
        owner = sign_in(client, "hooks-sentry@example.test", box)
        workspace = uuid.UUID(create_workspace(client, owner)["id"])
        created = body_of(call(client, "POST", f"/workspaces/{workspace}/webhook-endpoints", owner,
                               {"url": f"http://{host}/hook", "event_types": ["*"]}))
        with tenant_tx(workspace) as conn:
            events.emit(conn, tenant_id=workspace, event_type="contact.created", data={"id": "c1", "note": CANARY})
        attempts = delivery.dispatch_tenant(workspace, db=jobs)
        # The local dispatcher thread, woken for the workspace, on a jobs database that is gone: it logs the
        # failure (an error Sentry captures) and keeps running.
        use_database(Database("host=/nonexistent dbname=none", timeout=0.3), "jobs")
        local = trigger.LocalTrigger()
        local.wake(workspace)
        local.idle.wait(10)
    server.shutdown()
    report(attempts=attempts, secret=created["secret"])


def test_sentry_events_of_webhook_failures_hold_no_payload_answer_or_secret(fresh_db: TestDatabase,
                                                                            tmp_path: Path) -> None:
    captured = run_child(__name__, "run_webhooks_sentry_scenario",
                         {"HOOKS_SENTRY_APP_URL": fresh_db.app_url, "HOOKS_SENTRY_JOBS_URL": fresh_db.jobs_url,
                          "DATA_DIR": str(tmp_path)})
    assert captured["attempts"] == 1
    assert captured["events"], "no Sentry event was captured: the sweep would prove nothing"
    text = "\n".join(captured["envelopes"])
    secret = captured["secret"]
    assert secret.startswith("whsec_")
    assert CANARY not in text, "an event's data reached Sentry"
    assert ANSWER not in text, "a receiver's answer reached Sentry"
    assert secret not in text and secret[6:] not in text, "a signing secret reached Sentry"
    with fresh_db.admin() as conn:  # the answer is where it belongs: the endpoint's delivery log
        assert conn.execute("SELECT response_excerpt FROM webhook_attempts").fetchall() == [(ANSWER,)]
