"""O01/O02 for the inbox: deliveries with a canary text and number, one of which fails in processing, and a
webhook that fails on a dead database; the Sentry envelopes hold neither the text nor the number.

Runs in a child process: Sentry's integrations patch the interpreter for good.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from tests.conftest import TestDatabase
from tests.sentry_harness import run_child

TEXT = "canary inbox text 7f3a9c"
NUMBER = "14155550187"


def run_inbox_sentry_scenario() -> None:
    """The child: Sentry with a capturing transport, a channel, deliveries, a failure, a dead database."""
    from chalice.test import Client

    from chalicelib.db.pool import Database, use_database
    from chalicelib.inbox.ingest import get_queue, use_queue
    from chalicelib.inbox.queue import LocalQueue
    from tests.sentry_harness import capture, report

    capture()
    import app as app_module
    from tests.api.auth_helpers import Outbox, body_of, call, create_workspace, sign_in
    from tests.fix_inbox import whatsapp_delivery

    use_database(Database(os.environ["INBOX_SENTRY_APP_URL"], size=1), "app")
    use_queue(None)
    queue = get_queue()  # the local settings' in-process worker
    assert isinstance(queue, LocalQueue)
    box = Outbox(Path(os.environ["DATA_DIR"]) / "outbox")
    with Client(app_module.app) as client:
        owner = sign_in(client, "inbox-sentry@example.test", box)
        workspace = create_workspace(client, owner)["id"]
        channel = body_of(call(client, "POST", f"/workspaces/{workspace}/channels", owner, {
            "type": "whatsapp", "phone_number_id": "106540352242922", "access_token": "EAAG" + "x" * 20,
            "app_secret": "sentry-app-secret", "verify_token": "verify-token-1"}))

        def post(raw: bytes) -> int:
            signature = "sha256=" + hmac.new(b"sentry-app-secret", raw, hashlib.sha256).hexdigest()
            return int(client.http.post(f"/webhooks/whatsapp/{channel['id']}", body=raw, headers={
                "Content-Type": "application/json", "X-Hub-Signature-256": signature}).status_code)

        good = {"from": NUMBER, "id": "wamid.S1", "timestamp": "1764230000", "type": "text", "text": {"body": TEXT}}
        # A sender that is no valid number: processing raises (and logs an error, which Sentry captures).
        bad = {"from": NUMBER + "9999999", "id": "wamid.S2", "timestamp": "1764230000", "type": "text",
               "text": {"body": TEXT}}
        statuses = [post(whatsapp_delivery("106540352242922", messages=[good])),
                    post(whatsapp_delivery("106540352242922", messages=[bad]))]
        queue.drain()
        use_database(Database("host=/nonexistent dbname=none", timeout=0.3), "app")
        statuses.append(post(whatsapp_delivery("106540352242922", messages=[{**good, "id": "wamid.S3"}])))
    report(statuses=statuses)


def test_sentry_events_of_inbox_failures_hold_no_message_text_or_number(fresh_db: TestDatabase,
                                                                          tmp_path: Path) -> None:
    captured = run_child(__name__, "run_inbox_sentry_scenario",
                         {"INBOX_SENTRY_APP_URL": fresh_db.app_url, "DATA_DIR": str(tmp_path)})
    assert captured["statuses"][:2] == [200, 200]
    assert captured["statuses"][2] >= 500
    assert captured["events"], "no Sentry event was captured: the sweep would prove nothing"
    text = "\n".join(captured["envelopes"])
    assert TEXT not in text, "message text reached Sentry"
    assert NUMBER not in text, "the phone number reached Sentry"
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)
