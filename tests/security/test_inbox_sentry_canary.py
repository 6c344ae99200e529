"""O01/O02 for the inbox: deliveries with a canary text and number, one of which fails in processing, and a
webhook that fails on a dead database; the Sentry envelopes hold neither the text nor the number.

Runs in a child process: Sentry's integrations patch the interpreter for good.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import TestDatabase

ROOT = Path(__file__).resolve().parents[2]
FAKE_DSN = "https://public@sentry.invalid/1"
TEXT = "canary inbox text 7f3a9c"
NUMBER = "14155550187"


def run_inbox_sentry_scenario() -> None:
    """The child: Sentry with a capturing transport, a channel, deliveries, a failure, a dead database."""
    import sentry_sdk
    from chalice.test import Client
    from sentry_sdk.envelope import Envelope
    from sentry_sdk.transport import Transport

    from chalicelib.db.pool import Database, use_database
    from chalicelib.inbox.ingest import use_queue
    from chalicelib.inbox.processing import process_event
    from chalicelib.inbox.queue import LocalQueue
    from chalicelib.observability import init_sentry

    class CapturingTransport(Transport):
        def __init__(self) -> None:
            super().__init__()
            self.envelopes: list[Envelope] = []

        def capture_envelope(self, envelope: Envelope) -> None:
            self.envelopes.append(envelope)

    transport = CapturingTransport()
    assert init_sentry(FAKE_DSN, environment="test", release="test", transport=transport)
    import app as app_module
    from tests.api.auth_helpers import Outbox, body_of, call, create_workspace, sign_in
    from tests.api.test_inbox_whatsapp import _delivery

    use_database(Database(os.environ["INBOX_SENTRY_APP_URL"], size=1), "app")
    queue = LocalQueue(process_event)
    use_queue(queue)
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
        statuses = [post(_delivery("106540352242922", messages=[good])),
                    post(_delivery("106540352242922", messages=[bad]))]
        queue.drain()
        use_database(Database("host=/nonexistent dbname=none", timeout=0.3), "app")
        statuses.append(post(_delivery("106540352242922", messages=[{**good, "id": "wamid.S3"}])))
    sentry_sdk.flush()
    print(json.dumps({
        "statuses": statuses,
        "envelopes": [env.serialize().decode("utf-8", "replace") for env in transport.envelopes],
        "events": [e for e in (env.get_event() for env in transport.envelopes) if e is not None],
    }))
    sentry_sdk.get_client().close()


def test_sentry_events_of_inbox_failures_hold_no_message_text_or_number(fresh_db: TestDatabase,
                                                                          tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SENTRY_DSN", "DATABASE_URL")}
    env.update({"PYTHONPATH": str(ROOT), "INBOX_SENTRY_APP_URL": fresh_db.app_url, "DATA_DIR": str(tmp_path),
                "STAGE": "local"})
    code = f"from {__name__} import run_inbox_sentry_scenario; run_inbox_sentry_scenario()"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    captured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert captured["statuses"][:2] == [200, 200]
    assert captured["statuses"][2] >= 500
    assert captured["events"], "no Sentry event was captured: the sweep would prove nothing"
    text = "\n".join(captured["envelopes"])
    assert TEXT not in text, "message text reached Sentry"
    assert NUMBER not in text, "the phone number reached Sentry"
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)
