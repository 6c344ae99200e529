"""WhatsApp in: signed deliveries become contacts, conversations and messages, once, in the right workspace."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading

from chalice.test import Client

import app as app_module
from chalicelib.inbox.queue import LocalQueue
from tests.api.auth_helpers import (
    Outbox,
    body_of,
    call,
    create_workspace,
    fresh_address,
    problem,
    real_environ,
    sign_in,
)
from tests.conftest import TestDatabase
from tests.fix_inbox import (
    WHATSAPP_PHONE,
    WHATSAPP_SECRET,
    WHATSAPP_TEXT,
    post_whatsapp,
    whatsapp_delivery,
    whatsapp_setup,
    whatsapp_status,
    whatsapp_text,
)


def test_signed_text_message_becomes_contact_conversation_and_message(
        api: Client, outbox: Outbox, worker: LocalQueue, logs: io.StringIO) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    assert channel["webhook_url"].endswith(f"/webhooks/whatsapp/{channel['id']}")
    assert WHATSAPP_SECRET not in json.dumps(channel)
    raw = whatsapp_delivery(channel["phone_number_id"], messages=[whatsapp_text("wamid.A1")])
    response = post_whatsapp(api, channel["id"], raw)
    assert response.status_code == 200, response.body
    worker.drain()
    listed = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"]
    assert len(listed) == 1
    messages = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations/{listed[0]['id']}/messages",
                            owner))["data"]
    assert [(m["direction"], m["body"], m["status"]) for m in messages] == [("in", WHATSAPP_TEXT, "received")]
    contact = body_of(call(api, "GET", f"/workspaces/{workspace}/contacts/{listed[0]['contact_id']}", owner))
    assert contact["phone"] == "+" + WHATSAPP_PHONE and contact["first_name"] == "Kerry"
    assert WHATSAPP_TEXT not in logs.getvalue() and WHATSAPP_PHONE not in logs.getvalue()


def test_handshake_answers_the_challenge_only_for_the_right_token(api: Client, outbox: Outbox) -> None:
    _owner, _workspace, channel = whatsapp_setup(api, outbox)
    path = f"/webhooks/whatsapp/{channel['id']}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token="
    ok = api.http.get(path + "verify-me-please")
    assert ok.status_code == 200 and ok.body == b"1158201444" and ok.headers["Content-Type"] == "text/plain"
    problem(api.http.get(path + "wrong"), 403)


def test_bad_or_missing_signature_is_401_and_stores_nothing(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    _owner, _workspace, channel = whatsapp_setup(api, outbox)
    raw = whatsapp_delivery(channel["phone_number_id"], messages=[whatsapp_text("wamid.B1", "héllo 👋 \u2019")])
    problem(post_whatsapp(api, channel["id"], raw, secret="not-the-secret"), 401)
    unsigned = api.http.post(f"/webhooks/whatsapp/{channel['id']}", body=raw,
                             headers={"Content-Type": "application/json"})
    problem(unsigned, 401)
    # Re-serialized JSON (escaped unicode) is other bytes: the signature of the original does not fit.
    signature = "sha256=" + hmac.new(WHATSAPP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    reserialized = json.dumps(json.loads(raw)).encode()
    problem(api.http.post(f"/webhooks/whatsapp/{channel['id']}", body=reserialized,
                          headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature}), 401)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM inbound_events").fetchone() == (0,)
        reasons = dict(conn.execute("SELECT reason, count FROM webhook_rejections").fetchall())
    assert reasons == {"bad_signature": 3}


def test_malformed_body_is_400_and_counted(api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    _owner, _workspace, channel = whatsapp_setup(api, outbox)
    for raw in (b"{not json", json.dumps({"object": "page"}).encode(),
                json.dumps({"object": "whatsapp_business_account", "entry": "x"}).encode()):
        problem(post_whatsapp(api, channel["id"], raw), 400)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM inbound_events").fetchone() == (0,)


def test_another_workspaces_number_in_the_payload_is_refused(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    _owner, _workspace, channel = whatsapp_setup(api, outbox)
    raw = whatsapp_delivery("999999999", messages=[whatsapp_text("wamid.C1")])
    problem(post_whatsapp(api, channel["id"], raw), 401)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM inbound_events").fetchone() == (0,)


def test_twenty_concurrent_copies_of_a_delivery_make_one_message(
        outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, app_db: object) -> None:
    from chalicelib.db.pool import Database, use_database

    use_database(Database(fresh_db.app_url, size=8), "app")
    with real_environ(), Client(app_module.app) as api:
        _owner, _workspace, channel = whatsapp_setup(api, outbox)
        raw = whatsapp_delivery(channel["phone_number_id"], messages=[whatsapp_text("wamid.D1")])
        statuses: list[int] = []

        def deliver() -> None:
            with Client(app_module.app) as own:
                statuses.append(post_whatsapp(own, channel["id"], raw).status_code)

        threads = [threading.Thread(target=deliver) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        worker.drain()
    assert statuses == [200] * 20
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM inbound_events").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM contacts").fetchone() == (1,)


def test_statuses_only_move_forward(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    _owner, _workspace, channel = whatsapp_setup(api, outbox)
    number = channel["phone_number_id"]
    post_whatsapp(api, channel["id"], whatsapp_delivery(number, messages=[whatsapp_text("wamid.E1")]))
    worker.drain()
    with fresh_db.admin() as conn:
        conn.execute("UPDATE messages SET direction = 'out', status = 'queued' WHERE provider_message_id = 'wamid.E1'")
    for state in ("read", "delivered", "sent"):
        status = whatsapp_status("wamid.E1", state, timestamp="1764230001")
        post_whatsapp(api, channel["id"], whatsapp_delivery(number, statuses=[status]))
        worker.drain()
    with fresh_db.admin() as conn:
        row = conn.execute("SELECT status FROM messages WHERE provider_message_id = 'wamid.E1'").fetchone()
    assert row == ("read",)


def test_every_message_type_gets_a_readable_body(api: Client, outbox: Outbox, worker: LocalQueue) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    kinds = [
        {"type": "image", "image": {"id": "m1", "mime_type": "image/jpeg", "caption": "a photo"}},
        {"type": "location", "location": {"latitude": 52.5, "longitude": 13.4, "name": "Office"}},
        {"type": "contacts", "contacts": [{"name": {"formatted_name": "Ada Lovelace"}}]},
        {"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "b", "title": "Yes"}}},
        {"type": "button", "button": {"text": "Stop", "payload": "stop"}},
        {"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}},
        {"type": "document", "document": {"id": "m2", "filename": "offer.pdf", "mime_type": "application/pdf"}},
    ]
    messages = [{"from": WHATSAPP_PHONE, "id": f"wamid.F{i}", "timestamp": str(1764230000 + i), **k}
                for i, k in enumerate(kinds)]
    raw = whatsapp_delivery(channel["phone_number_id"], messages=messages)
    assert post_whatsapp(api, channel["id"], raw).status_code == 200
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]
    bodies = [m["body"] for m in body_of(call(api, "GET", f"/workspaces/{workspace}/conversations/"
                                                         f"{conversation['id']}/messages", owner))["data"]]
    assert bodies == ["a photo", "Office (52.5, 13.4)", "Ada Lovelace", "Yes", "Stop", "👍", "offer.pdf"]


def test_member_cannot_manage_channels_and_other_workspace_gets_404(api: Client, outbox: Outbox) -> None:
    _owner, workspace, channel = whatsapp_setup(api, outbox)
    other = sign_in(api, fresh_address("other"), outbox)
    create_workspace(api, other, "B")
    problem(call(api, "GET", f"/workspaces/{workspace}/channels", other), 404)
    problem(call(api, "DELETE", f"/workspaces/{workspace}/channels/{channel['id']}", other), 404)
    problem(call(api, "GET", f"/workspaces/{workspace}/conversations", other), 404)


def test_deep_and_oversize_bodies_are_refused(api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    _owner, _workspace, channel = whatsapp_setup(api, outbox)
    deep = b"[" * 100_000 + b"]" * 100_000  # 200 KB: under the body limit, refused by the parser
    problem(post_whatsapp(api, channel["id"], deep), 400)
    nested = b'{"object": "whatsapp_business_account", "entry": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    problem(post_whatsapp(api, channel["id"], nested), 400)
    huge = b'{"object": "whatsapp_business_account", "x": "' + b"a" * 2_000_000 + b'"}'
    problem(post_whatsapp(api, channel["id"], huge), 413)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM inbound_events").fetchone() == (0,)
