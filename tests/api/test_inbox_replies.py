"""Replies from the inbox: through a local fake Graph API and the mail outbox; failures are kept."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from chalice.test import Client

from tests.api.auth_helpers import Outbox, body_of, call, problem
from tests.api.download_helpers import follow, link_for
from tests.conftest import TestDatabase
from tests.fix_inbox import (
    email_setup,
    mailgun_signed,
    post_mailgun_form,
    post_whatsapp,
    whatsapp_delivery,
    whatsapp_message,
    whatsapp_setup,
    whatsapp_text,
)

MEDIA = b"\xff\xd8\xff" + bytes(range(200))


class FakeGraph(BaseHTTPRequestHandler):
    """Records requests; answers like the Graph API's send endpoint (or fails on demand)."""

    seen: ClassVar[list[dict[str, Any]]] = []
    fail = False

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        FakeGraph.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                               "body": json.loads(self.rfile.read(length))})
        status, payload = (500, {"error": {"message": "boom"}}) if FakeGraph.fail else (
            200, {"messaging_product": "whatsapp", "messages": [{"id": "wamid.OUT1"}]})
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path.startswith("/v21.0/"):
            data = json.dumps({"url": f"http://127.0.0.1:{port}/media/file", "mime_type": "image/jpeg",
                               "sha256": hashlib.sha256(MEDIA).hexdigest(), "id": self.path.rsplit("/", 1)[1]}).encode()
        elif self.path == "/media/file" and self.headers.get("Authorization", "").startswith("Bearer "):
            data = MEDIA
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def graph(env: Callable[..., None]) -> Iterator[type[FakeGraph]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGraph)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    env(graph_base_url=f"http://{host}/v21.0", outbound_allow_hosts=host)
    FakeGraph.seen, FakeGraph.fail = [], False
    yield FakeGraph
    server.shutdown()


def test_whatsapp_reply_goes_through_the_graph_api(api: Client, outbox: Outbox, worker: Any,
                                                  graph: type[FakeGraph]) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    raw = whatsapp_delivery(channel["phone_number_id"], messages=[whatsapp_text("wamid.R1")])
    post_whatsapp(api, channel["id"], raw)
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    response = call(api, "POST", f"/workspaces/{workspace}/conversations/{conversation}/messages", owner,
                    {"body": "Thanks, we will call you"})
    assert response.status_code == 201, response.body
    assert body_of(response)["status"] == "sent"
    (request,) = graph.seen
    assert request["path"] == f"/v21.0/{channel['phone_number_id']}/messages"
    assert request["auth"].startswith("Bearer EAAG")
    assert request["body"] == {"messaging_product": "whatsapp", "to": "14155550123", "type": "text",
                               "text": {"body": "Thanks, we will call you"}}


def test_a_failed_send_is_recorded_not_lost(api: Client, outbox: Outbox, worker: Any, graph: type[FakeGraph]) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    raw = whatsapp_delivery(channel["phone_number_id"], messages=[whatsapp_text("wamid.R2")])
    post_whatsapp(api, channel["id"], raw)
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    graph.fail = True
    response = call(api, "POST", f"/workspaces/{workspace}/conversations/{conversation}/messages", owner,
                    {"body": "will fail"})
    assert response.status_code == 201
    assert body_of(response)["status"] == "failed" and body_of(response)["error"]
    messages = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations/{conversation}/messages", owner))
    assert [m["body"] for m in messages["data"]][-1] == "will fail"


def _email_and_reply(api: Client, outbox: Outbox, worker: Any, *, owner: Any, workspace: str, channel: str,
                     sender: str, message_id: str) -> Any:
    """A customer's email "Quote" ("hello") arrives; the owner replies "Here is the quote" (sent)."""
    fields = {"sender": sender, "recipient": "sales@acme.example", "subject": "Quote", "body-plain": "hello",
              "Message-Id": message_id}
    post_mailgun_form(api, channel, mailgun_signed(fields))
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    outbox.clear()
    response = call(api, "POST", f"/workspaces/{workspace}/conversations/{conversation}/messages", owner,
                    {"body": "Here is the quote"})
    assert body_of(response)["status"] == "sent"
    return response


def test_email_reply_threads_and_comes_back_to_the_conversation(api: Client, outbox: Outbox, worker: Any) -> None:
    owner, workspace, channel = email_setup(api, outbox)
    _email_and_reply(api, outbox, worker, owner=owner, workspace=workspace, channel=channel,
                     sender="Pat <pat@customer.example>", message_id="<first@customer.example>")
    mail = outbox.newest(to="pat@customer.example")
    raw = mail.raw.decode()
    assert "In-Reply-To: <first@customer.example>" in raw
    reply_to = next(line.split(": ", 1)[1] for line in raw.splitlines() if line.startswith("Reply-To:"))
    # The customer answers to the signed reply address without threading headers: same conversation.
    fields = {"sender": "pat@customer.example", "recipient": reply_to, "subject": "Re", "body-plain": "ok",
              "Message-Id": "<second@customer.example>"}
    post_mailgun_form(api, channel, mailgun_signed(fields))
    worker.drain()
    conversations = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"]
    assert len(conversations) == 1


def test_an_answer_quoting_only_our_message_id_joins_the_conversation(
        api: Client, outbox: Outbox, worker: Any, fresh_db: TestDatabase) -> None:
    owner, workspace, channel = email_setup(api, outbox)
    response = _email_and_reply(api, outbox, worker, owner=owner, workspace=workspace, channel=channel,
                                sender="pat@customer.example", message_id="<q1@customer.example>")
    sent = outbox.newest(to="pat@customer.example").message
    message_id = str(sent["Message-ID"])
    assert message_id.startswith("<") and message_id.endswith("@acme.example>")
    with fresh_db.admin() as conn:
        stored = conn.execute("SELECT email_message_id FROM messages WHERE id = %s", (body_of(response)["id"],))
        assert stored.fetchone() == (message_id.strip("<>"),)
    # The customer's client answers the plain channel address (not the signed Reply-To), quoting our id only.
    assert "sales@acme.example" not in str(sent["Reply-To"])
    fields = {"sender": "pat@customer.example", "recipient": "sales@acme.example", "subject": "Re: Quote",
              "body-plain": "accepted", "Message-Id": "<q2@customer.example>", "In-Reply-To": message_id,
              "References": f"<q1@customer.example> {message_id}"}
    post_mailgun_form(api, channel, mailgun_signed(fields))
    worker.drain()
    (only,) = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"]
    messages = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations/{only['id']}/messages", owner))
    assert [m["body"] for m in messages["data"]] == ["hello", "Here is the quote", "accepted"]


def test_reply_to_another_workspaces_conversation_is_404(api: Client, outbox: Outbox, worker: Any) -> None:
    owner, workspace, channel = email_setup(api, outbox)
    fields = {"sender": "pat@customer.example", "recipient": "sales@acme.example", "body-plain": "x",
              "Message-Id": "<iso@customer.example>"}
    post_mailgun_form(api, channel, mailgun_signed(fields))
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    other_owner, other_workspace, _ = email_setup(api, outbox)
    problem(call(api, "POST", f"/workspaces/{other_workspace}/conversations/{conversation}/messages", other_owner,
                 {"body": "x"}), 404)


def test_whatsapp_media_is_fetched_into_the_blob_store(api: Client, outbox: Outbox, worker: Any,
                                                      graph: type[FakeGraph]) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    image = whatsapp_message("whatsapp_image.json", "wamid.M1",
                             image={"id": "4490709327384033", "mime_type": "image/jpeg", "caption": "photo"})
    post_whatsapp(api, channel["id"], whatsapp_delivery(channel["phone_number_id"], messages=[image]))
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    (message,) = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations/{conversation}/messages",
                              owner))["data"]
    (attachment,) = message["attachments"]
    assert attachment["size"] == len(MEDIA) and attachment["content_type"] == "image/jpeg"
    assert attachment["sha256"] == hashlib.sha256(MEDIA).hexdigest()
    assert follow(api, link_for(api, owner, workspace, attachment["id"])["url"]).body == MEDIA


def test_media_on_a_non_meta_or_private_host_is_not_fetched(api: Client, outbox: Outbox, worker: Any) -> None:
    owner, workspace, channel = whatsapp_setup(api, outbox)
    image = whatsapp_message("whatsapp_image.json", "wamid.M2")
    post_whatsapp(api, channel["id"], whatsapp_delivery(channel["phone_number_id"], messages=[image]))
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    (message,) = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations/{conversation}/messages",
                              owner))["data"]
    # No fake Graph server is allowed here: graph.facebook.com cannot be reached from this machine, and
    # nothing on loopback may be: the message is kept, marked, without an attachment.
    assert message["attachments"] == [] and message["error"] == "media_unavailable"
