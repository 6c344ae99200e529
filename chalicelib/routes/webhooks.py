"""Webhooks in: no session; each delivery is authenticated by its provider's signature over the raw body."""

from __future__ import annotations

import uuid

from chalice.app import Blueprint, Response
from pydantic import BaseModel

from chalicelib import errors
from chalicelib.db.tenancy import tenant_tx, user_tx
from chalicelib.http import endpoint, query_params
from chalicelib.inbox import channels, email_inbound
from chalicelib.inbox.ingest import Rejected, count_rejection, get_queue, store_events
from chalicelib.inbox.providers import whatsapp
from chalicelib.inbox.providers.signatures import whatsapp_valid

bp = Blueprint(__name__)
TAGS = ("webhooks",)


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


@endpoint(bp, "/webhooks/whatsapp/{channel_id}", "GET", summary="Meta's subscription handshake (hub.challenge)",
          errors_=(403, 404), tags=TAGS)
def whatsapp_verify(channel_id: str) -> Response:
    """The challenge as text/plain when hub.verify_token is the channel's."""
    from chalicelib.auth.crypto import same

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
          response_model=Ack, errors_=(400, 401, 404, 413, 415), tags=TAGS, content_types=("application/json",))
def whatsapp_delivery(channel_id: str) -> Response:
    """Verify X-Hub-Signature-256 over the raw bytes, store each event once, enqueue, acknowledge."""
    request = bp.current_request
    raw = request.raw_body or b""
    raw = raw.encode() if isinstance(raw, str) else raw
    tenant, channel = _workspace_of(channel_id)
    try:
        with tenant_tx(tenant) as conn:
            found = channels.load(conn, tenant_id=tenant, channel_id=channel)
            if found is None or found[0].type != "whatsapp" or found[1].app_secret is None:
                raise Rejected("unknown_channel", 404)
            # The signature first: nothing of the body is parsed before it is proven to come from Meta.
            if not whatsapp_valid(found[1].app_secret.get_secret_value(), raw,
                                  request.headers.get("x-hub-signature-256")):
                raise Rejected("bad_signature", 401)
            try:
                items = whatsapp.parse(raw)
            except whatsapp.MalformedDelivery:
                raise Rejected("malformed", 400) from None
            # A shared Meta app secret does not prove the tenant: the number must be this channel's.
            if any(item.phone_number_id != found[0].phone_number_id for item in items):
                raise Rejected("foreign_number", 401)
            new = store_events(conn, tenant_id=tenant, channel_id=channel, provider="whatsapp",
                               events=[(i.kind, i.event_id, i.payload) for i in items])
    except Rejected as rejected:
        count_rejection("whatsapp", rejected.reason)
        error = {400: errors.BadRequest, 401: errors.Unauthorized, 404: errors.NotFound}[rejected.status]
        raise error("the delivery was refused") from None
    if new:
        get_queue().enqueue(tenant, new)
    return Response(body='{"status": "ok"}', status_code=200, headers={"Content-Type": "application/json"})


@endpoint(bp, "/webhooks/email/{channel_id}", "POST", summary="Mailgun inbound email (signed, replay-protected)",
          response_model=Ack, errors_=(400, 401, 404, 413, 415), tags=TAGS,
          content_types=("application/x-www-form-urlencoded", "multipart/form-data"))
def email_delivery(channel_id: str) -> Response:
    """Verify Mailgun's signature, refuse replays, store the email and its files once, enqueue, acknowledge."""
    request = bp.current_request
    raw = request.raw_body or b""
    raw = raw.encode() if isinstance(raw, str) else raw
    tenant, channel = _workspace_of(channel_id)
    try:
        new = email_inbound.accept(tenant, channel, raw, request.headers.get("content-type") or "")
    except Rejected as rejected:
        count_rejection("mailgun", rejected.reason)
        error = {400: errors.BadRequest, 401: errors.Unauthorized, 404: errors.NotFound}[rejected.status]
        raise error("the delivery was refused") from None
    if new:
        get_queue().enqueue(tenant, new)
    return Response(body='{"status": "ok"}', status_code=200, headers={"Content-Type": "application/json"})
