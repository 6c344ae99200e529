"""Download links: issued only to members, bound to one workspace's file, unalterable, short-lived, never
logged, and never a way out of the blob root (the local store's GET /downloads; S3 presigns in prod)."""

from __future__ import annotations

import base64
import io
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
import time_machine
from chalice.test import Client

from chalicelib.auth.crypto import keyed_token
from chalicelib.blobs import LINK_PURPOSE, LocalBlobs
from chalicelib.inbox.queue import LocalQueue
from chalicelib.settings import get_settings
from tests.api.auth_helpers import Browser, Outbox, call, problem
from tests.api.download_helpers import fetch_token, follow, link_for, token_of
from tests.conftest import TestDatabase
from tests.fix_inbox import email_setup, mailgun_signed, post_mailgun_form, threads_of

SECRET_BYTES = b"CANARY-file-" + uuid.uuid4().hex.encode()


@dataclass(frozen=True)
class Stored:
    """A workspace with one emailed file: its owner, id, attachment id and blob key."""

    owner: Browser
    workspace: str
    attachment: str
    key: str


def _stored(api: Client, outbox: Outbox, queue: LocalQueue, db: TestDatabase, data: bytes) -> Stored:
    owner, workspace, channel = email_setup(api, outbox)
    message = EmailMessage()
    message["From"] = "pat@customer.example"
    message["Message-Id"] = f"<{uuid.uuid4().hex}@customer.example>"
    message.set_content("see attached")
    message.add_attachment(data, maintype="application", subtype="pdf", filename="contract.pdf")
    assert post_mailgun_form(api, channel, mailgun_signed({"recipient": "sales@acme.example",
                                             "body-mime": message.as_string()})).status_code == 200
    queue.drain()
    (thread,) = threads_of(api, owner, workspace)
    attachment = thread[0]["attachments"][0]["id"]
    with db.admin() as conn:
        row = conn.execute("SELECT blob_key FROM attachments WHERE id = %s", (attachment,)).fetchone()
    assert row is not None
    return Stored(owner, workspace, attachment, str(row[0]))


@pytest.fixture
def two(api: Client, outbox: Outbox, worker: LocalQueue,
        fresh_db: TestDatabase) -> tuple[Stored, Stored]:
    """Workspaces A and B, each with one file; A's holds the secret bytes."""
    return (_stored(api, outbox, worker, fresh_db, SECRET_BYTES),
            _stored(api, outbox, worker, fresh_db, b"%PDF-1.4 B's own file"))


def _decode(token: str) -> tuple[dict[str, Any], str]:
    body, _, signature = token.partition(".")
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))), signature


def _encode(claims: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _signed_for_test(claims: dict[str, Any]) -> str:
    """A token with a genuine HMAC over any claims: what only a bug in issuing (or a leaked key) could make."""
    body = _encode(claims)
    return f"{body}.{keyed_token(LINK_PURPOSE, body)}"


def _refused(response: Any) -> None:
    problem(response, 403)
    assert SECRET_BYTES not in response.body


def test_another_workspaces_member_gets_404_and_no_link(api: Client, two: tuple[Stored, Stored]) -> None:
    a, b = two
    for path in (f"/workspaces/{a.workspace}/attachments/{a.attachment}",
                 f"/workspaces/{b.workspace}/attachments/{a.attachment}"):
        response = problem(call(api, "GET", path, b.owner), 404)
        assert "downloads" not in json.dumps(response)


def test_a_link_to_a_file_of_a_cannot_be_resigned_to_a_file_of_b(api: Client, two: tuple[Stored, Stored]) -> None:
    a, b = two
    token = token_of(link_for(api, a.owner, a.workspace, a.attachment)["url"])
    claims, signature = _decode(token)
    assert (claims["w"], claims["k"]) == (a.workspace, a.key)
    _b_claims, b_signature = _decode(token_of(link_for(api, b.owner, b.workspace, b.attachment)["url"]))
    for forged in (f"{_encode({**claims, 'w': b.workspace, 'k': b.key})}.{signature}",  # A's signature, B's file
                   f"{_encode({**claims, 'k': b.key})}.{signature}",  # B's key under A's workspace
                   f"{token.partition('.')[0]}.{b_signature}"):  # A's claims with B's signature
        _refused(fetch_token(api, forged))
    # Issuing is bound too: a store never signs a key outside the workspace it is asked for.
    with pytest.raises(ValueError, match="outside the workspace"):
        LocalBlobs(get_settings().data_dir / "blobs").download_url(
            b.key, tenant_id=uuid.UUID(a.workspace), filename=None, content_type="application/pdf")
    # Even a genuinely signed grant naming A's workspace and B's key is refused before any read.
    _refused(fetch_token(api, _signed_for_test({**claims, "k": b.key})))
    assert follow(api, f"{get_settings().public_base_url}/downloads?token={token}").body == SECRET_BYTES


def test_an_altered_token_or_expiry_is_403_problem_json(api: Client, two: tuple[Stored, Stored]) -> None:
    a, _b = two
    token = token_of(link_for(api, a.owner, a.workspace, a.attachment)["url"])
    claims, signature = _decode(token)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for altered in (f"{token.partition('.')[0]}.{flipped}",
                    f"{_encode({**claims, 'e': claims['e'] + 86400})}.{signature}",  # a later expiry
                    f"{_encode({**claims, 'f': 'contract.html'})}.{signature}",  # another file name
                    token[:-3], token.partition(".")[0], "", "x" * 5000, "." + signature):
        _refused(fetch_token(api, altered))
    _refused(api.http.get("/downloads", headers={"Accept": "*/*"}))
    problem(api.http.get(f"/downloads?token={token}&token={token}", headers={"Accept": "*/*"}), 400)
    assert fetch_token(api, token).body == SECRET_BYTES


def test_an_expired_link_is_403(api: Client, two: tuple[Stored, Stored]) -> None:
    a, _b = two
    download = link_for(api, a.owner, a.workspace, a.attachment)
    expires = datetime.fromisoformat(download["expires_at"])
    with time_machine.travel(expires - timedelta(seconds=5), tick=False):
        assert follow(api, download["url"]).body == SECRET_BYTES
    with time_machine.travel(expires + timedelta(seconds=1), tick=False):
        _refused(follow(api, download["url"]))
    assert expires - datetime.now(UTC) <= timedelta(seconds=300)  # DOWNLOAD_URL_TTL_S's default, written out


def test_download_links_never_reach_the_logs(api: Client, two: tuple[Stored, Stored], caplog: pytest.LogCaptureFixture,
                                             logs: io.StringIO) -> None:
    a, _b = two
    caplog.set_level(logging.DEBUG)
    download = link_for(api, a.owner, a.workspace, a.attachment)
    token = token_of(download["url"])
    assert follow(api, download["url"]).status_code == 200
    _refused(fetch_token(api, token[:-2]))
    _refused(fetch_token(api, _signed_for_test({**_decode(token)[0], "k": "tenants/x/../../etc/passwd"})))
    records = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    assert any("/downloads" in record for record in records)  # the request lines are there, by route
    signature = token.partition(".")[2]
    for record in [*records, logs.getvalue()]:
        assert download["url"] not in record and token not in record and signature not in record
        assert token.partition(".")[0] not in record


def test_the_download_route_refuses_path_traversal_in_keys(api: Client, two: tuple[Stored, Stored]) -> None:
    a, b = two
    data_dir = get_settings().data_dir
    (data_dir / "secret.txt").write_bytes(SECRET_BYTES)
    claims, _signature = _decode(token_of(link_for(api, a.owner, a.workspace, a.attachment)["url"]))
    for key in (f"tenants/{a.workspace}/../../secret.txt", f"tenants/{a.workspace}/../{b.workspace}/attachments",
                f"tenants/{a.workspace}/attachments/../../../secret.txt", f"tenants/{a.workspace}/./x",
                f"tenants/{a.workspace}/%2e%2e/%2e%2e/secret.txt", "/etc/passwd", "../secret.txt",
                f"tenants/{a.workspace}/x\\..\\..\\secret.txt", f"tenants/{a.workspace}//secret.txt",
                f"tenants/{a.workspace}/x\x00", b.key.replace(b.workspace, a.workspace + "/.."),
                "tenants/" + a.workspace):
        _refused(fetch_token(api, _signed_for_test({**claims, "k": key})))


def test_the_download_route_answers_404_when_files_live_in_s3(api: Client, two: tuple[Stored, Stored],
                                                             env: Callable[..., None]) -> None:
    a, _b = two
    token = token_of(link_for(api, a.owner, a.workspace, a.attachment)["url"])
    env(blob_backend="s3", blob_bucket="crm-blobs")  # production: links are S3 presigned GETs
    response = problem(fetch_token(api, token), 404)
    assert SECRET_BYTES.decode() not in json.dumps(response)
