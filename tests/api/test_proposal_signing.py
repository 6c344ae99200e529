"""A proposal from draft to paid: sent through SignNow, signed by its callback, paid through Stripe Checkout, its
lead won, against the fake providers (tests/fakes/providers.py). Every callback signature-checked: missing, bad,
another's, stale and replayed deliveries refused or without effect; isolation across workspaces; exactly once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe
from chalice.test import Client

from chalicelib.inbox.processing import process_event
from chalicelib.inbox.queue import LocalQueue
from chalicelib.observability import configure_logging
from chalicelib.proposals import signing
from chalicelib.vault.store import get_vault
from tests.api.auth_helpers import Outbox, body_of, problem, real_environ
from tests.api.crm_helpers import Workspace, new_workspace
from tests.api.download_helpers import follow
from tests.api.test_proposals import PDF, PRO, a_lead, draft
from tests.conftest import TestDatabase
from tests.fakes.providers import SIGNED_MARK, FakeProviders, start, stop

SIGNNOW = {"api_token": "sn-token-" + uuid.uuid4().hex, "sender_email": "sales@alice.example.test"}


@pytest.fixture
def fake(env: Callable[..., None]) -> Iterator[FakeProviders]:
    providers = start()
    env(signnow_base_url=providers.base + "/signnow", stripe_api_base=providers.base + "/stripe",
        outbound_allow_hosts=providers.host)
    yield providers
    stop(providers)


def whsec() -> str:
    return "whsec_" + uuid.uuid4().hex


def connect(ws: Workspace, *, signnow: bool = True, stripe_secret: str | None = None) -> None:
    if signnow:
        assert ws.call("PUT", "/integrations/signnow", SIGNNOW).status_code == 200
    if stripe_secret is not None:
        response = ws.call("PUT", "/integrations/stripe", {"secret_key": "sk_test_" + uuid.uuid4().hex,
                                                           "webhook_secret": stripe_secret})
        assert response.status_code == 200, response.body


def a_draft(ws: Workspace, email: str = "grace@example.test") -> dict[str, Any]:
    product = ws.create("/products", {**PRO, "sku": f"PRO-{uuid.uuid4().hex[:6]}"})
    response = draft(ws, a_lead(ws, email), [{"product_id": product["id"], "quantity": 2}])
    assert response.status_code == 201, response.body
    return dict(body_of(response))


def sent(ws: Workspace, fake: FakeProviders, **body: Any) -> dict[str, Any]:
    proposal = a_draft(ws, f"signer-{uuid.uuid4().hex[:8]}@example.test")
    response = ws.post(f"/proposals/{proposal['id']}/send", body)
    assert response.status_code == 200, response.body
    return dict(body_of(response))


def post_signnow(api: Client, callback_url: str, raw: bytes, headers: dict[str, str]) -> Any:
    return api.http.post(urlsplit(callback_url).path, body=raw, headers=headers)


def sign(api: Client, fake: FakeProviders, worker: LocalQueue, document_id: str, **options: Any) -> Any:
    url, raw, headers = fake.signnow_callback(document_id, **options)
    response = post_signnow(api, url, raw, headers)
    worker.drain()
    return response


def post_stripe(api: Client, ws: Workspace, raw: bytes, headers: dict[str, str]) -> Any:
    return api.http.post(f"/webhooks/stripe/{ws.id}", body=raw, headers=headers)


def count_events(db: TestDatabase, provider: str) -> int:
    with db.admin() as conn:
        return int(conn.execute("SELECT count(*) FROM inbound_events WHERE provider = %s", (provider,)).fetchone()[0])


def audited(db: TestDatabase, ws: Workspace, target: str) -> list[str]:
    with db.admin() as conn:
        return [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE tenant_id = %s AND target_id = %s"
                                           " ORDER BY action", (ws.id, target)).fetchall()]


# ---- the whole way ----


def test_a_proposal_goes_from_draft_to_signed_to_paid_and_its_lead_is_won(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    secret = whsec()
    connect(ws, stripe_secret=secret)
    proposal = a_draft(ws)
    pid = proposal["id"]
    drafted_pdf = ws.get(f"/proposals/{pid}/pdf", PDF).body

    response = ws.post(f"/proposals/{pid}/send", {})
    assert response.status_code == 200, response.body
    out = body_of(response)
    assert out["status"] == "sent" and out["signer_email"] == "grace@example.test" and out["sent_at"]
    (document,) = fake.documents.values()
    assert out["signnow_document_id"] == document.id
    # The frozen PDF is what SignNow got, its digest recorded, and served as stored from now on.
    assert document.pdf == drafted_pdf and out["pdf_sha256"] == hashlib.sha256(document.pdf).hexdigest()
    assert ws.get(f"/proposals/{pid}/pdf", PDF).body == document.pdf
    (invite,) = document.invites
    assert (invite["to"], invite["from"]) == ("grace@example.test", SIGNNOW["sender_email"])
    assert sorted(s["event"] for s in document.subscriptions) == ["document.complete", "document.freeform.signed"]
    assert all(s["callback"].endswith(f"/webhooks/signnow/{document.subscriptions[0]['callback'].rsplit('/', 1)[1]}")
               for s in document.subscriptions)
    assert all(auth == f"Bearer {SIGNNOW['api_token']}" for _m, path, auth in fake.requests if "/signnow/" in path)
    # The subscription's secret is at rest only as the vault's ciphertext (the policy's envelope encryption).
    with fresh_db.admin() as conn:
        (stored,) = conn.execute("SELECT signnow_hook_secret FROM proposals WHERE id = %s", (pid,)).fetchone()
    hook_secret = document.subscriptions[0]["secret"].encode()
    hook = uuid.UUID(document.subscriptions[0]["callback"].rsplit("/", 1)[1])
    assert len(hook_secret) >= 40 and hook_secret not in bytes(stored)
    assert get_vault().decrypt(bytes(stored), signing.hook_context(uuid.UUID(ws.id), hook)).plaintext == hook_secret

    assert sign(api, fake, worker, document.id).status_code == 200
    signed = body_of(ws.get(f"/proposals/{pid}"))
    assert signed["status"] == "signed" and signed["signed_at"]
    link = body_of(ws.get(f"/proposals/{pid}/signed-pdf"))
    copy = follow(api, link["url"]).body
    assert copy == document.pdf + SIGNED_MARK and signed["signed_pdf_sha256"] == hashlib.sha256(copy).hexdigest()
    assert link["sha256"] == signed["signed_pdf_sha256"]
    session = fake.session_for(pid)
    assert signed["checkout_url"] == session["url"]
    assert (session["amount_total"], session["currency"]) == (proposal["totals"]["total_minor"], "eur")
    assert session["metadata"] == {"workspace_id": ws.id, "proposal_id": pid}

    raw, headers = fake.stripe_event(session["id"], secret)
    assert post_stripe(api, ws, raw, headers).status_code == 200
    worker.drain()
    paid = body_of(ws.get(f"/proposals/{pid}"))
    assert paid["status"] == "paid" and paid["paid_at"]
    lead = body_of(ws.get(f"/leads/{proposal['lead_id']}"))
    assert lead["status"] == "won"
    history = body_of(ws.get(f"/leads/{proposal['lead_id']}/stage-history"))["data"]
    assert history[-1]["to_stage_id"] == lead["stage_id"] and history[-1]["actor_user_id"] is None
    statuses = body_of(ws.get(f"/proposals/{pid}/history"))["data"]
    assert [(s["from_status"], s["to_status"]) for s in statuses] == [
        (None, "draft"), ("draft", "sent"), ("sent", "signed"), ("signed", "paid")]
    assert statuses[1]["actor_user_id"] == ws.user_id and statuses[2]["actor_user_id"] is None
    actions = sorted(["proposal.created", "proposal.sent", "proposal.signed", "proposal.payment_link", "proposal.paid"])
    assert audited(fresh_db, ws, pid) == actions

    # Stripe redelivers, and sends the delayed-payment event too: nothing moves a second time.
    assert post_stripe(api, ws, raw, headers).status_code == 200
    again, again_headers = fake.stripe_event(session["id"], secret, kind="checkout.session.async_payment_succeeded")
    assert post_stripe(api, ws, again, again_headers).status_code == 200
    worker.drain()
    assert len(body_of(ws.get(f"/proposals/{pid}/history"))["data"]) == 4
    assert len(body_of(ws.get(f"/leads/{proposal['lead_id']}/stage-history"))["data"]) == len(history)
    assert count_events(fresh_db, "stripe") == 2  # the redelivery stored nothing
    assert audited(fresh_db, ws, pid) == actions and body_of(ws.get(f"/leads/{proposal['lead_id']}")) == lead


def test_an_atlas_draft_goes_out_the_same_way(api: Client, ws: Workspace, fake: FakeProviders,
                                              worker: LocalQueue) -> None:
    connect(ws)
    ws.create("/products", PRO)
    lead = a_lead(ws)
    ws.create("/notes", {"lead_id": lead, "body": "They want PRO-1 x 3"})
    assert ws.call("PATCH", "", {"atlas_enabled": True}).status_code == 200
    drafted = ws.post(f"/leads/{lead}/proposals/draft", {})
    assert drafted.status_code == 201, drafted.body
    pid = body_of(drafted)["id"]
    assert ws.post(f"/proposals/{pid}/send", {"signer_email": "cfo@example.test"}).status_code == 200
    (document,) = fake.documents.values()
    assert document.invites[0]["to"] == "cfo@example.test"
    assert sign(api, fake, worker, document.id, event="document.freeform.signed").status_code == 200
    assert body_of(ws.get(f"/proposals/{pid}"))["status"] == "signed"  # no Stripe: no payment link
    assert body_of(ws.get(f"/proposals/{pid}"))["checkout_url"] is None


# ---- sending ----


def test_sending_needs_signnow_a_signer_and_a_draft(ws: Workspace, fake: FakeProviders) -> None:
    proposal = a_draft(ws)
    body = problem(ws.post(f"/proposals/{proposal['id']}/send", {}), 409)
    assert "SignNow" in body["detail"]
    connect(ws)
    no_contact = ws.create("/leads", {"title": "No contact"})["id"]
    no_email = draft(ws, no_contact, [{"description": "x", "quantity": 1, "unit_amount_minor": 100}])
    assert "signer_email" in str(problem(ws.post(f"/proposals/{body_of(no_email)['id']}/send", {}), 422))
    assert ws.post(f"/proposals/{proposal['id']}/send", {}).status_code == 200
    problem(ws.post(f"/proposals/{proposal['id']}/send", {}), 409)  # sent already
    problem(ws.patch(f"/proposals/{proposal['id']}", {"title": "Changed"}), 409)  # frozen
    assert "signer_email" in str(problem(ws.post(f"/proposals/{proposal['id']}/send", {"signer_email": "nope"}), 400))


def test_a_signnow_account_without_its_login_email_cannot_invite(ws: Workspace, fake: FakeProviders) -> None:
    assert ws.call("PUT", "/integrations/signnow", {"api_token": SIGNNOW["api_token"]}).status_code == 200
    proposal = a_draft(ws)
    assert "sender_email" in problem(ws.post(f"/proposals/{proposal['id']}/send", {}), 409)["detail"]
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "draft"
    assert fake.documents == {} and fake.requests == []  # checked before anything reached SignNow


@pytest.mark.parametrize("call", ["upload", "subscribe", "invite"])
def test_a_signnow_failure_is_a_502_and_nothing_is_recorded(ws: Workspace, fake: FakeProviders, call: str) -> None:
    connect(ws)
    proposal = a_draft(ws)
    fake.fail[call] = 500
    problem(ws.post(f"/proposals/{proposal['id']}/send", {}), 502)
    after = body_of(ws.get(f"/proposals/{proposal['id']}"))
    assert (after["status"], after["pdf_sha256"], after["signnow_document_id"]) == ("draft", None, None)
    assert len(body_of(ws.get(f"/proposals/{proposal['id']}/history"))["data"]) == 1
    assert all(not d.invites for d in fake.documents.values())  # the invite goes last: nobody was asked to sign
    del fake.fail[call]
    assert ws.post(f"/proposals/{proposal['id']}/send", {}).status_code == 200


# ---- SignNow's callbacks ----


def test_signnow_callbacks_are_refused_unless_signed_by_their_subscription(
        api: Client, ws: Workspace, other: Workspace, fake: FakeProviders, worker: LocalQueue,
        fresh_db: TestDatabase) -> None:
    connect(ws)
    connect(other)
    mine = sent(ws, fake)
    theirs = sent(other, fake)
    url, raw, headers = fake.signnow_callback(mine["signnow_document_id"])
    their_url, their_raw, their_headers = fake.signnow_callback(theirs["signnow_document_id"])
    bare = {"Content-Type": "application/json"}
    problem(post_signnow(api, url, raw, bare), 401)  # missing
    problem(post_signnow(api, url, raw, {**bare, "X-SignNow-Signature": base64.b64encode(b"x" * 32).decode()}), 401)
    problem(post_signnow(api, url, raw + b" ", headers), 401)  # the body changed after signing
    problem(post_signnow(api, url, their_raw, their_headers), 401)  # signed with another subscription's secret
    # Their genuine delivery, replayed to our hook: the signature is theirs, and so is the document.
    problem(post_signnow(api, url.rsplit("/", 1)[0] + "/" + str(uuid.uuid4()), raw, headers), 404)
    problem(post_signnow(api, url.rsplit("/", 1)[0] + "/not-a-uuid", raw, headers), 404)
    problem(post_signnow(api, url, raw, {**headers, "Content-Type": "text/plain"}), 415)
    worker.drain()
    assert body_of(ws.get(f"/proposals/{mine['id']}"))["status"] == "sent"
    assert count_events(fresh_db, "signnow") == 0
    # The genuine one; its replay stores nothing new, and theirs to their own hook signs only theirs.
    assert post_signnow(api, url, raw, headers).status_code == 200
    assert post_signnow(api, url, raw, headers).status_code == 200
    worker.drain()
    assert count_events(fresh_db, "signnow") == 1 and body_of(ws.get(f"/proposals/{mine['id']}"))["status"] == "signed"
    assert body_of(other.get(f"/proposals/{theirs['id']}"))["status"] == "sent"
    assert post_signnow(api, their_url, their_raw, their_headers).status_code == 200
    worker.drain()
    assert body_of(other.get(f"/proposals/{theirs['id']}"))["status"] == "signed"
    downloads = [path for method, path, _auth in fake.requests if method == "GET"]
    assert len(downloads) == 2  # one signed copy fetched per document


@pytest.mark.parametrize("age", [86_401 + 60, -(300 + 60)])
def test_a_stale_or_future_signnow_callback_is_refused(api: Client, ws: Workspace, fake: FakeProviders,
                                                       worker: LocalQueue, age: int) -> None:
    connect(ws)
    proposal = sent(ws, fake)
    url, raw, headers = fake.signnow_callback(proposal["signnow_document_id"], timestamp=int(time.time()) - age)
    problem(post_signnow(api, url, raw, headers), 401)
    worker.drain()
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "sent"


def test_a_signnow_callback_for_another_document_or_event_changes_nothing(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue) -> None:
    connect(ws)
    proposal = sent(ws, fake)
    url, raw, _headers = fake.signnow_callback(proposal["signnow_document_id"])
    secret = fake.documents[proposal["signnow_document_id"]].subscriptions[0]["secret"]

    def signed(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        data = json.dumps(body).encode()
        mac = base64.b64encode(hmac.new(secret.encode(), data, hashlib.sha256).digest()).decode()
        return data, {"Content-Type": "application/json", "X-SignNow-Signature": mac}

    event = json.loads(raw)
    problem(post_signnow(api, url, *signed({**event, "content": {**event["content"], "document_id": "f" * 40}})), 401)
    assert post_signnow(api, url, *signed({**event, "meta": {**event["meta"], "event": "document.update"}})
                        ).status_code == 200  # acknowledged, dropped
    problem(post_signnow(api, url, *signed({"meta": "x"})), 400)
    # Hex, as some integrations send it, is the same MAC.
    data, headers = signed(event)
    hexed = hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    worker.drain()
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "sent"
    assert post_signnow(api, url, data, {**headers, "X-SignNow-Signature": hexed}).status_code == 200
    worker.drain()
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "signed"


def test_a_voided_proposal_is_not_signed_by_a_late_callback(api: Client, ws: Workspace, fake: FakeProviders,
                                                           worker: LocalQueue, fresh_db: TestDatabase) -> None:
    connect(ws)
    proposal = sent(ws, fake)
    assert ws.post(f"/proposals/{proposal['id']}/void", {}).status_code == 200
    assert sign(api, fake, worker, proposal["signnow_document_id"]).status_code == 200
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "void"
    problem(ws.get(f"/proposals/{proposal['id']}/signed-pdf"), 404)
    assert not any(method == "GET" for method, _path, _auth in fake.requests)  # the late copy was never fetched
    with fresh_db.admin() as conn:
        (late,) = conn.execute("SELECT details FROM audit_log WHERE target_id = %s AND action = 'proposal.signed_late'",
                               (proposal["id"],)).fetchone()
    assert late == {"status": "void"}


# ---- Stripe ----


def signed_proposal(api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue) -> dict[str, Any]:
    proposal = sent(ws, fake)
    assert sign(api, fake, worker, proposal["signnow_document_id"]).status_code == 200
    return dict(body_of(ws.get(f"/proposals/{proposal['id']}")))


def test_stripe_events_signed_by_the_stripe_package_are_accepted_and_others_refused(
        api: Client, ws: Workspace, other: Workspace, fake: FakeProviders, worker: LocalQueue,
        fresh_db: TestDatabase) -> None:
    secret, theirs = whsec(), whsec()
    connect(ws, stripe_secret=secret)
    connect(other, stripe_secret=theirs)
    proposal = signed_proposal(api, ws, fake, worker)
    session = fake.session_for(proposal["id"])
    raw, _ = fake.stripe_event(session["id"], secret)
    text = raw.decode()
    now = int(time.time())

    def header(stamp: int, key: str = secret) -> dict[str, str]:
        # The stripe package's own signer: an independent check of our verification.
        return {"Content-Type": "application/json",
                "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(text, key, timestamp=stamp)}

    problem(post_stripe(api, ws, raw, {"Content-Type": "application/json"}), 401)  # missing
    problem(post_stripe(api, ws, raw, header(now, theirs)), 401)  # another workspace's secret
    problem(post_stripe(api, ws, raw, header(now - 301)), 401)  # 301 s old
    problem(post_stripe(api, ws, raw, header(now + 301)), 401)  # 301 s ahead
    # Their URL and secret, our session: genuine, but not theirs to take (acknowledged, dropped, not retried).
    assert post_stripe(api, other, raw, header(now, theirs)).status_code == 200
    problem(post_stripe(api, ws, raw + b"\n", header(now)), 401)
    bad_v1 = header(now)["Stripe-Signature"].replace("v1=", "v1=" + "0" * 64 + ",v1=")  # several v1, one good
    worker.drain()
    assert count_events(fresh_db, "stripe") == 0
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "signed"
    assert post_stripe(api, ws, raw, {"Content-Type": "application/json", "Stripe-Signature": bad_v1}
                       ).status_code == 200
    worker.drain()
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "paid"
    # And the stripe package accepts what we sign in the fake (the same scheme both ways).
    fake_raw, fake_headers = fake.stripe_event(session["id"], secret)
    assert stripe.Webhook.construct_event(fake_raw, fake_headers["Stripe-Signature"], secret).type == (
        "checkout.session.completed")


def test_stripe_without_a_signing_secret_refuses_every_event(api: Client, ws: Workspace, fake: FakeProviders) -> None:
    assert ws.call("PUT", "/integrations/stripe", {"secret_key": "sk_test_" + uuid.uuid4().hex}).status_code == 200
    raw = json.dumps({"id": "evt_1", "type": "checkout.session.completed", "data": {"object": {}}}).encode()
    text = raw.decode()
    problem(post_stripe(api, ws, raw, {"Content-Type": "application/json", "Stripe-Signature":
                                       stripe.WebhookSignature.generate_signature_header(text, whsec())}), 401)
    problem(api.http.post("/webhooks/stripe/not-a-workspace", body=raw,
                          headers={"Content-Type": "application/json"}), 404)


def test_a_delayed_payment_pays_when_it_succeeds_not_when_checkout_completes(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue) -> None:
    secret = whsec()
    connect(ws, stripe_secret=secret)
    proposal = signed_proposal(api, ws, fake, worker)
    session = fake.session_for(proposal["id"])
    for kind, status, expected in (("checkout.session.completed", "unpaid", "signed"),
                                   ("checkout.session.async_payment_succeeded", "paid", "paid")):
        raw, headers = fake.stripe_event(session["id"], secret, kind=kind, payment_status=status)
        assert post_stripe(api, ws, raw, headers).status_code == 200
        worker.drain()
        assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == expected


def test_a_payment_of_another_amount_or_for_a_voided_proposal_moves_nothing(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    secret = whsec()
    connect(ws, stripe_secret=secret)
    proposal = signed_proposal(api, ws, fake, worker)
    session = fake.session_for(proposal["id"])
    session["amount_total"] -= 1
    raw, headers = fake.stripe_event(session["id"], secret)
    assert post_stripe(api, ws, raw, headers).status_code == 200
    worker.drain()
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "signed"
    session["amount_total"] += 1
    session["currency"] = "usd"
    raw, headers = fake.stripe_event(session["id"], secret)
    assert post_stripe(api, ws, raw, headers).status_code == 200
    worker.drain()
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "signed"
    session["currency"] = "eur"
    assert ws.post(f"/proposals/{proposal['id']}/void", {}).status_code == 200
    assert "proposal.payment_link_open" in audited(fresh_db, ws, proposal["id"])  # used: Stripe cannot close it
    raw, headers = fake.stripe_event(session["id"], secret)
    assert post_stripe(api, ws, raw, headers).status_code == 200
    worker.drain()
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "void"
    assert body_of(ws.get(f"/leads/{proposal['lead_id']}"))["status"] == "open"
    with fresh_db.admin() as conn:
        actions = {r[0] for r in conn.execute("SELECT action FROM audit_log WHERE target_id = %s",
                                              (proposal["id"],)).fetchall()}
    assert {"proposal.payment_mismatch", "proposal.payment_unexpected"} <= actions


def test_a_payment_link_is_only_for_a_signed_proposal_of_a_workspace_with_stripe(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue) -> None:
    connect(ws)
    proposal = sent(ws, fake)
    problem(ws.post(f"/proposals/{proposal['id']}/payment-link", {}), 409)  # not signed yet
    assert sign(api, fake, worker, proposal["signnow_document_id"]).status_code == 200
    assert "Stripe" in problem(ws.post(f"/proposals/{proposal['id']}/payment-link", {}), 409)["detail"]
    connect(ws, signnow=False, stripe_secret=whsec())
    first = ws.post(f"/proposals/{proposal['id']}/payment-link", {}, {"Idempotency-Key": "link-1"})
    assert first.status_code == 200, first.body
    replay = ws.post(f"/proposals/{proposal['id']}/payment-link", {}, {"Idempotency-Key": "link-1"})
    assert body_of(replay)["checkout_url"] == body_of(first)["checkout_url"] and len(fake.sessions) == 1
    second = body_of(ws.post(f"/proposals/{proposal['id']}/payment-link", {}))
    assert second["checkout_url"] != body_of(first)["checkout_url"] and len(fake.sessions) == 2
    # The link before is closed: only the latest can take the money.
    assert [s["status"] for s in fake.sessions.values()] == ["expired", "open"]
    fake.fail["checkout"] = 500
    problem(ws.post(f"/proposals/{proposal['id']}/payment-link", {}), 502)


def test_payment_complete_is_a_static_page(api: Client) -> None:
    response = api.http.get("/payments/complete")
    assert response.status_code == 200 and "Thank you" in response.body.decode()
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


# ---- isolation and logs ----


def test_another_workspace_cannot_reach_a_proposal_s_signing_routes(
        api: Client, ws: Workspace, other: Workspace, fake: FakeProviders, worker: LocalQueue) -> None:
    connect(ws)
    connect(other, stripe_secret=whsec())
    proposal = signed_proposal(api, ws, fake, worker)
    for method, path, body in (("POST", "/send", {}), ("POST", "/payment-link", {}), ("GET", "/history", None),
                               ("GET", "/signed-pdf", None)):
        problem(other.call(method, f"/proposals/{proposal['id']}{path}", body), 404)
    assert len(fake.sessions) == 0


def test_signing_never_logs_the_signer_the_title_or_the_secrets(api: Client, outbox: Outbox, fake: FakeProviders,
                                                                 worker: LocalQueue) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        ws = new_workspace(api, outbox, "canary")
        secret = whsec()
        connect(ws, stripe_secret=secret)
        product = ws.create("/products", {**PRO, "name": "Zyxcanary plan"})
        lead = a_lead(ws, "zyxcanary@example.test")
        proposal = body_of(draft(ws, lead, [{"product_id": product["id"], "quantity": 1}], title="Zyxcanary deal"))
        assert ws.post(f"/proposals/{proposal['id']}/send", {"message": "zyxcanary message"}).status_code == 200
        document = next(iter(fake.documents.values()))
        assert sign(api, fake, worker, document.id).status_code == 200
        raw, headers = fake.stripe_event(fake.session_for(proposal["id"])["id"], secret)
        assert post_stripe(api, ws, raw, headers).status_code == 200
        worker.drain()
        assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "paid"
    finally:
        configure_logging("INFO")
    logged = stream.getvalue()
    assert "zyxcanary" not in logged.lower()
    for value in (SIGNNOW["api_token"], secret, document.subscriptions[0]["secret"]):
        assert value not in logged


def test_a_second_session_paying_a_paid_proposal_is_audited_and_moves_nothing(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    secret = whsec()
    connect(ws, stripe_secret=secret)
    proposal = signed_proposal(api, ws, fake, worker)
    first = fake.session_for(proposal["id"])["id"]
    second = body_of(ws.post(f"/proposals/{proposal['id']}/payment-link", {}))["checkout_url"].rsplit("/", 1)[1]
    for session in (second, first):  # the first was paid at the moment it was being closed
        raw, headers = fake.stripe_event(session, secret)
        assert post_stripe(api, ws, raw, headers).status_code == 200
        worker.drain()
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "paid"
    assert audited(fresh_db, ws, proposal["id"]).count("proposal.paid") == 1
    assert "proposal.payment_duplicate" in audited(fresh_db, ws, proposal["id"])
    # A link cannot replace one that was used: its money may be on its way.
    with fresh_db.admin() as conn:
        conn.execute("UPDATE proposals SET status = 'signed' WHERE id = %s", (proposal["id"],))
    assert "used" in problem(ws.post(f"/proposals/{proposal['id']}/payment-link", {}), 409)["detail"]


def test_another_sale_on_the_same_stripe_account_is_acknowledged_and_dropped(
        api: Client, ws: Workspace, fake: FakeProviders, fresh_db: TestDatabase) -> None:
    secret = whsec()
    connect(ws, stripe_secret=secret)
    fake.sessions["cs_test_shop"] = {"id": "cs_test_shop", "object": "checkout.session", "client_reference_id": None,
                                     "metadata": {}, "amount_total": 500, "currency": "eur", "status": "open",
                                     "payment_status": "unpaid"}
    raw, headers = fake.stripe_event("cs_test_shop", secret)
    assert post_stripe(api, ws, raw, headers).status_code == 200
    raw, headers = fake.stripe_event("cs_test_shop", secret, kind="customer.created")
    assert post_stripe(api, ws, raw, headers).status_code == 200
    assert count_events(fresh_db, "stripe") == 0


def test_a_stripe_failure_at_signing_leaves_it_signed_and_a_link_can_be_made_later(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue) -> None:
    connect(ws, stripe_secret=whsec())
    proposal = sent(ws, fake)
    fake.fail["checkout"] = 503
    assert sign(api, fake, worker, proposal["signnow_document_id"]).status_code == 200
    signed = body_of(ws.get(f"/proposals/{proposal['id']}"))
    assert (signed["status"], signed["checkout_url"]) == ("signed", None)
    del fake.fail["checkout"]
    assert body_of(ws.post(f"/proposals/{proposal['id']}/payment-link", {}))["checkout_url"].startswith("https://")


def test_a_failed_download_is_retried_and_signs_once(api: Client, ws: Workspace, fake: FakeProviders,
                                                     worker: LocalQueue, fresh_db: TestDatabase) -> None:
    connect(ws)
    proposal = sent(ws, fake)
    fake.fail["download"] = 500
    assert sign(api, fake, worker, proposal["signnow_document_id"]).status_code == 200
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "sent"
    with fresh_db.admin() as conn:
        event, attempts = conn.execute("SELECT id, attempts FROM inbound_events WHERE provider = 'signnow'").fetchone()
    assert attempts == 1
    del fake.fail["download"]
    process_event(uuid.UUID(ws.id), event)  # as the queue redelivers it
    process_event(uuid.UUID(ws.id), event)  # and once more: processed already
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "signed"
    assert len(body_of(ws.get(f"/proposals/{proposal['id']}/history"))["data"]) == 3
    assert sum(method == "GET" for method, _path, _auth in fake.requests) == 2


def test_a_lead_won_already_is_not_moved_again(api: Client, ws: Workspace, fake: FakeProviders,
                                               worker: LocalQueue, fresh_db: TestDatabase) -> None:
    secret = whsec()
    connect(ws, stripe_secret=secret)
    proposal = signed_proposal(api, ws, fake, worker)
    lead = body_of(ws.get(f"/leads/{proposal['lead_id']}"))
    stages = body_of(ws.get(f"/pipelines/{lead['pipeline_id']}"))["stages"]
    won = next(stage["id"] for stage in stages if stage["kind"] == "won")
    assert ws.patch(f"/leads/{lead['id']}", {"stage_id": won}).status_code == 200
    moves = len(body_of(ws.get(f"/leads/{lead['id']}/stage-history"))["data"])
    raw, headers = fake.stripe_event(fake.session_for(proposal["id"])["id"], secret)
    assert post_stripe(api, ws, raw, headers).status_code == 200
    worker.drain()
    assert body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "paid"
    assert len(body_of(ws.get(f"/leads/{lead['id']}/stage-history"))["data"]) == moves
    with fresh_db.admin() as conn:
        (details,) = conn.execute("SELECT details FROM audit_log WHERE target_id = %s AND action = 'proposal.paid'",
                                  (proposal["id"],)).fetchone()
    assert details["lead_won"] is False


def test_hostile_signature_headers_are_401_never_500(api: Client, ws: Workspace, fake: FakeProviders) -> None:
    connect(ws, stripe_secret=whsec())
    proposal = sent(ws, fake)
    url, raw, headers = fake.signnow_callback(proposal["signnow_document_id"])
    for value in ("t=1,v1=é", "t=é,v1=00", "v1=", "t=" + "9" * 40 + ",v1=0", ",,,", "t=1," + "v1=a," * 300):
        problem(post_stripe(api, ws, b"{}", {"Content-Type": "application/json", "Stripe-Signature": value}), 401)
    for value in ("é" * 10, "=" * 44, "00" * 33, "x" * 500):
        problem(post_signnow(api, url, raw, {**headers, "X-SignNow-Signature": value}), 401)


def test_a_hook_secret_moved_to_another_proposal_does_not_verify(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue, fresh_db: TestDatabase,
        logs: io.StringIO) -> None:
    connect(ws)
    first, second = sent(ws, fake), sent(ws, fake)
    with fresh_db.admin() as conn:  # an attacker with write access to the table swaps the two ciphertexts
        conn.execute("UPDATE proposals p SET signnow_hook_secret = q.signnow_hook_secret FROM proposals q"
                     " WHERE p.id = %s AND q.id = %s", (first["id"], second["id"]))
    url, raw, headers = fake.signnow_callback(first["signnow_document_id"])
    problem(post_signnow(api, url, raw, headers), 401)
    assert "signnow hook secret failed its integrity check" in logs.getvalue()


def test_sending_a_revision_voids_the_version_it_replaces(api: Client, ws: Workspace, fake: FakeProviders,
                                                          worker: LocalQueue, fresh_db: TestDatabase) -> None:
    connect(ws)
    first = sent(ws, fake)
    revised = body_of(ws.post(f"/proposals/{first['id']}/revise", None))
    assert body_of(ws.get(f"/proposals/{first['id']}"))["status"] == "sent"  # until the revision goes out
    assert ws.post(f"/proposals/{revised['id']}/send", {}).status_code == 200
    old = body_of(ws.get(f"/proposals/{first['id']}/history"))["data"]
    assert old[-1]["to_status"] == "void"
    assert sign(api, fake, worker, first["signnow_document_id"]).status_code == 200  # the old one, signed late
    assert body_of(ws.get(f"/proposals/{first['id']}"))["status"] == "void"
    assert "proposal.signed_late" in audited(fresh_db, ws, first["id"])


def test_voiding_a_signed_proposal_closes_its_payment_link(api: Client, ws: Workspace, fake: FakeProviders,
                                                           worker: LocalQueue) -> None:
    connect(ws, stripe_secret=whsec())
    proposal = signed_proposal(api, ws, fake, worker)
    assert fake.session_for(proposal["id"])["status"] == "open"
    assert ws.post(f"/proposals/{proposal['id']}/void", {}).status_code == 200
    assert fake.session_for(proposal["id"])["status"] == "expired"


def test_a_failed_delayed_payment_frees_the_proposal_for_a_new_link(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    secret = whsec()
    connect(ws, stripe_secret=secret)
    proposal = signed_proposal(api, ws, fake, worker)
    session = fake.session_for(proposal["id"])["id"]
    raw, headers = fake.stripe_event(session, secret, payment_status="unpaid")  # completed, the money not yet in
    assert post_stripe(api, ws, raw, headers).status_code == 200
    worker.drain()
    assert "used" in problem(ws.post(f"/proposals/{proposal['id']}/payment-link", {}), 409)["detail"]
    raw, headers = fake.stripe_event(session, secret, kind="checkout.session.async_payment_failed",
                                     payment_status="unpaid")
    assert post_stripe(api, ws, raw, headers).status_code == 200
    worker.drain()
    after = body_of(ws.get(f"/proposals/{proposal['id']}"))
    assert (after["status"], after["checkout_url"]) == ("signed", None)
    assert "proposal.payment_failed" in audited(fresh_db, ws, proposal["id"])
    renewed = ws.post(f"/proposals/{proposal['id']}/payment-link", {})
    assert renewed.status_code == 200, renewed.body
    assert fake.session_for(proposal["id"])["id"] != session


def test_a_revision_does_not_replace_a_version_whose_link_was_used(
        api: Client, ws: Workspace, fake: FakeProviders, worker: LocalQueue) -> None:
    secret = whsec()
    connect(ws, stripe_secret=secret)
    first = signed_proposal(api, ws, fake, worker)
    fake.stripe_event(fake.session_for(first["id"])["id"], secret, payment_status="unpaid")  # paid at Stripe, not here
    revised = body_of(ws.post(f"/proposals/{first['id']}/revise", None))
    documents = len(fake.documents)
    assert "not replaced" in problem(ws.post(f"/proposals/{revised['id']}/send", {}), 409)["detail"]
    assert len(fake.documents) == documents  # refused before anything reached SignNow
    assert body_of(ws.get(f"/proposals/{first['id']}"))["status"] == "signed"


def test_a_send_without_time_left_for_signnow_is_a_502_before_any_call(
        ws: Workspace, fake: FakeProviders, env: Callable[..., None]) -> None:
    connect(ws)
    proposal = a_draft(ws)
    env(db_request_deadline_s=3.5)  # less than a call's second plus the commit's reserve
    problem(ws.post(f"/proposals/{proposal['id']}/send", {}), 502)
    assert fake.requests == [] and body_of(ws.get(f"/proposals/{proposal['id']}"))["status"] == "draft"


# ---- concurrency (hostile tests L08, W04) ----


def test_two_sends_at_once_send_once_and_twenty_callbacks_at_once_sign_once(
        outbox: Outbox, fake: FakeProviders, worker: LocalQueue, fresh_db: TestDatabase, app_db: object) -> None:
    import app as app_module
    from chalicelib.db.pool import Database, use_database

    use_database(Database(fresh_db.app_url, size=8), "app")
    with real_environ(), Client(app_module.app) as api:
        ws = new_workspace(api, outbox, "racer")
        connect(ws)
        proposal = a_draft(ws)
        fake.delay["upload"] = 0.3  # both requests are inside SignNow's calls at once
        statuses: list[int] = []

        def send() -> None:
            with Client(app_module.app) as own:
                statuses.append(Workspace(own, ws.browser, ws.id).post(f"/proposals/{proposal['id']}/send",
                                                                       {}).status_code)

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200, 409]
        invited = [d for d in fake.documents.values() if d.invites]
        assert len(invited) == 1 and len(fake.documents) == 1  # the second waited for the lock, then found it sent
        url, raw, headers = fake.signnow_callback(invited[0].id)
        answers: list[int] = []

        def deliver() -> None:
            with Client(app_module.app) as own:
                answers.append(post_signnow(own, url, raw, headers).status_code)

        threads = [threading.Thread(target=deliver) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        worker.drain()
        assert answers == [200] * 20
        assert count_events(fresh_db, "signnow") == 1
        assert [s["to_status"] for s in body_of(ws.get(f"/proposals/{proposal['id']}/history"))["data"]] == [
            "draft", "sent", "signed"]
