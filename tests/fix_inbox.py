"""Fixtures and helpers of the inbox tests (loaded for every test by tests/conftest.py).

`worker` is the in-process queue the webhooks hand stored events to; `load_event()` reads one of the
real-shaped provider bodies under tests/fixtures/; the rest sets up a channel and posts to it as the
provider would (signed), through the HTTP routes only.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from chalice.test import Client

from chalicelib.inbox.ingest import get_queue, use_queue
from chalicelib.inbox.queue import LocalQueue
from tests.api.auth_helpers import Browser, Outbox, body_of, call, create_workspace, fresh_address, sign_in

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def worker() -> Iterator[LocalQueue]:
    """The inbox's in-process worker, as the local settings build it; `drain()` waits until every enqueued
    event is processed."""
    use_queue(None)
    queue = get_queue()
    assert isinstance(queue, LocalQueue), queue
    yield queue
    use_queue(None)


# ---- provider bodies ----


@functools.cache
def _read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def load_event(name: str) -> Any:
    """A provider body from tests/fixtures/, fresh for each call: a .json file parsed, a .form file (as Twilio
    posts it, application/x-www-form-urlencoded) as a dict of its fields in order, anything else as bytes."""
    raw = _read(name)
    if name.endswith(".json"):
        return json.loads(raw)
    if name.endswith(".form"):
        return dict(parse_qsl(raw.decode().strip(), keep_blank_values=True, strict_parsing=True))
    return copy.copy(raw)


# ---- WhatsApp (Meta's Cloud API) ----

WHATSAPP_SECRET = "app-secret-" + uuid.uuid4().hex
WHATSAPP_PHONE = "14155550123"
WHATSAPP_TEXT = f"CANARY-message-{uuid.uuid4().hex}"


def whatsapp_channel(api: Client, browser: Browser, workspace: str,
                     number_id: str = "106540352242922") -> dict[str, Any]:
    """A WhatsApp channel of the workspace (as its owner); returns the channel document."""
    response = call(api, "POST", f"/workspaces/{workspace}/channels", browser, {
        "type": "whatsapp", "phone_number_id": number_id, "access_token": "EAAG" + "x" * 20,
        "app_secret": WHATSAPP_SECRET, "verify_token": "verify-me-please"})
    assert response.status_code == 201, response.body
    return dict(body_of(response))


def whatsapp_setup(api: Client, outbox: Outbox) -> tuple[Browser, str, dict[str, Any]]:
    """A new owner, workspace and WhatsApp channel."""
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    return owner, workspace, whatsapp_channel(api, owner, workspace)


def whatsapp_delivery(number_id: str, *, messages: list[dict[str, Any]] | None = None,
                      statuses: list[dict[str, Any]] | None = None) -> bytes:
    """Meta's webhook body (whatsapp_text.json's envelope, or whatsapp_status.json's for statuses) to
    `number_id`, from Kerry Fisher at WHATSAPP_PHONE, holding these messages and statuses."""
    document = load_event("whatsapp_text.json" if messages is not None else "whatsapp_status.json")
    value = document["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = number_id
    value.pop("messages", None)
    value.pop("statuses", None)
    if messages is not None:
        value["contacts"] = [{"profile": {"name": "Kerry Fisher"}, "wa_id": WHATSAPP_PHONE}]
        value["messages"] = messages
    if statuses is not None:
        value["statuses"] = statuses
    return json.dumps(document, ensure_ascii=False).encode()


def whatsapp_message(name: str, wamid: str, **fields: Any) -> dict[str, Any]:
    """The message of a fixture (whatsapp_text.json, whatsapp_image.json) from WHATSAPP_PHONE, with its id."""
    (message,) = load_event(name)["entry"][0]["changes"][0]["value"]["messages"]
    return {**message, "from": WHATSAPP_PHONE, "id": wamid, **fields}


def whatsapp_text(wamid: str, body: str = WHATSAPP_TEXT) -> dict[str, Any]:
    """A text message from WHATSAPP_PHONE."""
    return whatsapp_message("whatsapp_text.json", wamid, timestamp="1764230000", text={"body": body})


def whatsapp_status(wamid: str, state: str, **fields: Any) -> dict[str, Any]:
    """A status of one of our messages (whatsapp_status.json's), to WHATSAPP_PHONE."""
    (status,) = load_event("whatsapp_status.json")["entry"][0]["changes"][0]["value"]["statuses"]
    return {**status, "id": wamid, "status": state, "recipient_id": WHATSAPP_PHONE, **fields}


def post_whatsapp(api: Client, channel_id: str, raw: bytes, secret: str = WHATSAPP_SECRET) -> Any:
    """POST a delivery signed as Meta signs it (X-Hub-Signature-256 over the raw bytes)."""
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return api.http.post(f"/webhooks/whatsapp/{channel_id}", body=raw,
                         headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})


# ---- email (Mailgun) ----

MAILGUN_KEY = "key-" + uuid.uuid4().hex


def email_setup(api: Client, outbox: Outbox) -> tuple[Browser, str, str]:
    """A new owner, workspace and email channel (sales@acme.example); returns them and the channel id."""
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    response = call(api, "POST", f"/workspaces/{workspace}/channels", owner,
                    {"type": "email", "signing_key": MAILGUN_KEY, "address": "sales@acme.example"})
    assert response.status_code == 201, response.body
    return owner, workspace, body_of(response)["id"]


def mailgun_signed(fields: dict[str, str], *, key: str = MAILGUN_KEY, age: int = 0) -> dict[str, str]:
    """The fields with Mailgun's timestamp, token and signature (HMAC-SHA256 of timestamp + token)."""
    timestamp, token = str(int(time.time()) - age), uuid.uuid4().hex + uuid.uuid4().hex
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {**fields, "timestamp": timestamp, "token": token, "signature": signature}


def signed_mailgun_forward(key: str = MAILGUN_KEY) -> bytes:
    """mailgun_forward.multipart, signed now: its @TIMESTAMP@, @TOKEN@ and @SIGNATURE@ filled in."""
    raw: bytes = load_event("mailgun_forward.multipart")
    signed = mailgun_signed({}, key=key)
    for name in ("timestamp", "token", "signature"):
        raw = raw.replace(f"@{name.upper()}@".encode(), signed[name].encode())
    return raw


def post_mailgun_form(api: Client, channel: str, fields: dict[str, str]) -> Any:
    """POST fields url-encoded, as a Mailgun route without attachments does."""
    return api.http.post(f"/webhooks/email/{channel}", body=urlencode(fields).encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})


def post_mailgun_multipart(api: Client, channel: str, raw: bytes) -> Any:
    """POST a multipart/form-data body (its boundary read from its first line), as Mailgun posts files."""
    boundary = raw.split(b"\r\n", 1)[0].removeprefix(b"--").decode()
    return api.http.post(f"/webhooks/email/{channel}", body=raw,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def threads_of(api: Client, owner: Browser, workspace: str) -> list[list[dict[str, Any]]]:
    """The messages of every conversation of the workspace, conversation by conversation."""
    conversations = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"]
    return [body_of(call(api, "GET", f"/workspaces/{workspace}/conversations/{c['id']}/messages", owner))["data"]
            for c in conversations]
