"""O01/O02 for signing and payment: a proposal sent through SignNow whose signed copy cannot be fetched (the worker
fails, with the SignNow token, the hook secret and the signer within reach of its frames); the Sentry envelopes
hold no token, key, secret, signer address or proposal text.

Runs in a child process: Sentry's integrations patch the interpreter for good.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import TestDatabase
from tests.sentry_harness import run_child

SIGNER = "canary-signer-4d1e@example.test"
TITLE = "Canary proposal 7b3f90"
TOKEN = "sn-canary-token-" + "a1" * 12
STRIPE_KEY = "sk_test_canary" + "b2" * 10
WHSEC = "whsec_canary" + "c3" * 10


def run_signing_sentry_scenario() -> None:
    """The child: Sentry with a capturing transport, the fake providers, a send, a failing download and Stripe."""
    from chalice.test import Client

    from tests.sentry_harness import capture, report

    capture()
    import app as app_module
    from chalicelib.db.pool import Database, use_database
    from chalicelib.inbox.ingest import get_queue
    from chalicelib.settings import get_settings
    from tests.api.auth_helpers import Outbox, body_of, call, create_workspace, sign_in
    from tests.fakes.providers import start

    fake = start()
    os.environ.update(SIGNNOW_BASE_URL=fake.base + "/signnow", STRIPE_API_BASE=fake.base + "/stripe",
                      OUTBOUND_ALLOW_HOSTS=fake.host)
    get_settings.cache_clear()
    use_database(Database(os.environ["SIGNING_SENTRY_APP_URL"], size=1), "app")
    box = Outbox(Path(os.environ["DATA_DIR"]) / "outbox")
    with Client(app_module.app) as client:
        owner = sign_in(client, "signing-sentry@example.test", box)
        base = f"/workspaces/{create_workspace(client, owner)['id']}"

        def post(path: str, body: object, method: str = "POST") -> dict[str, object]:
            response = call(client, method, base + path, owner, body)
            assert response.status_code in (200, 201, 502), (path, response.status_code, response.body)
            return dict(body_of(response))

        post("/integrations/signnow", {"api_token": TOKEN, "sender_email": "sales@example.test"}, "PUT")
        post("/integrations/stripe", {"secret_key": STRIPE_KEY, "webhook_secret": WHSEC}, "PUT")
        contact = post("/contacts", {"first_name": "Canary", "email": SIGNER})
        lead = post("/leads", {"title": TITLE, "contact_id": contact["id"]})
        proposal = post(f"/leads/{lead['id']}/proposals", {
            "title": TITLE, "valid_until": "2031-01-31", "currency": "EUR",
            "line_items": [{"description": TITLE, "quantity": 1, "unit_amount_minor": 1000}]})
        sent = post(f"/proposals/{proposal['id']}/send", {})
        document = fake.documents[str(sent["signnow_document_id"])]
        fake.fail["download"] = 500
        url, raw, headers = fake.signnow_callback(document.id)
        assert client.http.post(urlsplit(url).path, body=raw, headers=headers).status_code == 200
        get_queue().drain()  # the worker fails to fetch the signed copy: logged as an error, which Sentry takes
        hook_secret = document.subscriptions[0]["secret"]
    report(hook_secret=hook_secret)


def test_sentry_events_of_signing_failures_hold_no_token_key_secret_or_signer(fresh_db: TestDatabase,
                                                                              tmp_path: Path) -> None:
    captured = run_child(__name__, "run_signing_sentry_scenario",
                         {"SIGNING_SENTRY_APP_URL": fresh_db.app_url, "DATA_DIR": str(tmp_path)})
    assert captured["events"], "no Sentry event was captured: the scenario would prove nothing"
    text = "\n".join(captured["envelopes"])
    assert "SignNowApiError" in text  # the failure itself is reported, by its class
    for canary in (TOKEN, STRIPE_KEY, WHSEC, WHSEC[6:], captured["hook_secret"], SIGNER, TITLE):
        assert canary not in text, f"{canary[:12]}… reached Sentry"
