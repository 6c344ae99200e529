"""Webhooks in: no session; each delivery is authenticated by its provider (chalicelib.inbox.providers).

Every delivery route builds a Delivery and hands it to ingest.accept with its provider's name; a refusal
is counted there and answered by chalicelib.http. One provider, one route line (or a few, where the
provider posts to several URLs).
"""

from __future__ import annotations

import uuid

from chalice.app import Blueprint, Request, Response
from pydantic import BaseModel

from chalicelib import errors
from chalicelib.auth.crypto import same
from chalicelib.db.tenancy import tenant_tx, user_tx
from chalicelib.http import endpoint
from chalicelib.inbox import channels, ingest
from chalicelib.inbox.providers import twilio
from chalicelib.inbox.providers.base import Delivery
from chalicelib.inputs import query_params
from chalicelib.settings import get_settings

bp = Blueprint(__name__)
TAGS = ("webhooks",)
ERRORS = (400, 401, 404, 413, 415)
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class Ack(BaseModel):
    """Stored (or already stored); processing continues asynchronously."""

    status: str


def _workspace_of(channel_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    try:
        channel = uuid.UUID(channel_id)
    except ValueError:
        raise errors.NotFound("not found") from None
    tenant = channels.cached_route(channel)
    if tenant is None:
        with user_tx() as conn:
            tenant = channels.route(conn, channel)
    if tenant is None:
        raise errors.NotFound("not found")
    return tenant, channel


def _delivery(request: Request, tenant: uuid.UUID | None, channel: uuid.UUID | None, path: str,
              route: str = "") -> Delivery:
    raw = request.raw_body or b""
    # The URL the provider was given and signs: ours, from PUBLIC_BASE_URL (never the Host header).
    return Delivery(tenant=tenant, channel=channel, raw=raw.encode() if isinstance(raw, str) else raw,
                    headers={name.lower(): value for name, value in request.headers.items()},
                    url=get_settings().public_base_url + path, route=route)


def _channel_delivery(provider: str, kind: str, channel_id: str) -> Response:
    tenant, channel = _workspace_of(channel_id)
    ingest.accept(provider, _delivery(bp.current_request, tenant, channel, f"/webhooks/{kind}/{channel_id}"))
    return Response(body='{"status": "ok"}', status_code=200, headers={"Content-Type": "application/json"})


@endpoint(bp, "/webhooks/whatsapp/{channel_id}", "GET", summary="Meta's subscription handshake (hub.challenge)",
          errors_=(403, 404), tags=TAGS)
def whatsapp_verify(channel_id: str) -> Response:
    """The challenge as text/plain when hub.verify_token is the channel's."""
    query = query_params(bp.current_request)
    tenant, channel = _workspace_of(channel_id)
    with tenant_tx(tenant) as conn:
        found = channels.load(conn, tenant_id=tenant, channel_id=channel)
    token = found[1].verify_token.get_secret_value() if found and found[1].verify_token else None
    if query.get("hub.mode") != "subscribe" or token is None or not same(query.get("hub.verify_token", ""), token):
        raise errors.Forbidden("verification failed")
    challenge = query.get("hub.challenge", "")
    if not challenge.isalnum() or len(challenge) > 128:  # echoed back: digits and letters only
        raise errors.BadRequest("bad challenge")
    return Response(body=challenge, status_code=200, headers={"Content-Type": "text/plain"})


@endpoint(bp, "/webhooks/whatsapp/{channel_id}", "POST", summary="WhatsApp Cloud API deliveries (signed)",
          response_model=Ack, errors_=ERRORS, tags=TAGS, content_types=("application/json",))
def whatsapp_delivery(channel_id: str) -> Response:
    """Verify X-Hub-Signature-256 over the raw bytes, store each event once, enqueue, acknowledge."""
    return _channel_delivery("whatsapp", "whatsapp", channel_id)


@endpoint(bp, "/webhooks/email/{channel_id}", "POST", summary="Mailgun inbound email (signed, replay-protected)",
          response_model=Ack, errors_=ERRORS, tags=TAGS,
          content_types=("application/x-www-form-urlencoded", "multipart/form-data"))
def email_delivery(channel_id: str) -> Response:
    """Verify Mailgun's signature, refuse replays, store the email and its files once, enqueue, acknowledge."""
    return _channel_delivery("mailgun", "email", channel_id)


# ---- Twilio: the path names the workspace, whose credentials (vault) sign the callbacks ----


def _workspace_in_path(tenant_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(tenant_id)
    except ValueError:
        return None  # refused (and counted) by the provider's screen


def _twilio(tenant_id: str, route: str) -> None:
    ingest.accept("twilio", _delivery(bp.current_request, _workspace_in_path(tenant_id), None,
                                      f"/webhooks/twilio/{tenant_id}/{route}", route))


@endpoint(bp, "/webhooks/twilio/{tenant_id}/calls", "POST",
          summary="Twilio call status callbacks and Voice URL (signed); answers empty TwiML",
          errors_=ERRORS, tags=TAGS, content_types=(twilio.FORM,))
def twilio_calls(tenant_id: str) -> Response:
    """Verify X-Twilio-Signature, store the status once, enqueue, acknowledge with <Response/>."""
    _twilio(tenant_id, "calls")
    return Response(body=EMPTY_TWIML, status_code=200, headers={"Content-Type": "text/xml"})


@endpoint(bp, "/webhooks/twilio/{tenant_id}/recordings", "POST", summary="Twilio recording status callbacks (signed)",
          status=204, errors_=ERRORS, tags=TAGS, content_types=(twilio.FORM,))
def twilio_recordings(tenant_id: str) -> Response:
    """Stored only if the call started with recording on; otherwise deleted at Twilio (asynchronously)."""
    _twilio(tenant_id, "recordings")
    return Response(body="", status_code=204)


@endpoint(bp, "/webhooks/twilio/{tenant_id}/transcriptions", "POST",
          summary="Twilio transcription callbacks (signed)", status=204, errors_=ERRORS, tags=TAGS,
          content_types=(twilio.FORM,))
def twilio_transcriptions(tenant_id: str) -> Response:
    """Kept only if the call started with transcription on."""
    _twilio(tenant_id, "transcriptions")
    return Response(body="", status_code=204)


# ---- Proposals: SignNow's signed-document events (one hook id per sent proposal), Stripe's payments ----


@endpoint(bp, "/webhooks/signnow/{hook_id}", "POST", summary="SignNow document events of a sent proposal (signed)",
          response_model=Ack, errors_=ERRORS, tags=TAGS, content_types=("application/json",))
def signnow_delivery(hook_id: str) -> Response:
    """Verify X-SignNow-Signature with the proposal's subscription secret, store the completion once, acknowledge."""
    return _channel_delivery("signnow", "signnow", hook_id)


@endpoint(bp, "/webhooks/stripe/{tenant_id}", "POST", summary="Stripe Checkout events of the workspace (signed)",
          response_model=Ack, errors_=ERRORS, tags=TAGS, content_types=("application/json",))
def stripe_delivery(tenant_id: str) -> Response:
    """Verify Stripe-Signature with the workspace's signing secret (vault), store each event once, acknowledge."""
    ingest.accept("stripe", _delivery(bp.current_request, _workspace_in_path(tenant_id), None,
                                      f"/webhooks/stripe/{tenant_id}"))
    return Response(body='{"status": "ok"}', status_code=200, headers={"Content-Type": "application/json"})
