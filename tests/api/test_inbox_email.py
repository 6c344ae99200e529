"""Inbound email (Mailgun): signatures, replay cache, threading, attachments, multipart and MIME forms."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from chalice.test import Client

from chalicelib.inbox.queue import LocalQueue
from tests.api.auth_helpers import Outbox, call, create_workspace, fresh_address, problem, sign_in
from tests.api.download_helpers import follow, link_for
from tests.conftest import TestDatabase
from tests.fix_inbox import (
    email_setup,
    load_event,
    mailgun_signed,
    post_mailgun_form,
    post_mailgun_multipart,
    signed_mailgun_forward,
    threads_of,
)

TEXT = f"CANARY-mail-{uuid.uuid4().hex}"


def _mail(message_id: str, *, reply_to: str | None = None, text: str = TEXT) -> dict[str, str]:
    fields = {"sender": "Pat Doe <pat@customer.example>", "recipient": "sales@acme.example",
              "subject": "Quote", "body-plain": text, "Message-Id": f"<{message_id}>"}
    if reply_to:
        fields["In-Reply-To"] = f"<{reply_to}>"
    return fields


def test_signed_email_lands_in_a_conversation_and_replies_thread(
        api: Client, outbox: Outbox, worker: LocalQueue) -> None:
    owner, workspace, channel = email_setup(api, outbox)
    assert post_mailgun_form(api, channel, mailgun_signed(_mail("m1@customer.example"))).status_code == 200
    reply = _mail("m2@customer.example", reply_to="m1@customer.example", text="second")
    assert post_mailgun_form(api, channel, mailgun_signed(reply)).status_code == 200
    worker.drain()
    threads = threads_of(api, owner, workspace)
    assert [[m["body"] for m in thread] for thread in threads] == [[TEXT, "second"]]


def test_replayed_token_stale_timestamp_and_bad_signature_are_401(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    _owner, _workspace, channel = email_setup(api, outbox)
    fields = mailgun_signed(_mail("r1@customer.example"))
    assert post_mailgun_form(api, channel, fields).status_code == 200
    problem(post_mailgun_form(api, channel, fields), 401)  # the same token again
    problem(post_mailgun_form(api, channel, mailgun_signed(_mail("r2@customer.example"), age=301)), 401)
    problem(post_mailgun_form(api, channel, mailgun_signed(_mail("r3@customer.example"), key="key-other")), 401)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM inbound_events").fetchone() == (1,)


def test_multipart_attachments_are_stored_and_downloadable_only_in_the_workspace(
        api: Client, outbox: Outbox, worker: LocalQueue) -> None:
    owner, workspace, channel = email_setup(api, outbox)
    fields = mailgun_signed(_mail("a1@customer.example"))
    boundary = "----crmtest" + uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    data = b"%PDF-1.4 fake " + bytes(range(256))
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="attachment-1"; filename="offer.pdf"\r\n'
                 f'Content-Type: application/pdf\r\n\r\n'.encode() + data + b"\r\n")
    response = post_mailgun_multipart(api, channel, b"".join(parts) + f"--{boundary}--\r\n".encode())
    assert response.status_code == 200, response.body
    worker.drain()
    (thread,) = threads_of(api, owner, workspace)
    (attachment,) = thread[0]["attachments"]
    assert attachment["filename"] == "offer.pdf" and attachment["size"] == len(data)
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
    assert thread[0]["body"] == TEXT
    assert follow(api, link_for(api, owner, workspace, attachment["id"])["url"]).body == data


def test_body_mime_form_is_understood(api: Client, outbox: Outbox, worker: LocalQueue) -> None:
    owner, workspace, channel = email_setup(api, outbox)
    message = EmailMessage()
    message["From"] = "Pat <pat@customer.example>"
    message["To"] = "sales@acme.example"
    message["Subject"] = "MIME"
    message["Message-Id"] = "<mime1@customer.example>"
    message.set_content("from mime ✓")
    message.add_attachment(b"hello", maintype="text", subtype="plain", filename="note.txt")
    fields = mailgun_signed({"recipient": "sales@acme.example", "body-mime": message.as_string()})
    assert post_mailgun_form(api, channel, fields).status_code == 200
    worker.drain()
    (thread,) = threads_of(api, owner, workspace)
    assert thread[0]["body"].strip() == "from mime ✓"
    assert [a["filename"] for a in thread[0]["attachments"]] == ["note.txt"]


def test_wrong_content_type_and_malformed_forms(api: Client, outbox: Outbox) -> None:
    _owner, _workspace, channel = email_setup(api, outbox)
    problem(api.http.post(f"/webhooks/email/{channel}", body=b"{}", headers={"Content-Type": "application/json"}), 415)
    problem(api.http.post(f"/webhooks/email/{channel}", body=b"\xff\xfe",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}), 400)


def test_attachments_download_for_members_only(api: Client, outbox: Outbox, worker: LocalQueue) -> None:
    owner, workspace, channel = email_setup(api, outbox)
    message = EmailMessage()
    message["From"] = "pat@customer.example"
    message["Message-Id"] = "<dl1@customer.example>"
    message.set_content("see attached")
    html = b"<script>alert(1)</script>"
    message.add_attachment(html, maintype="text", subtype="html", filename='x".html')
    fields = mailgun_signed({"recipient": "sales@acme.example", "body-mime": message.as_string()})
    post_mailgun_form(api, channel, fields)
    worker.drain()
    (thread,) = threads_of(api, owner, workspace)
    attachment = thread[0]["attachments"][0]["id"]
    # No Accept header: the answer is JSON (a binary body would need one, and could exceed 6 MB).
    download = link_for(api, owner, workspace, attachment)
    assert {k: v for k, v in download.items() if k not in ("url", "expires_at")} == {
        "sha256": hashlib.sha256(html).hexdigest(), "size": len(html), "content_type": "text/html",
        "filename": 'x".html'}
    expires = datetime.fromisoformat(download["expires_at"])
    assert timedelta(seconds=290) < expires - datetime.now(UTC) <= timedelta(seconds=300)
    response = follow(api, download["url"])
    assert response.status_code == 200
    assert response.body == html
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"] == \
        """attachment; filename="x_.html"; filename*=UTF-8''x%22.html"""
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    other = sign_in(api, fresh_address("other"), outbox)
    other_workspace = create_workspace(api, other, "B")["id"]
    path = f"/workspaces/{workspace}/attachments/{attachment}"
    problem(call(api, "GET", path, other), 404)
    problem(call(api, "GET", f"/workspaces/{other_workspace}/attachments/{attachment}", other), 404)


def _fixture_files(raw: bytes) -> dict[str, tuple[str, bytes]]:
    """{filename: (content type, bytes)} of the fixture's file parts, cut out by hand (not by the parser)."""
    boundary = raw.split(b"\r\n", 1)[0]
    files = {}
    for part in raw.split(boundary)[1:-1]:
        head, _, data = part.partition(b"\r\n\r\n")
        match = re.search(rb'filename="([^"]+)"\r\nContent-Type: (\S+)', head)
        if match:
            files[match.group(1).decode()] = (match.group(2).decode(), data.removesuffix(b"\r\n"))
    return files


def test_mailgun_forward_with_two_files_stores_exactly_those_two(
        api: Client, outbox: Outbox, worker: LocalQueue) -> None:
    """A real-shaped "store and notify / forward" multipart: attachment-count and content-id-map are fields."""
    owner, workspace, channel = email_setup(api, outbox)
    response = post_mailgun_multipart(api, channel, signed_mailgun_forward())
    assert response.status_code == 200, response.body
    worker.drain()
    (thread,) = threads_of(api, owner, workspace)
    (message,) = thread
    expected = _fixture_files(load_event("mailgun_forward.multipart"))
    assert set(expected) == {"signed-quote.pdf", "logo.png"}
    assert sorted((a["filename"], a["content_type"], a["size"], a["sha256"]) for a in message["attachments"]) == sorted(
        (name, kind, len(data), hashlib.sha256(data).hexdigest()) for name, (kind, data) in expected.items())
    for attachment in message["attachments"]:
        fetched = follow(api, link_for(api, owner, workspace, attachment["id"])["url"])
        assert fetched.body == expected[attachment["filename"]][1]
    assert message["body"].startswith("Hi Sam,")
