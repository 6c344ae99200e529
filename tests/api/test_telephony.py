"""Telephony over HTTP: signed Twilio callbacks, calls, and the recording/transcription opt-in.

A local fake Twilio REST server (allowed through OUTBOUND_ALLOW_HOSTS) records every request, so the
tests can see that a recording of a call that did not opt in is deleted at Twilio and never fetched.
The signatures are computed here independently (Twilio's algorithm: base64 HMAC-SHA1 of the URL plus
the sorted parameters); tests/unit/test_signatures.py checks the implementation against Twilio's own
documented vector.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest
from chalice.test import Client

import app as app_module
from chalicelib.blobs import get_blobs
from chalicelib.inbox.processing import process_event
from chalicelib.inbox.providers import twilio
from chalicelib.inbox.queue import LocalQueue
from chalicelib.settings import get_settings
from tests.api.auth_helpers import (
    Browser,
    Outbox,
    body_of,
    call,
    create_workspace,
    fresh_address,
    invite_and_join,
    problem,
    sign_in,
)
from tests.api.download_helpers import follow, link_for
from tests.conftest import TestDatabase
from tests.fix_inbox import load_event

FORM = "application/x-www-form-urlencoded"
ACCOUNT = "AC" + uuid.uuid4().hex
TOKEN = uuid.uuid4().hex  # Twilio auth tokens are 32 hex characters
CALLER = "+14155550123"
CALLER_DIGITS = "4155550123"
OUR_NUMBER = "+14155550100"
TRANSCRIPT = f"CANARY-transcript-{uuid.uuid4().hex[:12]} please call me back"


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


# ---- a fake Twilio REST API ----


@dataclass
class FakeTwilio:
    """Answers GET …/Recordings/RE….mp3 with `media` and DELETE …/Recordings/RE….json with `delete_status`."""

    server: ThreadingHTTPServer
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    media: bytes = b"ID3" + os.urandom(3000)
    delete_status: int = 204

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def recording_url(self, recording_sid: str, account: str = ACCOUNT) -> str:
        return f"{self.base}/2010-04-01/Accounts/{account}/Recordings/{recording_sid}"

    def methods(self) -> list[str]:
        return [method for method, _path, _auth in self.requests]


@pytest.fixture
def fake_twilio(env: Callable[..., None]) -> Iterator[FakeTwilio]:
    fake: FakeTwilio

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            fake.requests.append((self.command, self.path, self.headers.get("Authorization")))

        def do_GET(self) -> None:
            self._record()
            if not self.path.endswith(".mp3"):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length", str(len(fake.media)))
            self.end_headers()
            self.wfile.write(fake.media)

        def do_DELETE(self) -> None:
            self._record()
            self.send_response(fake.delete_status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake = FakeTwilio(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    env(outbound_allow_hosts=f"127.0.0.1:{server.server_port}")
    yield fake
    server.shutdown()
    server.server_close()


# ---- signing and posting like Twilio ----


def _sign(token: str, url: str, params: dict[str, str]) -> str:
    data = url + "".join(name + value for name, value in sorted(params.items()))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def _url(workspace: str, route: str) -> str:
    return f"{get_settings().public_base_url}/webhooks/twilio/{workspace}/{route}"


def _post(client: Client, workspace: str, route: str, params: dict[str, str], *, token: str = TOKEN,
          url: str | None = None, signature: str | None = None, content_type: str = FORM) -> Any:
    headers = {"Content-Type": content_type}
    sign = signature if signature is not None else _sign(token, url or _url(workspace, route), params)
    if sign:
        headers["X-Twilio-Signature"] = sign
    return client.http.post(f"/webhooks/twilio/{workspace}/{route}", body=urlencode(params).encode(),
                            headers=headers)


def _status(call_sid: str, status: str, *, account: str = ACCOUNT, direction: str = "inbound",
            duration: str | None = None) -> dict[str, str]:
    """Twilio's call status callback (twilio_call_status.form) for this call, between CALLER and OUR_NUMBER."""
    params = {**load_event("twilio_call_status.form"), "AccountSid": account, "CallSid": call_sid,
              "CallStatus": status, "Direction": direction, "From": CALLER, "To": OUR_NUMBER, "Caller": CALLER,
              "Called": OUR_NUMBER, "FromCity": "SAN FRANCISCO",
              "CallerName": "  Kerry & Co = ü+ "}  # spaces, & = + and non-ASCII: signed decoded, sent encoded
    if duration is not None:
        params["CallDuration"] = duration
    return params


def _recording(call_sid: str, recording_sid: str, fake: FakeTwilio, *, account: str = ACCOUNT,
               status: str = "completed") -> dict[str, str]:
    """Twilio's recording status callback (twilio_recording_status.form), the recording at the fake Twilio."""
    return {**load_event("twilio_recording_status.form"), "AccountSid": account, "CallSid": call_sid,
            "RecordingSid": recording_sid, "RecordingUrl": fake.recording_url(recording_sid, account),
            "RecordingStatus": status, "RecordingDuration": "7", "RecordingChannels": "1",
            "RecordingSource": "DialVerb"}


def _transcription(call_sid: str, transcription_sid: str, text: str = TRANSCRIPT) -> dict[str, str]:
    """Twilio's transcription callback (twilio_transcription.form) of a call from CALLER."""
    return {**load_event("twilio_transcription.form"), "AccountSid": ACCOUNT, "CallSid": call_sid,
            "TranscriptionSid": transcription_sid, "TranscriptionText": text, "TranscriptionStatus": "completed",
            "RecordingSid": _sid("RE"), "From": CALLER, "Caller": CALLER, "To": OUR_NUMBER, "Called": OUR_NUMBER}


def _workspace(api: Client, outbox: Outbox, *, account: str = ACCOUNT, token: str = TOKEN,
               label: str = "owner") -> tuple[Browser, str]:
    owner = sign_in(api, fresh_address(label), outbox)
    workspace = create_workspace(api, owner)["id"]
    response = call(api, "PUT", f"/workspaces/{workspace}/integrations/twilio", owner,
                    {"account_sid": account, "auth_token": token})
    assert response.status_code == 200, response.body
    return owner, workspace


def _opt_in(api: Client, owner: Browser, workspace: str, *, recording: bool, transcription: bool) -> None:
    response = call(api, "PUT", f"/workspaces/{workspace}/settings/telephony", owner,
                    {"recording_enabled": recording, "transcription_enabled": transcription})
    assert response.status_code == 200, response.body


def _rows(db: TestDatabase, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with db.admin() as conn:
        return conn.execute(query, params).fetchall()


def _rejections(db: TestDatabase) -> dict[str, int]:
    rows = _rows(db, "SELECT reason, count FROM webhook_rejections WHERE provider = 'twilio'")
    return {str(reason): int(count) for reason, count in rows}


def _recording_blobs(workspace: str) -> list[str]:
    return get_blobs().list(f"tenants/{workspace}/recordings")


# ---- callbacks: signature, tenant, idempotency ----


def test_status_callbacks_make_one_call_with_the_callers_contact(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, logs: io.StringIO) -> None:
    owner, workspace = _workspace(api, outbox)
    call_sid = _sid("CA")
    ringing = _post(api, workspace, "calls", _status(call_sid, "ringing"))
    assert ringing.status_code == 200, ringing.body
    assert ringing.headers["Content-Type"] == "text/xml"
    assert ringing.body.decode().endswith("<Response/>")
    # "in-progress" arrives late, after "completed"; the repeated "ringing" is a redelivery.
    for status, duration in (("completed", "42"), ("in-progress", None), ("ringing", None)):
        assert _post(api, workspace, "calls", _status(call_sid, status, duration=duration)).status_code == 200
    worker.drain()
    listed = body_of(call(api, "GET", f"/workspaces/{workspace}/calls", owner))
    assert len(listed["data"]) == 1 and listed["next_cursor"] is None
    found = listed["data"][0]
    assert (found["call_sid"], found["direction"], found["from_number"], found["to_number"]) == (
        call_sid, "in", CALLER, OUR_NUMBER)
    assert (found["status"], found["duration_s"]) == ("completed", 42)  # the late "in-progress" did not win
    assert found["recording_enabled"] is False and found["transcription_enabled"] is False
    contact = body_of(call(api, "GET", f"/workspaces/{workspace}/contacts/{found['contact_id']}", owner))
    assert contact["phone"] == CALLER  # the caller, never our own number
    assert _rows(fresh_db, "SELECT count(*) FROM contacts") == [(1,)]
    filtered = f"/workspaces/{workspace}/calls?status=completed&contact_id={found['contact_id']}"
    assert [c["id"] for c in body_of(call(api, "GET", filtered, owner))["data"]] == [found["id"]]
    assert body_of(call(api, "GET", f"/workspaces/{workspace}/calls?status=busy", owner))["data"] == []
    problem(call(api, "GET", f"/workspaces/{workspace}/calls?status=nope", owner), 400)
    problem(call(api, "GET", f"/workspaces/{workspace}/calls?created_after=2030-01-01T00:00:00Z", owner), 400)
    # Only the fields processing needs are stored (no caller city, no caller name).
    payloads = [r[0] for r in _rows(fresh_db, "SELECT payload FROM inbound_events")]
    assert len(payloads) == 3 and not any("FromCity" in p or "CallerName" in p for p in payloads)
    assert CALLER_DIGITS not in logs.getvalue() and "Kerry" not in logs.getvalue()


def test_an_outbound_call_matches_the_called_party(api: Client, outbox: Outbox, worker: LocalQueue) -> None:
    owner, workspace = _workspace(api, outbox)
    params = {**_status(_sid("CA"), "completed", direction="outbound-api", duration="3"),
              "From": OUR_NUMBER, "To": CALLER}
    assert _post(api, workspace, "calls", params).status_code == 200
    worker.drain()
    found = body_of(call(api, "GET", f"/workspaces/{workspace}/calls", owner))["data"][0]
    assert (found["direction"], found["from_number"], found["to_number"]) == ("out", OUR_NUMBER, CALLER)
    contact = body_of(call(api, "GET", f"/workspaces/{workspace}/contacts/{found['contact_id']}", owner))
    assert contact["phone"] == CALLER


def test_the_signed_url_is_the_public_one_with_or_without_the_default_port(
        api: Client, outbox: Outbox, env: Callable[..., None], fresh_db: TestDatabase) -> None:
    _owner, workspace = _workspace(api, outbox)
    env(public_base_url="https://crm.example.test")
    path = f"/webhooks/twilio/{workspace}/calls"
    for url in (f"https://crm.example.test{path}", f"https://crm.example.test:443{path}"):
        assert _post(api, workspace, "calls", _status(_sid("CA"), "ringing"), url=url).status_code == 200
    # What the Host header or the raw API Gateway stage URL would give is not what Twilio was told to sign.
    for url in (f"http://127.0.0.1:8000{path}", f"https://abc123.execute-api.eu-west-1.amazonaws.com/api{path}",
                f"https://crm.example.test:8443{path}"):
        problem(_post(api, workspace, "calls", _status(_sid("CA"), "ringing"), url=url), 401)
    assert _rows(fresh_db, "SELECT count(*) FROM inbound_events") == [(2,)]
    assert _rejections(fresh_db) == {"bad_signature": 3}


def test_tampered_unsigned_or_misrouted_callbacks_are_401_and_store_nothing(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    _owner, workspace = _workspace(api, outbox)
    params = _status(_sid("CA"), "ringing")
    signature = _sign(TOKEN, _url(workspace, "calls"), params)
    problem(_post(api, workspace, "calls", {**params, "From": "+14155550199"}, signature=signature), 401)
    problem(_post(api, workspace, "calls", {**params, "Extra": "x"}, signature=signature), 401)
    problem(_post(api, workspace, "calls", params, signature=""), 401)  # no header at all
    problem(_post(api, workspace, "calls", params, signature="bm90IGEgc2lnbmF0dXJl"), 401)
    # Signed for another route of the same workspace.
    problem(_post(api, workspace, "calls", params, url=_url(workspace, "recordings")), 401)
    problem(_post(api, workspace, "calls", params, token=uuid.uuid4().hex), 401)
    assert _rows(fresh_db, "SELECT count(*) FROM inbound_events") == [(0,)]
    assert _rejections(fresh_db) == {"bad_signature": 6}


def test_another_workspaces_token_or_account_is_refused(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    _owner, workspace = _workspace(api, outbox, label="a")
    other_account, other_token = "AC" + uuid.uuid4().hex, uuid.uuid4().hex
    _other_owner, other = _workspace(api, outbox, account=other_account, token=other_token, label="b")
    call_sid = _sid("CA")
    # Signed with B's token, posted to A's URL (over A's URL, too).
    problem(_post(api, workspace, "calls", _status(call_sid, "ringing", account=other_account),
                  token=other_token), 401)
    # Correctly signed with A's token, but the payload is B's account (W08).
    problem(_post(api, workspace, "calls", _status(call_sid, "ringing", account=other_account)), 401)
    # A's genuine callback sent to B's URL.
    problem(_post(api, other, "calls", _status(call_sid, "ringing"), url=_url(workspace, "calls")), 401)
    # A workspace without Twilio credentials, an unknown workspace, no workspace id at all.
    bare_owner = sign_in(api, fresh_address("bare"), outbox)
    bare = create_workspace(api, bare_owner)["id"]
    problem(_post(api, bare, "calls", _status(call_sid, "ringing")), 401)
    problem(_post(api, str(uuid.uuid4()), "calls", _status(call_sid, "ringing")), 404)
    problem(_post(api, "not-a-workspace", "calls", _status(call_sid, "ringing")), 404)
    assert _rows(fresh_db, "SELECT count(*) FROM inbound_events") == [(0,)]
    assert _rejections(fresh_db) == {"bad_signature": 2, "foreign_account": 1, "no_credentials": 1,
                                     "unknown_workspace": 2}


def test_malformed_or_wrongly_typed_callbacks_are_refused_and_counted(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    _owner, workspace = _workspace(api, outbox)
    no_call = {k: v for k, v in _status(_sid("CA"), "ringing").items() if k != "CallSid"}
    problem(_post(api, workspace, "calls", no_call), 400)
    problem(_post(api, workspace, "calls", _status(_sid("CA"), "exploded")), 400)
    problem(_post(api, workspace, "calls", _status("CA-not-a-sid", "ringing")), 400)
    problem(_post(api, workspace, "recordings", {"AccountSid": ACCOUNT, "CallSid": _sid("CA"),
                                                 "RecordingSid": "RE../../etc"}), 400)
    raw = b"CallSid=%ff%fe"
    bad_utf8 = api.http.post(f"/webhooks/twilio/{workspace}/calls", body=raw,
                             headers={"Content-Type": FORM, "X-Twilio-Signature": "x"})
    problem(bad_utf8, 400)
    params = _status(_sid("CA"), "ringing")
    as_json = api.http.post(f"/webhooks/twilio/{workspace}/calls", body=json.dumps(params).encode(),
                            headers={"Content-Type": "application/json",
                                     "X-Twilio-Signature": _sign(TOKEN, _url(workspace, "calls"), params)})
    problem(as_json, 415)
    anything = api.http.post(f"/webhooks/twilio/{workspace}/calls", body=urlencode(params).encode(),
                             headers={"Content-Type": "*/*",
                                      "X-Twilio-Signature": _sign(TOKEN, _url(workspace, "calls"), params)})
    problem(anything, 415)  # Chalice lets */* through to the view, which refuses it
    assert _rows(fresh_db, "SELECT count(*) FROM inbound_events") == [(0,)]
    assert _rejections(fresh_db) == {"malformed": 5, "content_type": 1}


def test_replayed_and_concurrent_duplicate_callbacks_make_one_call(
        outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, app_db: object) -> None:
    from chalicelib.db.pool import Database, use_database

    pool = Database(fresh_db.app_url, size=8)
    use_database(pool, "app")
    try:
        with Client(app_module.app) as api:
            _owner, workspace = _workspace(api, outbox)
            call_sid = _sid("CA")
            params = _status(call_sid, "ringing")
            statuses: list[int] = []

            def deliver() -> None:
                with Client(app_module.app) as own:
                    statuses.append(_post(own, workspace, "calls", params).status_code)

            threads = [threading.Thread(target=deliver) for _ in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for _ in range(3):  # replays, later
                assert _post(api, workspace, "calls", params).status_code == 200
            worker.drain()
    finally:
        pool.close()
    assert statuses == [200] * 10
    assert _rows(fresh_db, "SELECT count(*) FROM inbound_events") == [(1,)]
    assert _rows(fresh_db, "SELECT count(*) FROM calls") == [(1,)]
    assert _rows(fresh_db, "SELECT count(*) FROM contacts") == [(1,)]


# ---- opt-in: recordings and transcripts ----


def test_recording_of_a_call_that_did_not_opt_in_is_deleted_at_twilio_and_stores_nothing(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, fake_twilio: FakeTwilio) -> None:
    owner, workspace = _workspace(api, outbox)
    call_sid, recording_sid = _sid("CA"), _sid("RE")
    assert _post(api, workspace, "calls", _status(call_sid, "ringing")).status_code == 200
    worker.drain()
    response = _post(api, workspace, "recordings", _recording(call_sid, recording_sid, fake_twilio))
    assert response.status_code == 204, response.body
    worker.drain()
    assert fake_twilio.methods() == ["DELETE"]  # never fetched
    _method, path, auth = fake_twilio.requests[0]
    assert path == f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{recording_sid}.json"
    assert auth == "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert _rows(fresh_db, "SELECT count(*) FROM attachments") == [(0,)]
    assert _recording_blobs(workspace) == []
    call_id = body_of(call(api, "GET", f"/workspaces/{workspace}/calls", owner))["data"][0]["id"]
    detail = body_of(call(api, "GET", f"/workspaces/{workspace}/calls/{call_id}", owner))
    assert detail["recording"] is None and detail["recording_enabled"] is False
    assert _rows(fresh_db, "SELECT processed_at IS NOT NULL, last_error FROM inbound_events"
                           " WHERE kind = 'recording'") == [(True, None)]


def test_recording_is_fetched_into_the_blob_store_when_on_before_the_call(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, fake_twilio: FakeTwilio) -> None:
    owner, workspace = _workspace(api, outbox)
    _opt_in(api, owner, workspace, recording=True, transcription=False)
    call_sid, recording_sid = _sid("CA"), _sid("RE")
    assert _post(api, workspace, "calls", _status(call_sid, "ringing")).status_code == 200
    worker.drain()
    # An "in-progress" recording callback first: nothing to fetch yet (and it does not hide the "completed" one).
    assert _post(api, workspace, "recordings", _recording(call_sid, recording_sid, fake_twilio,
                                                          status="in-progress")).status_code == 204
    for _ in range(2):  # the second is a redelivery
        assert _post(api, workspace, "recordings", _recording(call_sid, recording_sid, fake_twilio)).status_code == 204
    worker.drain()
    # Fetched once, then deleted at Twilio: our copy is the only one, so deletion reaches every copy.
    assert fake_twilio.methods() == ["GET", "DELETE"]
    _method, path, auth = fake_twilio.requests[0]
    assert path == f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{recording_sid}.mp3"
    assert fake_twilio.requests[1][1] == f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{recording_sid}.json"
    assert auth == "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    key = f"tenants/{workspace}/recordings/{recording_sid}.mp3"
    assert _recording_blobs(workspace) == [key]
    with get_blobs().open(key) as stored:
        assert stored.read() == fake_twilio.media
    call_id = body_of(call(api, "GET", f"/workspaces/{workspace}/calls", owner))["data"][0]["id"]
    detail = body_of(call(api, "GET", f"/workspaces/{workspace}/calls/{call_id}", owner))
    assert detail["recording_enabled"] is True
    recording = detail["recording"]
    assert (recording["content_type"], recording["size"], recording["sha256"]) == (
        "audio/mpeg", len(fake_twilio.media), hashlib.sha256(fake_twilio.media).hexdigest())
    assert _rows(fresh_db, "SELECT call_id::text, blob_key FROM attachments") == [(call_id, key)]
    # The audio itself: a short-lived link for members, then the bytes from the link alone.
    download = link_for(api, owner, workspace, recording["id"])
    assert (download["sha256"], download["size"], download["filename"]) == (
        recording["sha256"], recording["size"], f"{recording_sid}.mp3")
    assert follow(api, download["url"]).body == fake_twilio.media


def test_turning_recording_on_after_the_call_started_stores_nothing_for_that_call(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, fake_twilio: FakeTwilio) -> None:
    owner, workspace = _workspace(api, outbox)
    call_sid, recording_sid = _sid("CA"), _sid("RE")
    assert _post(api, workspace, "calls", _status(call_sid, "ringing")).status_code == 200
    worker.drain()
    _opt_in(api, owner, workspace, recording=True, transcription=True)
    assert _post(api, workspace, "calls", _status(call_sid, "completed", duration="9")).status_code == 200
    assert _post(api, workspace, "recordings", _recording(call_sid, recording_sid, fake_twilio)).status_code == 204
    assert _post(api, workspace, "transcriptions", _transcription(call_sid, _sid("TR"))).status_code == 204
    worker.drain()
    assert fake_twilio.methods() == ["DELETE"]
    assert _rows(fresh_db, "SELECT count(*) FROM attachments") == [(0,)]
    assert _recording_blobs(workspace) == []
    assert _rows(fresh_db, "SELECT recording_enabled, transcription_enabled, transcript, status FROM calls") == [
        (False, False, None, "completed")]
    assert TRANSCRIPT not in json.dumps([r[0] for r in _rows(fresh_db, "SELECT payload FROM inbound_events")])


def test_transcripts_are_kept_only_when_on_before_the_call(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, logs: io.StringIO) -> None:
    owner, workspace = _workspace(api, outbox)
    off_call = _sid("CA")
    assert _post(api, workspace, "calls", _status(off_call, "ringing")).status_code == 200
    worker.drain()
    _opt_in(api, owner, workspace, recording=False, transcription=True)
    on_call = _sid("CA")
    assert _post(api, workspace, "calls", _status(on_call, "ringing")).status_code == 200
    worker.drain()
    for call_sid in (off_call, on_call):
        response = _post(api, workspace, "transcriptions", _transcription(call_sid, _sid("TR")))
        assert response.status_code == 204, response.body
    worker.drain()
    transcripts = dict(_rows(fresh_db, "SELECT call_sid, transcript FROM calls"))
    assert transcripts == {off_call: None, on_call: TRANSCRIPT}
    on_id = next(c["id"] for c in body_of(call(api, "GET", f"/workspaces/{workspace}/calls", owner))["data"]
                 if c["call_sid"] == on_call)
    assert body_of(call(api, "GET", f"/workspaces/{workspace}/calls/{on_id}", owner))["transcript"] == TRANSCRIPT
    # The text lives in the call that opted in and nowhere else: not in the stored events, not in the logs.
    events = json.dumps([r[0] for r in _rows(fresh_db, "SELECT payload FROM inbound_events")])
    assert TRANSCRIPT not in events
    assert TRANSCRIPT not in logs.getvalue() and CALLER_DIGITS not in logs.getvalue()


def test_a_failed_delete_at_twilio_is_recorded_and_retried_not_lost(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, fake_twilio: FakeTwilio) -> None:
    _owner, workspace = _workspace(api, outbox)
    call_sid, recording_sid = _sid("CA"), _sid("RE")
    fake_twilio.delete_status = 500
    assert _post(api, workspace, "recordings", _recording(call_sid, recording_sid, fake_twilio)).status_code == 204
    worker.drain()
    event = _rows(fresh_db, "SELECT id, processed_at, attempts, last_error FROM inbound_events")
    assert [(e[1], e[2], e[3]) for e in event] == [(None, 1, "TwilioApiError")]
    fake_twilio.delete_status = 404  # already gone counts as deleted
    process_event(uuid.UUID(workspace), event[0][0])
    assert _rows(fresh_db, "SELECT processed_at IS NOT NULL, attempts FROM inbound_events") == [(True, 2)]
    assert fake_twilio.methods() == ["DELETE", "DELETE"]
    assert _rows(fresh_db, "SELECT count(*) FROM attachments") == [(0,)]


def test_an_oversized_recording_is_refused_and_nothing_is_stored(
        api: Client, outbox: Outbox, worker: LocalQueue, fresh_db: TestDatabase, fake_twilio: FakeTwilio,
        env: Callable[..., None]) -> None:
    owner, workspace = _workspace(api, outbox)
    _opt_in(api, owner, workspace, recording=True, transcription=False)
    env(max_media_bytes=1024)
    call_sid, recording_sid = _sid("CA"), _sid("RE")
    assert _post(api, workspace, "calls", _status(call_sid, "ringing")).status_code == 200
    assert _post(api, workspace, "recordings", _recording(call_sid, recording_sid, fake_twilio)).status_code == 204
    worker.drain()
    assert _rows(fresh_db, "SELECT last_error FROM inbound_events WHERE kind = 'recording'") == [("OutboundRefused",)]
    assert _rows(fresh_db, "SELECT count(*) FROM attachments") == [(0,)]
    assert _recording_blobs(workspace) == []


def test_credentials_go_only_to_twilio_hosts() -> None:
    allow = frozenset({"127.0.0.1:8999"})
    assert twilio.rest_base("https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE") == "https://api.twilio.com"
    assert twilio.rest_base("https://api.dublin.ie1.twilio.com/x") == "https://api.dublin.ie1.twilio.com"
    assert twilio.rest_base("http://127.0.0.1:8999/x", allow) == "http://127.0.0.1:8999"
    for hostile in ("https://evil.example/x", "http://api.twilio.com/x", "https://api.twilio.com.evil.example/x",
                    "https://user:pw@api.twilio.com/x", "https://api.twilio.com:8443/x", "https://eviltwilio.com/x",
                    "http://127.0.0.1:8999/x", "https://169.254.169.254/x", "file:///etc/passwd", "", None):
        assert twilio.rest_base(hostile) == twilio.API_BASE, hostile
    with pytest.raises(twilio.MalformedCallback):
        twilio.recording_resource(twilio.API_BASE, ACCOUNT, "RE/../../Calls", "json")


# ---- settings and access ----


def test_settings_default_off_owner_or_admin_only_and_audited(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    owner, workspace = _workspace(api, outbox)
    member = invite_and_join(api, outbox, owner, workspace, fresh_address("member"), "member")
    admin = invite_and_join(api, outbox, owner, workspace, fresh_address("admin"), "admin")
    path = f"/workspaces/{workspace}/settings/telephony"
    assert body_of(call(api, "GET", path, member)) == {"recording_enabled": False, "transcription_enabled": False}
    problem(call(api, "PUT", path, member, {"recording_enabled": True, "transcription_enabled": True}), 403)
    for bad in ({"recording_enabled": "yes", "transcription_enabled": False}, {"recording_enabled": True},
                {"recording_enabled": True, "transcription_enabled": False, "extra": 1}):
        problem(call(api, "PUT", path, owner, bad), 422)
    response = call(api, "PUT", path, admin, {"recording_enabled": True, "transcription_enabled": False})
    assert response.status_code == 200, response.body
    assert body_of(call(api, "GET", path, member)) == {"recording_enabled": True, "transcription_enabled": False}
    _opt_in(api, owner, workspace, recording=False, transcription=True)
    audit = _rows(fresh_db, "SELECT details FROM audit_log WHERE action = 'telephony.updated' ORDER BY occurred_at")
    assert [a[0] for a in audit] == [{"recording_enabled": True, "transcription_enabled": False},
                                     {"recording_enabled": False, "transcription_enabled": True}]


def test_another_workspaces_member_gets_404(api: Client, outbox: Outbox, worker: LocalQueue) -> None:
    owner, workspace = _workspace(api, outbox)
    assert _post(api, workspace, "calls", _status(_sid("CA"), "ringing")).status_code == 200
    worker.drain()
    call_id = body_of(call(api, "GET", f"/workspaces/{workspace}/calls", owner))["data"][0]["id"]
    stranger = sign_in(api, fresh_address("other"), outbox)
    create_workspace(api, stranger, "B")
    for method, path, body in (
            ("GET", f"/workspaces/{workspace}/calls", None),
            ("GET", f"/workspaces/{workspace}/calls/{call_id}", None),
            ("GET", f"/workspaces/{workspace}/settings/telephony", None),
            ("PUT", f"/workspaces/{workspace}/settings/telephony",
             {"recording_enabled": True, "transcription_enabled": True})):
        problem(call(api, method, path, stranger, body), 404)
    problem(call(api, "GET", f"/workspaces/{workspace}/calls/{uuid.uuid4()}", owner), 404)
