"""Twilio Voice callbacks: what a (signature-checked) form body holds, and the REST calls made back.

Three callbacks per workspace: call status (`/calls`, also usable as the Voice URL: it answers empty
TwiML), recording status (`/recordings`) and transcription (`/transcriptions`). Each keeps only the
fields processing needs (data minimisation: no caller city, no SIP headers) and gets a provider id so
a redelivery is recognised. Recordings are fetched or deleted through Twilio's REST API with the
workspace's credentials, only on Twilio's own hosts (or a local fake server allow-listed for tests).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from chalicelib import outbound
from chalicelib.vault.providers import TwilioCredentials

API_BASE = "https://api.twilio.com"
FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 200
MAX_TEXT = 100_000
# Route segment -> event kind.
KINDS = {"calls": "call", "recordings": "recording", "transcriptions": "transcription"}
# Call statuses in the order a call goes through them; a late callback never moves a call backwards.
STATUS_RANK = {"queued": 1, "initiated": 1, "ringing": 2, "in-progress": 3,
               "completed": 4, "busy": 4, "failed": 4, "no-answer": 4, "canceled": 4}
RECORDING_STATUSES = frozenset({"in-progress", "completed", "absent", "failed"})
TRANSCRIPTION_STATUSES = frozenset({"completed", "failed"})
_SID = {prefix: re.compile(rf"^{prefix}[0-9a-fA-F]{{32}}$") for prefix in ("AC", "CA", "RE", "TR")}
# Fields kept per kind (everything else Twilio sends is dropped before storage).
_KEEP = {
    "call": ("CallSid", "CallStatus", "Direction", "From", "To", "CallDuration"),
    "recording": ("CallSid", "RecordingSid", "RecordingUrl", "RecordingStatus", "RecordingDuration"),
    "transcription": ("CallSid", "TranscriptionSid", "TranscriptionStatus", "TranscriptionText"),
}


class MalformedCallback(ValueError):
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
        if payload.get("CallStatus") not in STATUS_RANK:
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
