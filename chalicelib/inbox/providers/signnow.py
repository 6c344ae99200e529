"""SignNow: a proposal's PDF out for signature, and the signed callbacks that say it came back signed.

The REST calls (base SIGNNOW_BASE_URL: https://api.signnow.com, sandbox https://api-eval.signnow.com), each with
the workspace's access token from the vault as `Authorization: Bearer …`, through chalicelib.outbound:
- `POST /document`, multipart/form-data with the PDF in the field `file` -> `{"id": …}` (SignNow's Python SDK,
  signnow/api/document/request/document_post_request.py; blog.signnow.com/signnow-api-document-upload).
- `POST /api/v2/events` {event, entity_id, action: "callback", attributes: {callback, use_tls_12,
  docid_queryparam, delete_access_token, secret_key}} subscribes a callback URL to one document's event
  (docs.signnow.com/webhooks/subscriptions, "Webhooks 2.0"). SignNow's SDKs send `secret_key` at the top level
  (subscription_post_request.py, SubscriptionPost.php) and Pipedream's integration inside `attributes`
  (components/signnow/sources/common/webhook.mjs): it is sent in both places. `delete_access_token` keeps the
  token out of the callback's body.
- `POST /document/{id}/invite` {to, from, subject, message} -> `{"result": "success", …}`: a free-form invite,
  which needs a document without fields (free_form_invite_post_request.py;
  docs.signnow.com/code-examples/signing/send-invite); `from` must be the account's login email.
- `GET /document/{id}/download?type=collapsed` -> the signed PDF (document_download_get_request.py).

The callbacks: `POST /webhooks/signnow/{hook_id}`, a random id per sent proposal (routed to its workspace like
a channel's), JSON `{"meta": {"timestamp", "event", …}, "content": {"document_id", …}}`, signed with the
subscription's `secret_key` as `X-SignNow-Signature: base64(HMAC-SHA256(secret, raw body))` (Pipedream's
webhook.mjs: SignNow's SDKs verify nothing, and other integrations use hex: either encoding of the one MAC is
accepted). The signature covers `meta.timestamp`: a delivery older than a day (SignNow retries a failed callback
with its first body) or 5 minutes ahead is refused, and a document completes once (its event id), so a replay
inside the window stores nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from chalicelib import blobs, clock, errors, outbound
from chalicelib.blobs import get_blobs
from chalicelib.db import deadline
from chalicelib.db.types import Conn
from chalicelib.inbox.providers import stripe as payments
from chalicelib.inbox.providers.base import Delivery, Event, Reply, Sent, StoredEvent
from chalicelib.inbox.refusals import (
    BadSignature,
    ForeignSender,
    Malformed,
    Replayed,
    UnknownSource,
    UnsupportedContent,
)
from chalicelib.proposals import signing
from chalicelib.settings import get_settings
from chalicelib.vault.envelope import CredentialIntegrityError
from chalicelib.vault.providers import SignNowCredentials
from chalicelib.vault.store import get_credentials, get_vault

# The document events that mean "every signer signed": SignNow's, for a document and for a free-form invite.
COMPLETE = frozenset({"document.complete", "document.freeform.signed"})
MAX_PAST_S, MAX_FUTURE_S = 86_400, 300
MAX_PDF_BYTES = 50 * 1024 * 1024  # SignNow's own upload limit
# Each call's exchange at most (less when the request's database budget, DB_REQUEST_DEADLINE_S, runs out sooner:
# the send's commit must still fit in it).
CALL_TIMEOUT_S = 6.0
log = logging.getLogger("crm.proposals")


class SignNowApiError(RuntimeError):
    """SignNow answered something unexpected (the message holds the call and the status code only)."""


class MalformedCallback(Malformed):
    """The body is not a SignNow event of this subscription's document (the message is a fixed word)."""


def _request(credentials: SignNowCredentials, method: str, path: str, *, headers: dict[str, str],
             body: bytes | None = None, max_bytes: int = 65536,
             cap: float = CALL_TIMEOUT_S) -> outbound.OutboundResponse:
    """One call to SignNow's API with the workspace's token, in at most `cap` seconds and never more than the
    request's database budget spares (SignNowApiError when it spares none)."""
    seconds = deadline.time_for_call(cap)
    if seconds is None:
        raise SignNowApiError("no time left in the request")
    settings = get_settings()
    return outbound.request(method, settings.signnow_base_url + path, allow=settings.outbound_allow,
                            headers={**_bearer(credentials), **headers}, body=body, max_bytes=max_bytes,
                            total_timeout_s=seconds)


def _bearer(credentials: SignNowCredentials) -> dict[str, str]:
    return {"Authorization": f"Bearer {credentials.api_token.get_secret_value()}", "Accept": "application/json"}


def _post_json(credentials: SignNowCredentials, path: str, body: dict[str, Any], call: str) -> dict[str, Any]:
    response = _request(credentials, "POST", path, headers={"Content-Type": "application/json"},
                        body=json.dumps(body).encode())
    return outbound.json_object(response, SignNowApiError, call, ok=(200, 201))


def document_id(value: object) -> str:
    """SignNow's id of a document as it may appear in a URL path (SignNowApiError for anything else)."""
    if not isinstance(value, str) or not value or len(value) > 100 or not all(
            c.isascii() and (c.isalnum() or c in "_-") for c in value):
        raise SignNowApiError("no usable document id")
    return value


def upload(credentials: SignNowCredentials, pdf: bytes, filename: str) -> str:
    """Upload a PDF; SignNow's id for the new document."""
    import urllib3

    body, content_type = urllib3.encode_multipart_formdata({"file": (filename, pdf, "application/pdf")})
    response = _request(credentials, "POST", "/document", headers={"Content-Type": content_type}, body=body)
    return document_id(outbound.json_object(response, SignNowApiError, "upload", ok=(200, 201)).get("id"))


def subscribe(credentials: SignNowCredentials, document: str, callback_url: str, secret: str) -> None:
    """Have SignNow post the document's completion to `callback_url`, signed with `secret`."""
    for event in sorted(COMPLETE):
        attributes = {"callback": callback_url, "use_tls_12": True, "docid_queryparam": False,
                      "delete_access_token": True, "secret_key": secret}
        _post_json(credentials, "/api/v2/events", {"event": event, "entity_id": document, "action": "callback",
                                                   "attributes": attributes, "secret_key": secret}, "subscribe")


def sender(credentials: SignNowCredentials) -> str:
    """The account's login email, which invites come from (409 when the integration lacks it)."""
    if credentials.sender_email is None:
        raise errors.Conflict("the SignNow integration needs sender_email, the SignNow account's login email")
    return credentials.sender_email


def invite(credentials: SignNowCredentials, document: str, *, to: str, subject: str, message: str) -> None:
    """Send the free-form signature invite to the signer."""
    answer = _post_json(credentials, f"/document/{document_id(document)}/invite", {
        "to": to, "from": sender(credentials), "subject": subject, "message": message}, "invite")
    if answer.get("result") != "success":
        raise SignNowApiError("invite answered no success")


def download_signed(credentials: SignNowCredentials, document: str) -> bytes:
    """The signed document as one PDF."""
    response = _request(credentials, "GET", f"/document/{document_id(document)}/download?type=collapsed",
                        headers={"Accept": "application/pdf"}, max_bytes=MAX_PDF_BYTES, cap=60.0)
    if response.status != 200 or not response.body.startswith(b"%PDF-"):
        raise SignNowApiError(f"download answered {response.status}")
    return response.body


def signature(secret: str, raw: bytes) -> bytes:
    """The HMAC-SHA256 of the raw body under the subscription's secret (the bytes both encodings carry)."""
    return hmac.new(secret.encode(), raw, hashlib.sha256).digest()


def signature_valid(secret: str, raw: bytes, header: str | None) -> bool:
    """Whether X-SignNow-Signature carries the body's MAC, base64 or lower-case hex (compared in constant time)."""
    if not header or len(header) > 200:
        return False
    expected, value = signature(secret, raw), header.strip()
    candidates = []
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(value, validate=True))
    if value == value.lower():  # hex as integrations print it (lower case); the same MAC as the base64
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(value))
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


@dataclass(frozen=True)
class _Verified:
    proposal: uuid.UUID
    document_id: str


class SignNow:
    """SignNow's signed document events (provider base.Provider); SignNow has no inbox and no replies."""

    name = "signnow"
    channel_type: str | None = None

    def screen(self, delivery: Delivery) -> object:
        """The hook must route to a workspace, and the body be JSON."""
        if delivery.tenant is None or delivery.channel is None:
            raise UnknownSource(reason="unknown_hook")
        if delivery.media_type != "application/json":
            raise UnsupportedContent()
        return None

    def verify(self, conn: Conn, delivery: Delivery, screened: object) -> _Verified:
        """X-SignNow-Signature with the secret of the subscription this hook id was made for."""
        assert delivery.tenant is not None and delivery.channel is not None
        hooked = signing.by_hook(conn, delivery.channel)
        if hooked is None:
            raise UnknownSource(reason="unknown_hook")
        try:
            secret = get_vault().decrypt(hooked.secret_ciphertext,
                                         signing.hook_context(delivery.tenant, delivery.channel)).plaintext.decode()
        except CredentialIntegrityError:
            # Not this hook's ciphertext (moved from another row, or damaged): an alert, and the delivery refused.
            log.error("signnow hook secret failed its integrity check",
                      extra={"fields": {"hook": str(delivery.channel)}})
            raise BadSignature(reason="no_credentials") from None
        if not signature_valid(secret, delivery.raw, delivery.header("x-signnow-signature")):
            raise BadSignature()
        return _Verified(hooked.proposal, hooked.document_id)

    def events(self, conn: Conn, delivery: Delivery, verified: object) -> list[Event]:
        """One completion per document; other events of the subscription are acknowledged and dropped."""
        assert isinstance(verified, _Verified)
        try:
            body = json.loads(delivery.raw)
            meta, content = body["meta"], body["content"]
            event, stamp, document = meta["event"], meta["timestamp"], content["document_id"]
        except (ValueError, KeyError, TypeError):
            raise MalformedCallback("event") from None
        if not isinstance(event, str) or isinstance(stamp, bool) or not isinstance(stamp, int):
            raise MalformedCallback("event")
        age = clock.now().timestamp() - stamp
        if age > MAX_PAST_S or age < -MAX_FUTURE_S:
            raise Replayed(reason="stale")
        if document != verified.document_id:
            raise ForeignSender(reason="foreign_document")
        if event not in COMPLETE:
            return []
        return [Event("document.complete", f"{verified.document_id}:complete",
                      {"proposal_id": str(verified.proposal), "document_id": verified.document_id})]

    def stored(self, conn: Conn, delivery: Delivery, verified: object, new: list[uuid.UUID]) -> None:
        """Nothing more: the worker fetches the signed copy."""

    def process(self, conn: Conn, event: StoredEvent) -> None:
        """Keep the signed copy, mark the proposal signed, then offer its payment (Stripe, when connected). A
        proposal no longer sent (voided, expired meanwhile) keeps its status: the late signature is audited, and
        its copy is neither fetched nor kept."""
        proposal = uuid.UUID(event.payload["proposal_id"])
        if not signing.awaiting_signature(conn, tenant=event.tenant, proposal=proposal):
            return
        credentials = get_credentials(conn, tenant_id=event.tenant, provider="signnow")
        pdf = download_signed(credentials, event.payload["document_id"])
        digest = hashlib.sha256(pdf).hexdigest()
        key = blobs.tenant_key(event.tenant, f"tenants/{event.tenant}/proposals/{proposal}/signed-{digest[:16]}.pdf")
        get_blobs().put_bytes(key, pdf)
        signed = signing.record_signed(conn, tenant=event.tenant, proposal=proposal, blob_key=key, sha256=digest,
                                       now=clock.now())
        if signed is not None:
            payments.offer(conn, tenant=event.tenant, proposal=signed)

    def send_reply(self, reply: Reply, body: str) -> Sent:
        """SignNow has no replies."""
        raise NotImplementedError("SignNow has no replies")


PROVIDER = SignNow()
