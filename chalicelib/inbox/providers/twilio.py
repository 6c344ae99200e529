"""Twilio Voice: signed callbacks, what their form bodies hold, their processing, and the REST calls back.

Three callbacks per workspace: call status (`/calls`, also usable as the Voice URL: it answers empty
TwiML), recording status (`/recordings`) and transcription (`/transcriptions`). Each keeps only the
fields processing needs (data minimisation: no caller city, no SIP headers) and gets a provider id so
a redelivery is recognised. Recordings are fetched or deleted through Twilio's REST API with the
workspace's credentials, only on Twilio's own hosts (or a local fake server allow-listed for tests).
The callbacks' URL names the workspace, whose Twilio credentials (from the vault) sign them: there are
no channels, and Twilio has no replies here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from chalicelib import errors, outbound
from chalicelib.db.types import Conn
from chalicelib.inbox import calls, webhook_records
from chalicelib.inbox.providers.base import Delivery, Event, Reply, Sent, StoredEvent
from chalicelib.inbox.refusals import BadSignature, ForeignSender, Malformed, UnknownSource, UnsupportedContent
from chalicelib.settings import get_settings
from chalicelib.vault.envelope import CredentialIntegrityError
from chalicelib.vault.providers import TwilioCredentials
from chalicelib.vault.store import get_credentials

API_BASE = "https://api.twilio.com"
FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 200
MAX_TEXT = 100_000
# Route segment -> event kind.
KINDS = {"calls": "call", "recordings": "recording", "transcriptions": "transcription"}
RECORDING_STATUSES = frozenset({"in-progress", "completed", "absent", "failed"})
TRANSCRIPTION_STATUSES = frozenset({"completed", "failed"})
_SID = {prefix: re.compile(rf"^{prefix}[0-9a-fA-F]{{32}}$") for prefix in ("AC", "CA", "RE", "TR")}
# Fields kept per kind (everything else Twilio sends is dropped before storage).
_KEEP = {
    "call": ("CallSid", "CallStatus", "Direction", "From", "To", "CallDuration"),
    "recording": ("CallSid", "RecordingSid", "RecordingUrl", "RecordingStatus", "RecordingDuration"),
    "transcription": ("CallSid", "TranscriptionSid", "TranscriptionStatus", "TranscriptionText"),
}


class MalformedCallback(Malformed):
    """The body is not a Twilio callback of the route's kind (the message is a fixed word)."""


class TwilioApiError(RuntimeError):
    """Twilio's REST API answered something unexpected (the message holds the status code only)."""


@dataclass(frozen=True)
class Callback:
    """One callback: its kind, provider event id, the account it claims, and the kept fields."""

    kind: str
    event_id: str
    account_sid: str
    payload: dict[str, str]


def parse_form(raw: bytes) -> dict[str, list[str]]:
    """The form fields of an x-www-form-urlencoded body (MalformedCallback when it is not one).

    Only parsed so that the signature can be computed over the parameters; nothing else is done with
    them before the signature is verified.
    """
    try:
        text = raw.decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise MalformedCallback("form") from None


def is_sid(value: str | None, prefix: str) -> bool:
    """Whether `value` is a Twilio SID of this type (AC, CA, RE, TR + 32 hex digits)."""
    return value is not None and _SID[prefix].match(value) is not None


def _one(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    if not values:
        return None
    if len(values) != 1:
        raise MalformedCallback("repeated")
    return values[0]


def callback(route: str, form: dict[str, list[str]]) -> Callback:
    """The callback a verified form body carries for the route segment (calls/recordings/transcriptions)."""
    kind = KINDS[route]
    account = _one(form, "AccountSid")
    if not is_sid(account, "AC") or not is_sid(_one(form, "CallSid"), "CA"):
        raise MalformedCallback("sids")
    assert account is not None
    payload = {name: value for name in _KEEP[kind] if (value := _one(form, name)) is not None}
    if any(len(value) > MAX_TEXT for value in payload.values()):
        raise MalformedCallback("size")
    if kind == "call":
        if payload.get("CallStatus") not in calls.STATUS_RANK:
            raise MalformedCallback("status")
        duration = payload.get("CallDuration")
        if duration is not None and not (duration.isascii() and duration.isdigit() and len(duration) <= 9):
            raise MalformedCallback("duration")
        event_id = f"{payload['CallSid']}:{payload['CallStatus']}"
    elif kind == "recording":
        # A callback without a status (the <Record> verb's action) is a finished recording.
        payload.setdefault("RecordingStatus", "completed")
        if not is_sid(payload.get("RecordingSid"), "RE") or payload["RecordingStatus"] not in RECORDING_STATUSES:
            raise MalformedCallback("recording")
        # One event per recording and status: "in-progress" must not swallow the later "completed".
        event_id = f"{payload['RecordingSid']}:{payload['RecordingStatus']}"
    else:
        payload.setdefault("TranscriptionStatus", "completed")
        if (not is_sid(payload.get("TranscriptionSid"), "TR")
                or payload["TranscriptionStatus"] not in TRANSCRIPTION_STATUSES):
            raise MalformedCallback("transcription")
        event_id = payload["TranscriptionSid"]
    return Callback(kind, event_id, account, payload)


def rest_base(recording_url: str | None, allow: frozenset[str] = frozenset()) -> str:
    """The REST origin to call about a recording: the RecordingUrl's when it is Twilio's, else API_BASE.

    Twilio's (regional) API hosts are https on *.twilio.com; a host:port on the outbound allow list (a
    local fake server in tests, refused in prod) is accepted too. Only the origin is taken from the
    payload: the path is always built from the verified account and recording SIDs, so credentials
    are never sent to another host nor used on another resource.
    """
    if not recording_url:
        return API_BASE
    parts = urlsplit(recording_url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme, 0)
    except ValueError:
        return API_BASE
    if not host or parts.username is not None or parts.password is not None:
        return API_BASE
    if f"{host}:{port}" in allow and parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{host}:{port}"
    if parts.scheme == "https" and port == 443 and re.fullmatch(r"(?:[a-z0-9-]+\.)*twilio\.com", host):
        return f"https://{host}"
    return API_BASE


def recording_resource(base: str, account_sid: str, recording_sid: str, extension: str) -> str:
    """`{base}/2010-04-01/Accounts/{AccountSid}/Recordings/{RecordingSid}.{extension}` (SIDs checked)."""
    if not (is_sid(account_sid, "AC") and is_sid(recording_sid, "RE")):
        raise MalformedCallback("sids")
    return f"{base}/2010-04-01/Accounts/{account_sid}/Recordings/{recording_sid}.{extension}"


def _auth(credentials: TwilioCredentials) -> dict[str, str]:
    pair = f"{credentials.account_sid}:{credentials.auth_token.get_secret_value()}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def delete_recording(credentials: TwilioCredentials, recording_sid: str, *, base: str = API_BASE,
                     allow: frozenset[str] = frozenset()) -> None:
    """Delete a recording at Twilio (already gone, 404, counts as deleted)."""
    url = recording_resource(base, credentials.account_sid, recording_sid, "json")
    response = outbound.request("DELETE", url, headers=_auth(credentials), max_bytes=64 * 1024, allow=allow)
    if response.status not in (200, 204, 404):
        raise TwilioApiError(f"recording delete answered {response.status}")


def fetch_recording(credentials: TwilioCredentials, recording_sid: str, *, max_bytes: int, base: str = API_BASE,
                    allow: frozenset[str] = frozenset()) -> bytes:
    """The recording's MP3 (size-capped, no redirects followed: outbound.request refuses them)."""
    url = recording_resource(base, credentials.account_sid, recording_sid, "mp3")
    response = outbound.request("GET", url, headers={**_auth(credentials), "Accept": "audio/mpeg"},
                                max_bytes=max_bytes, allow=allow)
    content_type = next((v for k, v in response.headers.items() if k.lower() == "content-type"), "")
    if response.status != 200 or not response.body or not content_type.lower().startswith("audio/"):
        raise TwilioApiError(f"recording fetch answered {response.status}")
    return response.body


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Base64 HMAC-SHA1 of the URL followed by every POST parameter, sorted by name, as name + value."""
    payload = url + "".join(f"{name}{value}" for name, value in sorted(params, key=lambda p: (p[0], p[1])))
    return base64.b64encode(hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def _port_variants(url: str) -> list[str]:
    """The URL as configured, with the default port added, and without it (Twilio signs either form)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    with_port = urlunsplit((parts.scheme, f"{host}:{parts.port or default}", parts.path, parts.query,
                            parts.fragment))
    without = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return list(dict.fromkeys([url, with_port, without]))


def signature_valid(auth_token: str, url: str, params: Mapping[str, list[str]] | Iterable[tuple[str, str]],
                    header: str | None) -> bool:
    """`X-Twilio-Signature` over the public URL (built from PUBLIC_BASE_URL, never from Host) + params."""
    if not header:
        return False
    pairs = [(k, v) for k, values in params.items() for v in values] if isinstance(params, Mapping) else list(params)
    return any(hmac.compare_digest(signature(auth_token, candidate, pairs), header.strip())
               for candidate in _port_variants(url))


@dataclass(frozen=True)
class _Verified:
    form: dict[str, list[str]]
    account_sid: str


class Twilio:
    """The Twilio Voice provider (workspace-level: no channel)."""

    name = "twilio"
    channel_type: str | None = None

    def screen(self, delivery: Delivery) -> dict[str, list[str]]:
        """A workspace id that parses, the form media type (Chalice lets */* through), a form that parses."""
        if delivery.tenant is None:
            raise UnknownSource(reason="unknown_workspace")
        if delivery.media_type != FORM:
            raise UnsupportedContent()
        # Parsed only because the signature covers the parameters; used for nothing else until verified.
        return parse_form(delivery.raw)

    def verify(self, conn: Conn, delivery: Delivery, screened: object) -> _Verified:
        """X-Twilio-Signature with the workspace's auth token (vault), over the URL Twilio was given."""
        assert delivery.tenant is not None and isinstance(screened, dict)
        webhook_records.require_live_workspace(conn, delivery.tenant)
        try:
            credentials = get_credentials(conn, tenant_id=delivery.tenant, provider="twilio")
        except (errors.NotFound, CredentialIntegrityError):
            raise BadSignature(reason="no_credentials") from None
        if not signature_valid(credentials.auth_token.get_secret_value(), delivery.url, screened,
                               delivery.header("x-twilio-signature")):
            raise BadSignature()
        return _Verified(screened, credentials.account_sid)

    def events(self, conn: Conn, delivery: Delivery, verified: object) -> list[Event]:
        """The callback's one event; a transcript the call did not opt into is dropped before storage."""
        assert isinstance(verified, _Verified)
        item = callback(delivery.route, verified.form)
        # A valid signature does not prove the tenant on its own: the account must be this workspace's.
        if item.account_sid != verified.account_sid:
            raise ForeignSender(reason="foreign_account")
        payload: dict[str, Any] = dict(item.payload)
        if item.kind == "transcription" and not calls.transcription_wanted(conn, item.payload["CallSid"]):
            payload.pop("TranscriptionText", None)  # not opted in: the text is never written anywhere
        return [Event(item.kind, item.event_id, payload)]

    def stored(self, conn: Conn, delivery: Delivery, verified: object, new: list[uuid.UUID]) -> None:
        """Nothing more to keep: recordings are fetched by the worker."""

    def process(self, conn: Conn, event: StoredEvent) -> None:
        """A call's status, recording or transcript (chalicelib.inbox.calls), recordings fetched from here."""
        calls.process(conn, event.tenant, event.id, event.kind, event.payload,
                      _Recordings(conn, event.tenant, event.payload.get("RecordingUrl")))

    def send_reply(self, reply: Reply, body: str) -> Sent:
        """Calls have no replies."""
        raise NotImplementedError("Twilio calls have no replies")


PROVIDER = Twilio()


class _Recordings:
    """A call's recordings at Twilio, reached with the workspace's credentials (loaded on first use)."""

    def __init__(self, conn: Conn, tenant: uuid.UUID, recording_url: str | None) -> None:
        self._conn, self._tenant = conn, tenant
        self._allow = get_settings().outbound_allow
        self._base = rest_base(recording_url, self._allow)
        self._credentials: TwilioCredentials | None = None

    def _loaded(self) -> TwilioCredentials:
        if self._credentials is None:
            self._credentials = get_credentials(self._conn, tenant_id=self._tenant, provider="twilio")
        return self._credentials

    def fetch(self, recording_sid: str, *, max_bytes: int) -> bytes:
        """The recording's MP3."""
        return fetch_recording(self._loaded(), recording_sid, max_bytes=max_bytes, base=self._base,
                               allow=self._allow)

    def delete(self, recording_sid: str) -> None:
        """Delete Twilio's copy."""
        delete_recording(self._loaded(), recording_sid, base=self._base, allow=self._allow)
