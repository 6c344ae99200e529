"""Telephony: the recording/transcription opt-in, calls, and Twilio's signed callbacks."""

from __future__ import annotations

import uuid

from chalice.app import Blueprint, Response

from chalicelib import errors
from chalicelib.auth.principal import parse_id, workspace_read, workspace_scope
from chalicelib.crm import store
from chalicelib.crm.api import Page
from chalicelib.crm.listing import list_parameters, parse_list
from chalicelib.db.tenancy import tenant_tx
from chalicelib.http import endpoint, json_response, parse_body, query_params
from chalicelib.inbox import calls
from chalicelib.inbox.ingest import Rejected, count_rejection, get_queue, store_events
from chalicelib.inbox.providers import twilio
from chalicelib.inbox.providers.signatures import twilio_valid
from chalicelib.settings import get_settings
from chalicelib.vault.envelope import CredentialIntegrityError

bp = Blueprint(__name__)
WS = "/workspaces/{workspace_id}"
TAGS = ("telephony",)
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_REFUSED = {400: errors.BadRequest, 401: errors.Unauthorized, 404: errors.NotFound,
            415: errors.UnsupportedMediaType}


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
    request = bp.current_request
    query = parse_list(calls.TABLE.listing, query_params(request), tenant=parse_id(workspace_id))
    with workspace_read(request, workspace_id) as conn:
        page = store.list_pending(conn, calls.TABLE, query)
    rows, cursor = page()
    return json_response({"data": [calls.out(r) for r in rows], "next_cursor": cursor})


@endpoint(bp, WS + "/calls/{call_id}", "GET", summary="A call with its recording and transcript (when stored)",
          response_model=calls.CallDetail, errors_=(401, 404), tags=TAGS)
def get_call(workspace_id: str, call_id: str) -> Response:
    """Recording metadata only (with its sha256 and size): GET /attachments/{id} gives a link to the audio."""
    with workspace_scope(bp.current_request, workspace_id) as (conn, _principal):
        row = store.require(conn, calls.TABLE, parse_id(call_id))
        found = calls.detail(conn, row)
    return json_response(found, headers={"ETag": store.etag(row, calls.TABLE)})


# ---- Twilio callbacks: no session; X-Twilio-Signature with the workspace's auth token from the vault ----
# The path parameter is the workspace id (the tenant and its secret both come from the route).


def _callback(tenant_id: str, route: str) -> tuple[uuid.UUID, twilio.Callback, bool]:
    """Verify and store one callback: (tenant, callback, stored as new). Rejected on any failure."""
    request = bp.current_request
    try:
        tenant = uuid.UUID(tenant_id)
    except ValueError:
        raise Rejected("unknown_workspace", 404) from None
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != twilio.FORM:  # Chalice lets `*/*` through
        raise Rejected("content_type", 415)
    raw = request.raw_body or b""
    # Parsed only because the signature covers the parameters; used for nothing else until verified.
    form = twilio.parse_form(raw.encode() if isinstance(raw, str) else raw)
    # Twilio signs the URL it was given: ours, from PUBLIC_BASE_URL (never the Host header).
    url = f"{get_settings().public_base_url}/webhooks/twilio/{tenant_id}/{route}"
    with tenant_tx(tenant) as conn:
        workspace = conn.execute("SELECT deleted_at FROM workspaces WHERE id = %s", (tenant,)).fetchone()
        if workspace is None or workspace[0] is not None:
            raise Rejected("unknown_workspace", 404)
        from chalicelib.vault.store import get_credentials

        try:
            credentials = get_credentials(conn, tenant_id=tenant, provider="twilio")
        except (errors.NotFound, CredentialIntegrityError):
            raise Rejected("no_credentials", 401) from None
        if not twilio_valid(credentials.auth_token.get_secret_value(), url, form,
                            request.headers.get("x-twilio-signature")):
            raise Rejected("bad_signature", 401)
        try:
            item = twilio.callback(route, form)
        except twilio.MalformedCallback:
            raise Rejected("malformed", 400) from None
        # A valid signature does not prove the tenant on its own: the account must be this workspace's.
        if item.account_sid != credentials.account_sid:
            raise Rejected("foreign_account", 401)
        payload: dict[str, object] = dict(item.payload)
        if item.kind == "transcription" and not calls.transcription_wanted(conn, item.payload["CallSid"]):
            payload.pop("TranscriptionText", None)  # not opted in: the text is never written anywhere
        new = store_events(conn, tenant_id=tenant, channel_id=None, provider="twilio",
                           events=[(item.kind, item.event_id, payload)])
    if new:
        get_queue().enqueue(tenant, new)
    return tenant, item, bool(new)


def _receive(tenant_id: str, route: str) -> None:
    try:
        _callback(tenant_id, route)
    except twilio.MalformedCallback:
        count_rejection("twilio", "malformed")
        raise errors.BadRequest("the callback was refused") from None
    except Rejected as rejected:
        count_rejection("twilio", rejected.reason)
        raise _REFUSED[rejected.status]("the callback was refused") from None


@endpoint(bp, "/webhooks/twilio/{tenant_id}/calls", "POST",
          summary="Twilio call status callbacks and Voice URL (signed); answers empty TwiML",
          errors_=(400, 401, 404, 413, 415), tags=("webhooks",), content_types=(twilio.FORM,))
def twilio_calls(tenant_id: str) -> Response:
    """Verify X-Twilio-Signature, store the status once, enqueue, acknowledge with <Response/>."""
    _receive(tenant_id, "calls")
    return Response(body=EMPTY_TWIML, status_code=200, headers={"Content-Type": "text/xml"})


@endpoint(bp, "/webhooks/twilio/{tenant_id}/recordings", "POST", summary="Twilio recording status callbacks (signed)",
          status=204, errors_=(400, 401, 404, 413, 415), tags=("webhooks",), content_types=(twilio.FORM,))
def twilio_recordings(tenant_id: str) -> Response:
    """Stored only if the call started with recording on; otherwise deleted at Twilio (asynchronously)."""
    _receive(tenant_id, "recordings")
    return Response(body="", status_code=204)


@endpoint(bp, "/webhooks/twilio/{tenant_id}/transcriptions", "POST",
          summary="Twilio transcription callbacks (signed)", status=204, errors_=(400, 401, 404, 413, 415),
          tags=("webhooks",), content_types=(twilio.FORM,))
def twilio_transcriptions(tenant_id: str) -> Response:
    """Kept only if the call started with transcription on."""
    _receive(tenant_id, "transcriptions")
    return Response(body="", status_code=204)
