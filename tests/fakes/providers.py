"""Local fakes of SignNow's and Stripe's REST APIs: the endpoints chalicelib's providers call, as documented
(see chalicelib/inbox/providers/signnow.py and stripe.py), plus control endpoints that play the signer and
the payer by sending the provider's signed callback.

One HTTP server, two prefixes: SIGNNOW_BASE_URL=<base>/signnow and STRIPE_API_BASE=<base>/stripe. Tests
build the callbacks with `signnow_callback` / `stripe_event` and post them through the test client; `make fakes`
(python -m tests.fakes) serves the same fake for `make run`, where `POST /signnow/_control/sign/{document_id}` and
`POST /stripe/_control/pay/{session_id}` (JSON {"webhook_url", "secret"}) post the callbacks over HTTP.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

SIGNED_MARK = b"\n% signed by the fake SignNow\n"


@dataclass
class Document:
    id: str
    name: str
    pdf: bytes
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    invites: list[dict[str, Any]] = field(default_factory=list)
    signed: bool = False


@dataclass
class FakeProviders:
    """What the fake was sent (documents, sessions, every request's method, path and auth) and what it answers."""

    server: ThreadingHTTPServer | None = None
    documents: dict[str, Document] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_idempotency_key: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    # Status codes to answer instead, by call name (upload, subscribe, invite, download, checkout, expire).
    fail: dict[str, int] = field(default_factory=dict)
    # Seconds to wait before answering, by call name (to make concurrent requests overlap).
    delay: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_port}"

    # ---- SignNow ----

    def signnow_callback(self, document_id: str, *, event: str = "document.complete",
                         timestamp: int | None = None) -> tuple[str, bytes, dict[str, str]]:
        """The completion SignNow posts for a signed document: (callback URL, body, headers), as subscribed."""
        document = self.documents[document_id]
        document.signed = True
        subscription = next(s for s in document.subscriptions if s["event"] == event)
        body = json.dumps({
            "meta": {"timestamp": int(time.time()) if timestamp is None else timestamp, "event": event,
                     "environment": "https://api.signnow.com", "initiator_id": uuid.uuid4().hex,
                     "callback_url": subscription["callback"]},
            "content": {"document_id": document_id, "document_name": document.name, "user_id": uuid.uuid4().hex},
        }).encode()
        mac = hmac.new(subscription["secret"].encode(), body, hashlib.sha256).digest()
        return subscription["callback"], body, {"Content-Type": "application/json",
                                                "X-SignNow-Signature": base64.b64encode(mac).decode()}

    # ---- Stripe ----

    def stripe_event(self, session_id: str, secret: str, *, kind: str = "checkout.session.completed",
                     payment_status: str = "paid", timestamp: int | None = None,
                     event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """A Stripe event about a session, signed like Stripe: (body, headers)."""
        self.sessions[session_id].update(status="complete", payment_status=payment_status)
        session = dict(self.sessions[session_id])
        body = json.dumps({"id": event_id or f"evt_{uuid.uuid4().hex}", "object": "event", "type": kind,
                           "created": int(time.time()), "livemode": False, "api_version": "2026-10-28.endive",
                           "data": {"object": session}}).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        v1 = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/json", "Stripe-Signature": f"t={stamp},v1={v1}"}

    def session_for(self, proposal_id: str) -> dict[str, Any]:
        """The latest session made for a proposal."""
        return [s for s in self.sessions.values() if s["client_reference_id"] == proposal_id][-1]


def _multipart_file(content_type: str, body: bytes) -> tuple[str, bytes] | None:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return str(part.get_filename() or "document.pdf"), payload if isinstance(payload, bytes) else b""
    return None


def handler(fake: FakeProviders) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._answer(status, json.dumps(value).encode())

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self, prefix: str) -> bool:
            auth = self.headers.get("Authorization")
            with fake.lock:
                fake.requests.append((self.command, self.path, auth))
            if not auth or not auth.startswith(f"Bearer {prefix}") or len(auth) < 20:
                self._json(401, {"error": "unauthorized"})
                return False
            return True

        def _failing(self, call: str) -> bool:
            time.sleep(fake.delay.get(call, 0.0))
            status = fake.fail.get(call)
            if status is not None:
                self._json(status, {"error": f"{call} failed"})
                return True
            return False

        def do_GET(self) -> None:
            path = urlsplit(self.path)
            session = re.fullmatch(r"/stripe/v1/checkout/sessions/(cs_[A-Za-z0-9_]+)", path.path)
            if session:
                if not self._authorized("sk_"):
                    return None
                found = fake.sessions.get(session.group(1))
                return self._json(200, found) if found else self._json(404, {"error": "no such session"})
            match = re.fullmatch(r"/signnow/document/([0-9a-f]{40})/download", path.path)
            if not match or not self._authorized(""):
                return self._json(404, {"error": "not found"}) if not match else None
            if self._failing("download"):
                return None
            document = fake.documents.get(match.group(1))
            if document is None or not document.signed or dict(parse_qsl(path.query)).get("type") != "collapsed":
                return self._json(400, {"error": "not signed"})
            return self._answer(200, document.pdf + SIGNED_MARK, "application/pdf")

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            body = self._body()
            if path.startswith("/signnow/_control/") or path.startswith("/stripe/_control/"):
                return self._control(path, body)
            if path.startswith("/signnow/"):
                return self._signnow(path[len("/signnow"):], body)
            if path == "/stripe/v1/checkout/sessions":
                return self._checkout(body)
            expire = re.fullmatch(r"/stripe/v1/checkout/sessions/(cs_[A-Za-z0-9_]+)/expire", path)
            if expire:
                return self._expire(expire.group(1))
            return self._json(404, {"error": "not found"})

        def _signnow(self, path: str, body: bytes) -> None:
            if not self._authorized(""):
                return
            if path == "/document":
                if self._failing("upload"):
                    return
                found = _multipart_file(self.headers.get("Content-Type", ""), body)
                if found is None or not found[1].startswith(b"%PDF-"):
                    return self._json(400, {"error": "no file"})
                document = Document(secrets.token_hex(20), found[0], found[1])  # 40 hex, like SignNow's ids
                fake.documents[document.id] = document
                return self._json(200, {"id": document.id})
            request = json.loads(body or b"{}")
            if path == "/api/v2/events":
                if self._failing("subscribe"):
                    return
                document = fake.documents.get(request.get("entity_id", ""))
                attributes = request.get("attributes") or {}
                if document is None or request.get("action") != "callback" or not attributes.get("callback"):
                    return self._json(400, {"error": "bad subscription"})
                document.subscriptions.append({"event": request["event"], "callback": attributes["callback"],
                                               "secret": attributes.get("secret_key") or request.get("secret_key")})
                return self._json(201, {"id": uuid.uuid4().hex})
            match = re.fullmatch(r"/document/([0-9a-f]{40})/invite", path)
            if match:
                if self._failing("invite"):
                    return
                document = fake.documents.get(match.group(1))
                if document is None or "@" not in str(request.get("to")) or "@" not in str(request.get("from")):
                    return self._json(400, {"error": "bad invite"})
                document.invites.append(request)
                return self._json(200, {"result": "success", "id": uuid.uuid4().hex})
            return self._json(404, {"error": "not found"})

        def _checkout(self, body: bytes) -> None:
            if not self._authorized("sk_") or self._failing("checkout"):
                return
            form = dict(parse_qsl(body.decode()))
            key = self.headers.get("Idempotency-Key") or uuid.uuid4().hex
            with fake.lock:
                if key in fake.by_idempotency_key:
                    return self._json(200, fake.sessions[fake.by_idempotency_key[key]])
                session_id = f"cs_test_{uuid.uuid4().hex}"
                session = {
                    "id": session_id, "object": "checkout.session", "mode": form.get("mode"),
                    "url": f"https://checkout.stripe.com/c/pay/{session_id}", "status": "open",
                    "payment_status": "unpaid", "currency": form.get("line_items[0][price_data][currency]"),
                    "amount_total": int(form.get("line_items[0][price_data][unit_amount]", "0")) * int(
                        form.get("line_items[0][quantity]", "1")),
                    "client_reference_id": form.get("client_reference_id"), "success_url": form.get("success_url"),
                    "metadata": {k[len("metadata["):-1]: v for k, v in form.items() if k.startswith("metadata[")}}
                fake.sessions[session_id] = session
                fake.by_idempotency_key[key] = session_id
            return self._json(200, session)

        def _expire(self, session_id: str) -> None:
            if not self._authorized("sk_") or self._failing("expire"):
                return
            with fake.lock:
                session = fake.sessions.get(session_id)
                if session is None or session["status"] != "open":  # as Stripe: only an open session expires
                    return self._json(400, {"error": {"message": "session is not open"}})
                session.update(status="expired", url=None)
            return self._json(200, session)

        def _control(self, path: str, body: bytes) -> None:
            """Play the signer or the payer: post the provider's signed callback to the app, over HTTP."""
            try:
                if path.startswith("/signnow/_control/sign/"):
                    url, data, headers = fake.signnow_callback(path.rsplit("/", 1)[1])
                else:
                    given = json.loads(body or b"{}")
                    url = given["webhook_url"]
                    data, headers = fake.stripe_event(path.rsplit("/", 1)[1], given["secret"])
            except (KeyError, StopIteration, ValueError):
                return self._json(404, {"error": "no such document, subscription or session"})
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            return self._json(200, {"callback_url": url, "status": status})

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def start(port: int = 0) -> FakeProviders:
    """Serve the fake on 127.0.0.1:`port` (0: any free port) in a daemon thread."""
    fake = FakeProviders()
    fake.server = ThreadingHTTPServer(("127.0.0.1", port), handler(fake))
    threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return fake


def stop(fake: FakeProviders) -> None:
    """Stop serving."""
    assert fake.server is not None
    fake.server.shutdown()
    fake.server.server_close()
