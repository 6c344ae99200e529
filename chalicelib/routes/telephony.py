"""Telephony: the recording/transcription opt-in and the calls (Twilio's callbacks arrive in routes/webhooks.py)."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib import clock
from chalicelib.auth.principal import parse_id, workspace_read, workspace_scope
from chalicelib.crm import store
from chalicelib.crm.api import Page
from chalicelib.crm.listing import list_parameters
from chalicelib.http import endpoint, json_response
from chalicelib.inbox import calls
from chalicelib.inputs import if_match, parse_body
from chalicelib.routes.lists import page_response

bp = Blueprint(__name__)
WS = "/workspaces/{workspace_id}"
TAGS = ("telephony",)


class CallList(Page[calls.CallOut]):
    """Calls of the workspace, newest first."""


@endpoint(bp, WS + "/settings/telephony", "GET", summary="The call recording/transcription opt-in",
          response_model=calls.TelephonySettings, errors_=(401, 404), tags=TAGS)
def get_telephony_settings(workspace_id: str) -> Response:
    """Both off until an owner or admin turns them on."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        found = calls.get_telephony_pending(conn)
    return json_response(found())


@endpoint(bp, WS + "/settings/telephony", "PUT", summary="Turn call recording/transcription on or off (owner/admin)",
          request_model=calls.TelephonySettings, response_model=calls.TelephonySettings, errors_=(401, 403, 404),
          tags=TAGS)
def put_telephony_settings(workspace_id: str) -> Response:
    """Applies to calls that start afterwards; audited "telephony.updated"."""
    request = bp.current_request
    body = parse_body(request, calls.TelephonySettings)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        saved = calls.put_telephony(conn, tenant_id=parse_id(workspace_id), spec=body, actor=principal.actor)
    return json_response(saved)


@endpoint(bp, WS + "/calls", "GET", summary="Calls, newest first", response_model=CallList,
          errors_=(400, 401, 404), tags=TAGS, parameters=list_parameters(calls.TABLE.listing))
def list_calls(workspace_id: str) -> Response:
    """Filters contact_id, status, direction; paged like the CRM lists."""
    return page_response(bp.current_request, workspace_id, calls.TABLE, calls.out)


@endpoint(bp, WS + "/calls/{call_id}", "GET", summary="A call with its recording and transcript (when stored)",
          response_model=calls.CallDetail, errors_=(401, 404), tags=TAGS)
def get_call(workspace_id: str, call_id: str) -> Response:
    """Recording metadata only (with its sha256 and size): GET /attachments/{id} gives a link to the audio."""
    with workspace_scope(bp.current_request, workspace_id) as (conn, _principal):
        row = store.require(conn, calls.TABLE, parse_id(call_id))
        found = calls.detail(conn, row)
    return json_response(found, headers={"ETag": store.etag(row, calls.TABLE)})


@endpoint(bp, WS + "/calls/{call_id}", "PATCH", summary="Correct a call's stored transcript",
          description="Only a transcript that was kept (the call opted in to transcription) can be corrected: 409 "
                      "otherwise. The call's other fields are what the provider reported and are not editable. "
                      "Honours If-Match; audited \"call.transcript_corrected\" (without the text).",
          request_model=calls.TranscriptCorrection, response_model=calls.CallDetail,
          errors_=(400, 401, 404, 409, 412, 422), tags=TAGS, etag=True)
def correct_transcript(workspace_id: str, call_id: str) -> Response:
    """The corrected call, with its new ETag and `transcript_corrected_at`."""
    request = bp.current_request
    body = parse_body(request, calls.TranscriptCorrection)
    record = parse_id(call_id)
    with workspace_scope(request, workspace_id) as (conn, principal):
        existing = store.require_for_update(conn, calls.TABLE, record)
        store.check_version(if_match(request), existing, calls.TABLE)
        row = calls.correct_transcript(conn, tenant_id=parse_id(workspace_id), row=existing, text=body.transcript,
                                       actor=principal.actor, now=clock.now())
        found = calls.detail(conn, row)
    return json_response(found, headers={"ETag": store.etag(row, calls.TABLE)})
