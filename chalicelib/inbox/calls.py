"""Calls from Twilio: the telephony opt-in, call rows from status callbacks, recordings and transcripts.

Recording and transcription are off until an owner or admin turns them on. A call copies both flags
from the workspace's settings when it is first seen and keeps them: turning recording on in the
middle of a call does not record that call. A recording of a call without the flag is never stored
and is deleted at Twilio; a transcript of a call without the flag is dropped (also from the stored
event). A call that reaches a final status (completed, busy, failed, no-answer, canceled) emits
call.completed once. Everything here runs in the caller's tenant transaction.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from chalicelib import audit, errors
from chalicelib.blobs import get_blobs
from chalicelib.crm import store
from chalicelib.crm.listing import Filter, ListSpec, parse_choice, parse_uuid, time_sort
from chalicelib.crm.store import Row, Table
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.inbox.conversations import contact_for_phone
from chalicelib.observability import log_event
from chalicelib.outgoing import events
from chalicelib.settings import get_settings

log = logging.getLogger("crm.inbox.calls")
Q = queries.load(__package__)
MAX_NUMBER = 128
MAX_TRANSCRIPT = 100_000
# Call statuses (Twilio's words) in the order a call goes through them; a late callback never moves a
# call backwards.
STATUS_RANK = {"queued": 1, "initiated": 1, "ringing": 2, "in-progress": 3,
               "completed": 4, "busy": 4, "failed": 4, "no-answer": 4, "canceled": 4}
# The rank of the statuses a call ends with: reaching one emits call.completed (a missed call is over too).
FINAL = 4
STATUSES = frozenset({*STATUS_RANK, "unknown"})


class Recordings(Protocol):
    """Where a call's recordings are, at the provider (fetched once, then deleted there)."""

    def fetch(self, recording_sid: str, *, max_bytes: int) -> bytes:
        """The recording's audio (MP3)."""

    def delete(self, recording_sid: str) -> None:
        """Delete the provider's copy (already gone counts as deleted)."""

TABLE = Table(
    name="calls",
    columns=("id", "call_sid", "direction", "from_number", "to_number", "contact_id", "status", "duration_s",
             "recording_enabled", "transcription_enabled", "started_at", "updated_at"),
    listing=ListSpec(
        "calls",
        {"started_at": time_sort("started_at")},
        "started_at",
        {"contact_id": Filter("contact_id", parse_uuid("contact_id")),
         "status": Filter("status", parse_choice("status", STATUSES)),
         "direction": Filter("direction", parse_choice("direction", frozenset({"in", "out"})))},
        search=False, custom_select_filters=False, created_bounds=False),  # started_at, no created_at
)


class TelephonySettings(BaseModel):
    """The workspace's opt-in: both off until an owner or admin turns them on."""

    model_config = ConfigDict(extra="forbid")
    recording_enabled: StrictBool
    transcription_enabled: StrictBool


class CallOut(BaseModel):
    """A call: numbers in E.164 when they are phone numbers; the flags it started with."""

    id: uuid.UUID
    call_sid: str
    direction: Literal["in", "out"] | None
    from_number: str | None
    to_number: str | None
    contact_id: uuid.UUID | None
    status: str
    duration_s: int | None
    recording_enabled: bool
    transcription_enabled: bool
    started_at: datetime
    updated_at: datetime


class RecordingOut(BaseModel):
    """The stored recording's metadata (GET /attachments/{id} gives a download link)."""

    id: uuid.UUID
    filename: str | None
    content_type: str
    size: int
    sha256: str


class CallDetail(CallOut):
    """A call with its recording (when one was stored) and transcript (when one was stored)."""

    recording: RecordingOut | None
    transcript: str | None
    transcript_corrected_at: datetime | None


class TranscriptCorrection(BaseModel):
    """A member's correction of a call's stored transcript (the whole new text)."""

    model_config = ConfigDict(extra="forbid")
    transcript: str = Field(min_length=1, max_length=MAX_TRANSCRIPT)


def out(row: Row) -> CallOut:
    """Row to API shape."""
    return CallOut(**dict(zip(TABLE.columns, row, strict=True)))


def detail(conn: Conn, row: Row) -> CallDetail:
    """The call with its recording and transcript."""
    extra = conn.execute(Q["call_transcript"], (row[0],)).fetchone()
    found = conn.execute(Q["call_recording_latest"], (row[0],)).fetchone()
    recording = (RecordingOut(id=found[0], filename=found[1], content_type=found[2], size=found[3], sha256=found[4])
                 if found else None)
    return CallDetail(**out(row).model_dump(), recording=recording, transcript=extra[0] if extra else None,
                      transcript_corrected_at=extra[1] if extra else None)


def correct_transcript(conn: Conn, *, tenant_id: uuid.UUID, row: Row, text: str, actor: audit.Actor,
                       now: datetime) -> Row:
    """Replace the stored transcript of a call (locked by the caller); audited without the text."""
    current = conn.execute(Q["call_transcript"], (row[0],)).fetchone()
    # Only a transcript that was kept (the call opted in) can be corrected: nothing is added to a call
    # that has none, and a correction written before the provider's text arrived would be overwritten.
    if not row[TABLE.index("transcription_enabled")] or current is None or current[0] is None:
        raise errors.Conflict("this call has no transcript to correct")
    updated = store.update(conn, TABLE, row[0], {"transcript": text, "transcript_corrected_at": now}, now)
    audit.record(conn, tenant_id=tenant_id, action="call.transcript_corrected", actor=actor, target_type="call",
                 target_id=row[0], details={"length": len(text)})
    return updated


# ---- settings ----


def get_telephony_pending(conn: Conn) -> Callable[[], TelephonySettings]:
    """Queue the read of the current opt-in (both false when never set); call the result for it."""
    cursor = conn.execute(Q["telephony_settings_get"])

    def result() -> TelephonySettings:
        row = cursor.fetchone()
        return TelephonySettings(recording_enabled=bool(row and row[0]), transcription_enabled=bool(row and row[1]))
    return result


def put_telephony(conn: Conn, *, tenant_id: uuid.UUID, spec: TelephonySettings, actor: audit.Actor
                  ) -> TelephonySettings:
    """Replace the opt-in; audited "telephony.updated" with the new flags. Calls in progress keep theirs."""
    conn.execute(Q["telephony_settings_put"], (tenant_id, spec.recording_enabled, spec.transcription_enabled))
    audit.record(conn, tenant_id=tenant_id, action="telephony.updated", actor=actor,
                 target_type="telephony_settings", details=spec.model_dump())
    return spec


def transcription_wanted(conn: Conn, call_sid: str) -> bool:
    """Whether a transcript of this call may be kept: the call's flag, or (call not seen yet) the settings'.

    The webhook drops the text before storing the event when not, so it is never written anywhere.
    """
    row = conn.execute(Q["call_transcription_wanted"], (call_sid,)).fetchone()
    return bool(row and row[0])


# ---- processing (called by the Twilio provider in the event's tenant transaction) ----


@dataclass(frozen=True)
class _Call:
    id: uuid.UUID
    status: str
    direction: str | None
    contact_id: uuid.UUID | None
    recording_enabled: bool
    transcription_enabled: bool


def process(conn: Conn, tenant_id: uuid.UUID, event_id: uuid.UUID, kind: str, payload: dict[str, Any],
            recordings: Recordings) -> None:
    """Apply one stored call event (call status, recording or transcription)."""
    call = _call(conn, tenant_id, str(payload["CallSid"]))
    if kind == "call":
        _status(conn, tenant_id, call, payload)
    elif kind == "recording":
        _recording(conn, tenant_id, call, payload, recordings)
    elif kind == "transcription":
        _transcription(conn, call, payload)
        # The text lives on in the call (opted in) or nowhere: never in the stored event.
        conn.execute(Q["inbound_event_drop_transcript"], (event_id,))


def _call(conn: Conn, tenant_id: uuid.UUID, call_sid: str) -> _Call:
    """The call, created on first sight with the opt-in flags of that moment (kept for the call's life)."""
    conn.execute(Q["call_insert_if_new"], (tenant_id, call_sid, tenant_id))
    row = conn.execute(Q["call_lock"], (call_sid,)).fetchone()
    assert row is not None
    return _Call(uuid.UUID(str(row[0])), str(row[1]), row[2], row[3], bool(row[4]), bool(row[5]))


def _number(value: Any) -> tuple[str | None, bool]:
    """(stored form, is a phone number): E.164 when valid, else the raw value (client:…, sip:…, anonymous)."""
    from chalicelib.crm.values import normalize_phone

    text = str(value or "").strip()
    if not text:
        return None, False
    try:
        return normalize_phone(text), True
    except ValueError:  # pydantic's PydanticCustomError is a ValueError
        return text[:MAX_NUMBER], False


def _status(conn: Conn, tenant_id: uuid.UUID, call: _Call, payload: dict[str, Any]) -> None:
    updates: dict[str, Any] = {}
    if call.direction is None:
        raw = str(payload.get("Direction") or "")
        direction = "in" if raw == "inbound" else "out" if raw.startswith("outbound") else None
        source, source_is_phone = _number(payload.get("From"))
        target, target_is_phone = _number(payload.get("To"))
        updates.update(direction=direction, from_number=source, to_number=target)
        # Only the other party is a contact: our own Twilio number is not.
        external, is_phone = (source, source_is_phone) if direction == "in" else (target, target_is_phone)
        if call.contact_id is None and direction is not None and external and is_phone:
            updates["contact_id"] = contact_for_phone(conn, tenant_id, external, None)
    status = str(payload["CallStatus"])
    # Forward only: a late "ringing" after "completed" changes nothing.
    if STATUS_RANK[status] > STATUS_RANK.get(call.status, 0):
        updates["status"] = status
        if payload.get("CallDuration") is not None:
            updates["duration_s"] = int(payload["CallDuration"])
    if not updates:
        return
    assignments = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
                                     for name in sorted(updates))
    conn.execute(sql.SQL("UPDATE calls SET {}, updated_at = now() WHERE id = %(id)s").format(assignments),
                 {**updates, "id": call.id})
    if "status" in updates and STATUS_RANK[updates["status"]] == FINAL:
        # Once per call (statuses only move forward): the call as it ended, its status saying how.
        events.emit_row(conn, tenant_id=tenant_id, event_type="call.completed", table="calls", record_id=call.id)


def _recording(conn: Conn, tenant_id: uuid.UUID, call: _Call, payload: dict[str, Any],
               recordings: Recordings) -> None:
    status = str(payload.get("RecordingStatus") or "completed")
    recording_sid = str(payload["RecordingSid"])
    if not call.recording_enabled:
        if status != "in-progress":  # nothing to delete before the provider has finished it
            recordings.delete(recording_sid)
            log_event(log, "recording deleted at the provider (not opted in)", call_id=str(call.id))
        return
    if status != "completed":
        return
    settings = get_settings()
    key = f"tenants/{tenant_id}/recordings/{recording_sid}.mp3"
    if conn.execute(Q["call_recording_exists"], (call.id, key)).fetchone() is None:
        data = recordings.fetch(recording_sid, max_bytes=settings.max_media_bytes)
        digest = hashlib.sha256(data).hexdigest()
        get_blobs(settings).put_bytes(key, data)
        conn.execute(Q["call_recording_insert"],
                     (tenant_id, call.id, f"{recording_sid}.mp3", len(data), digest, key))
        log_event(log, "recording stored", call_id=str(call.id), size=len(data))
    # Ours is now the only copy: deleting the workspace (or the call) then reaches every copy. On a retry
    # after a failed delete the stored copy is kept and only the delete is repeated.
    recordings.delete(recording_sid)


def _transcription(conn: Conn, call: _Call, payload: dict[str, Any]) -> None:
    text = payload.get("TranscriptionText")
    if not call.transcription_enabled or payload.get("TranscriptionStatus") != "completed" or text is None:
        return
    conn.execute(Q["call_transcript_set"], (str(text), call.id))
