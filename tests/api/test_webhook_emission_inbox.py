"""Outgoing webhooks of the writes no workspace route makes: inbound processing (WhatsApp, email), the outcome of a
reply (and WhatsApp's later failure report), Twilio calls ending, and an invitation accepted at sign-in.

Each runs the real flow (signed provider deliveries through the webhook routes, the in-process worker) in a
workspace with an endpoint subscribed to '*' (test_webhook_emission.py has the walk over the routes).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from chalice.test import Client

from chalicelib.inbox.queue import LocalQueue
from tests.api.auth_helpers import Outbox, body_of, call, fresh_address, invite_and_join
from tests.api.crm_helpers import Workspace, insert_rows, new_workspace
from tests.api.test_telephony import _post as post_twilio
from tests.api.test_telephony import _sid as sid
from tests.api.test_telephony import _status as call_status
from tests.api.test_telephony import _workspace as twilio_workspace
from tests.api.test_webhook_emission import assert_carries_row, email_conversation, stored, subscribe, types_since
from tests.conftest import RecordingTrigger, TestDatabase
from tests.fix_inbox import (
    WHATSAPP_TEXT,
    email_setup,
    mailgun_signed,
    post_mailgun_form,
    post_mailgun_multipart,
    post_whatsapp,
    signed_mailgun_forward,
    whatsapp_delivery,
    whatsapp_setup,
    whatsapp_status,
    whatsapp_text,
)

# ---- inbound messages ----


def test_a_first_whatsapp_message_emits_contact_conversation_and_message_received(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase,
        webhook_trigger: RecordingTrigger) -> None:
    _owner, workspace, channel = whatsapp_setup(api, outbox)
    subscribe(fresh_db, workspace)
    raw = whatsapp_delivery(channel["phone_number_id"], messages=[whatsapp_text("wamid.E1")])
    assert post_whatsapp(api, channel["id"], raw).status_code == 200
    assert webhook_trigger.woken == []  # the webhook only stores the inbound event
    worker.drain()
    # The worker's committed transaction stored events: the dispatcher is woken for the workspace.
    assert webhook_trigger.woken == [(uuid.UUID(workspace), 0)]
    messages = stored(fresh_db, workspace)
    assert [m.type for m in messages] == ["contact.created", "conversation.created", "message.received"]
    contact, conversation, received = (m.data for m in messages)
    assert contact["phone"] == "+14155550123"
    assert_carries_row(contact, fresh_db, "contacts", contact["id"])
    assert (conversation["contact_id"], conversation["channel_id"]) == (contact["id"], channel["id"])
    assert received["body"] == WHATSAPP_TEXT and received["direction"] == "in"
    assert received["conversation_id"] == conversation["id"]
    assert_carries_row(received, fresh_db, "messages", received["id"])
    assert received["attachments"] == []
    # The same number again: only the message is new. A redelivery is nothing new at all.
    before = stored(fresh_db, workspace)
    for wamid in ("wamid.E2", "wamid.E2"):
        post_whatsapp(api, channel["id"], whatsapp_delivery(channel["phone_number_id"],
                                                            messages=[whatsapp_text(wamid, "and again")]))
        worker.drain()
    assert types_since(fresh_db, workspace, before) == ["message.received"]
    assert stored(fresh_db, workspace)[-1].data["body"] == "and again"


def test_an_email_emits_message_received_and_a_new_thread_conversation_created(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    _owner, workspace, channel = email_setup(api, outbox)
    subscribe(fresh_db, workspace)
    fields = {"sender": "Pat <pat@customer.example>", "recipient": "sales@acme.example", "subject": "Quote",
              "body-plain": "hello there", "Message-Id": "<e1@customer.example>"}
    assert post_mailgun_form(api, channel, mailgun_signed(fields)).status_code == 200
    worker.drain()
    messages = stored(fresh_db, workspace)
    assert [m.type for m in messages] == ["contact.created", "conversation.created", "message.received"]
    assert messages[0].data["email"] == "pat@customer.example"
    assert messages[1].data["subject"] == "Quote"
    assert messages[2].data["body"] == "hello there"
    # A known sender in a new thread: a conversation, no contact.
    before = stored(fresh_db, workspace)
    again = {**fields, "subject": "Other", "Message-Id": "<e2@customer.example>"}
    post_mailgun_form(api, channel, mailgun_signed(again))
    worker.drain()
    assert types_since(fresh_db, workspace, before) == ["conversation.created", "message.received"]


def test_message_received_is_emitted_once_the_files_are_stored_and_lists_them(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    owner, workspace, channel = email_setup(api, outbox)
    subscribe(fresh_db, workspace)
    assert post_mailgun_multipart(api, channel, signed_mailgun_forward()).status_code == 200
    worker.drain()
    [received] = [m.data for m in stored(fresh_db, workspace) if m.type == "message.received"]
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    [message] = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations/{conversation}/messages",
                             owner))["data"]
    assert received["id"] == message["id"] and received["body"] == message["body"]
    assert sorted(a["sha256"] for a in received["attachments"]) == sorted(a["sha256"] for a in message["attachments"])
    assert len(received["attachments"]) == 2


# ---- replies ----


def test_a_reply_emits_message_sent_or_message_failed(api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    ws = new_workspace(api, outbox)
    subscribe(fresh_db, ws.id)
    reachable = email_conversation(fresh_db, ws)
    unreachable = email_conversation(fresh_db, ws, email=None)
    sent = ws.post(f"/conversations/{reachable}/messages", {"body": "Here is the quote"})
    failed = ws.post(f"/conversations/{unreachable}/messages", {"body": "Nobody to send to"})
    assert (body_of(sent)["status"], body_of(failed)["status"]) == ("sent", "failed")
    messages = stored(fresh_db, ws.id)
    assert [m.type for m in messages] == ["message.sent", "message.failed"]
    assert (messages[0].data["id"], messages[0].data["body"]) == (body_of(sent)["id"], "Here is the quote")
    assert_carries_row(messages[0].data, fresh_db, "messages", body_of(sent)["id"])
    assert (messages[1].data["id"], messages[1].data["status"]) == (body_of(failed)["id"], "failed")
    assert messages[1].data["error"]


def test_whatsapp_reporting_a_sent_reply_failed_emits_message_failed_once(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    post_whatsapp(api, channel["id"], whatsapp_delivery(channel["phone_number_id"],
                                                        messages=[whatsapp_text("wamid.IN")]))
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    # A reply Meta accepted (as a sent reply is recorded).
    [reply] = insert_rows(fresh_db, "messages", workspace, [{
        "conversation_id": conversation, "direction": "out", "body": "Thanks", "provider_message_id": "wamid.OUT",
        "status": "sent", "status_rank": 1, "sent_at": datetime.now(UTC)}])
    subscribe(fresh_db, workspace)

    def report(*statuses: dict[str, Any]) -> None:
        raw = whatsapp_delivery(channel["phone_number_id"], statuses=list(statuses))
        assert post_whatsapp(api, channel["id"], raw).status_code == 200
        worker.drain()

    report(whatsapp_status("wamid.OUT", "delivered"))
    assert stored(fresh_db, workspace) == []
    failure = {"errors": [{"code": 131047, "title": "Re-engagement message"}]}
    report(whatsapp_status("wamid.OUT", "failed", **failure))
    report(whatsapp_status("wamid.OUT", "failed", timestamp="1764239999", **failure))  # nothing moves: no event
    [message] = stored(fresh_db, workspace)
    assert (message.type, message.data["id"], message.data["status"]) == ("message.failed", reply, "failed")


# ---- calls ----


def test_a_call_that_ends_emits_call_completed_once(api: Client, outbox: Outbox, worker: LocalQueue,
                                                   fresh_db: TestDatabase) -> None:
    _owner, workspace = twilio_workspace(api, outbox)
    subscribe(fresh_db, workspace)
    answered, missed = sid("CA"), sid("CA")
    for call_sid, status, duration in ((answered, "ringing", None), (answered, "completed", "42"),
                                       (answered, "in-progress", None), (missed, "no-answer", None)):
        assert post_twilio(api, workspace, "calls", call_status(call_sid, status, duration=duration)).status_code == 200
    worker.drain()
    messages = stored(fresh_db, workspace)
    assert [m.type for m in messages] == ["contact.created", "call.completed", "call.completed"]
    ended = {m.data["call_sid"]: m.data for m in messages if m.type == "call.completed"}
    assert (ended[answered]["status"], ended[answered]["duration_s"]) == ("completed", 42)
    assert ended[missed]["status"] == "no-answer"
    assert ended[answered]["contact_id"] == messages[0].data["id"]


# ---- members ----


def test_accepting_an_invitation_at_sign_in_emits_member_added(api: Client, outbox: Outbox,
                                                              fresh_db: TestDatabase) -> None:
    ws = new_workspace(api, outbox)
    subscribe(fresh_db, ws.id)
    address = fresh_address("joiner")
    joined = invite_and_join(api, outbox, ws.browser, ws.id, address, "admin")
    # Invited again and signing in with it: already a member, nothing is added.
    invite_and_join(api, outbox, ws.browser, ws.id, address, "member")
    assert [(m.type, m.data) for m in stored(fresh_db, ws.id)] == [
        ("member.added", {"user_id": joined.user_id, "role": "admin"})]
    leaving = Workspace(api, joined, ws.id)
    assert leaving.delete(f"/members/{joined.user_id}").status_code == 204
    last = stored(fresh_db, ws.id)[-1]
    assert (last.type, last.data) == ("member.removed", {"user_id": joined.user_id, "role": "admin"})
