"""Replies from the inbox: through a local fake Graph API and the mail outbox; failures are kept."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from chalice.test import Client

from tests.api.auth_helpers import Outbox, body_of, call, problem
from tests.api.test_inbox_email import _post_form, _setup, _signed
from tests.api.test_inbox_whatsapp import _delivery, _text
from tests.api.test_inbox_whatsapp import _post as post_whatsapp
from tests.api.test_inbox_whatsapp import _setup as setup_whatsapp


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
    owner, workspace, channel = setup_whatsapp(api, outbox)
    post_whatsapp(api, channel["id"], _delivery(channel["phone_number_id"], messages=[_text("wamid.R1")]))
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
    owner, workspace, channel = setup_whatsapp(api, outbox)
    post_whatsapp(api, channel["id"], _delivery(channel["phone_number_id"], messages=[_text("wamid.R2")]))
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    graph.fail = True
    response = call(api, "POST", f"/workspaces/{workspace}/conversations/{conversation}/messages", owner,
                    {"body": "will fail"})
    assert response.status_code == 201
    assert body_of(response)["status"] == "failed" and body_of(response)["error"]
    messages = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations/{conversation}/messages", owner))
    assert [m["body"] for m in messages["data"]][-1] == "will fail"


def test_email_reply_threads_and_comes_back_to_the_conversation(api: Client, outbox: Outbox, worker: Any) -> None:
    owner, workspace, channel = _setup(api, outbox)
    fields = {"sender": "Pat <pat@customer.example>", "recipient": "sales@acme.example", "subject": "Quote",
              "body-plain": "hello", "Message-Id": "<first@customer.example>"}
    _post_form(api, channel, _signed(fields))
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    outbox.clear()
    response = call(api, "POST", f"/workspaces/{workspace}/conversations/{conversation}/messages", owner,
                    {"body": "Here is the quote"})
    assert body_of(response)["status"] == "sent"
    mail = outbox.newest(to="pat@customer.example")
    raw = mail.raw.decode()
    assert "In-Reply-To: <first@customer.example>" in raw
    reply_to = next(line.split(": ", 1)[1] for line in raw.splitlines() if line.startswith("Reply-To:"))
    # The customer answers to the signed reply address without threading headers: same conversation.
    _post_form(api, channel, _signed({"sender": "pat@customer.example", "recipient": reply_to, "subject": "Re",
                                      "body-plain": "ok", "Message-Id": "<second@customer.example>"}))
    worker.drain()
    conversations = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"]
    assert len(conversations) == 1


def test_reply_to_another_workspaces_conversation_is_404(api: Client, outbox: Outbox, worker: Any) -> None:
    owner, workspace, channel = _setup(api, outbox)
    _post_form(api, channel, _signed({"sender": "pat@customer.example", "recipient": "sales@acme.example",
                                      "body-plain": "x", "Message-Id": "<iso@customer.example>"}))
    worker.drain()
    conversation = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"][0]["id"]
    other_owner, other_workspace, _ = _setup(api, outbox)
    problem(call(api, "POST", f"/workspaces/{other_workspace}/conversations/{conversation}/messages", other_owner,
                 {"body": "x"}), 404)
