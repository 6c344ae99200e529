"""Stripe: a Checkout Session for a signed proposal's total, and the signed events that say it was paid.

The session is made with one form-encoded `POST /v1/checkout/sessions` (base STRIPE_API_BASE, https://api.stripe.com;
`Authorization: Bearer <secret key>` from the vault; docs.stripe.com/api/checkout/sessions/create):
mode=payment, one line of the proposal's total (price_data: currency, unit_amount, product_data[name]),
client_reference_id (the proposal) and metadata (workspace and proposal), success_url, and an Idempotency-Key, so
a retried call makes no second session. It goes through chalicelib.outbound rather than the `stripe` package:
one guarded path for every provider call (pinned address, size and time caps, no redirects), one request shape
that needs no SDK, and no 31 MB package with its own CA bundle and requests stack on the API's cold start. The
tests check our signatures against the `stripe` package's own helpers.

The events: `POST /webhooks/stripe/{workspace_id}`, the endpoint the workspace registers at Stripe, whose signing
secret (whsec_…) it keeps in the vault. `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]` is verified as Stripe
documents it (docs.stripe.com/webhooks#verify-manually): HMAC-SHA256 of "<t>.<raw body>" under the secret, any
v1 may match, and t within 300 s of now (either way). Stripe's event id (evt_…) stores each event once.
`checkout.session.completed` with payment_status paid (or no_payment_required), and
`checkout.session.async_payment_succeeded` (a delayed method that settled later), pay the proposal the session's
client_reference_id names, once (docs.stripe.com/checkout/fulfillment); every other type is acknowledged and
dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from chalicelib import clock, errors, outbound
from chalicelib.audit import Actor
from chalicelib.db import deadline
from chalicelib.db.types import Conn
from chalicelib.inbox import webhook_records
from chalicelib.inbox.providers.base import Delivery, Event, Reply, Sent, StoredEvent
from chalicelib.inbox.refusals import (
    BadSignature,
    Malformed,
    Replayed,
    UnknownSource,
    UnsupportedContent,
)
from chalicelib.proposals import signing
from chalicelib.settings import get_settings
from chalicelib.vault.envelope import CredentialIntegrityError
from chalicelib.vault.providers import StripeCredentials
from chalicelib.vault.store import get_credentials

TOLERANCE_S = 300
# The API version the request and the events are shaped for (Stripe-Version).
API_VERSION = "2026-10-28.endive"
PAID = frozenset({"paid", "no_payment_required"})
# The largest unit_amount a Checkout line takes (docs.stripe.com/api/checkout/sessions/create).
MAX_AMOUNT = 99_999_999
CALL_TIMEOUT_S = 8.0
KINDS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded",
                   "checkout.session.async_payment_failed"})
SUCCESS_PATH = "/payments/complete"
SESSION_ID = re.compile(r"cs_[A-Za-z0-9_]{1,250}")
log = logging.getLogger("crm.proposals")


class StripeApiError(RuntimeError):
    """Stripe answered something unexpected (the message holds the status code only)."""


class PaymentLinkUsed(errors.Conflict):
    """The proposal's Checkout Session was completed: its payment is paid or on its way."""


class MalformedEvent(Malformed):
    """The body is not a Stripe event we can read (the message is a fixed word)."""


# What a failed Stripe call raises here (the vault's, when the key cannot be read).
FAILURES = (StripeApiError, outbound.OutboundRefused, CredentialIntegrityError)


def _call(credentials: StripeCredentials, method: str, path: str, *, form: bytes | None = None,
          idempotency_key: str | None = None) -> dict[str, Any]:
    """One call to Stripe's API with the workspace's key: its JSON object, or StripeApiError (status only)."""
    headers = {"Authorization": f"Bearer {credentials.secret_key.get_secret_value()}", "Stripe-Version": API_VERSION}
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    seconds = deadline.time_for_call(CALL_TIMEOUT_S)
    if seconds is None:
        raise StripeApiError("no time left in the request")
    response = outbound.request(method, get_settings().stripe_api_base + path, body=form, headers=headers,
                                max_bytes=256 * 1024, allow=get_settings().outbound_allow, total_timeout_s=seconds)
    if response.status == 404 and method == "GET":
        return {}  # no such object (at this account)
    return outbound.json_object(response, StripeApiError, path.split("/")[2])


def create_checkout(credentials: StripeCredentials, *, tenant: uuid.UUID, proposal: dict[str, Any],
                    idempotency_key: str) -> tuple[str, str]:
    """A Checkout Session for the proposal's total: its id (cs_…) and its hosted page's URL."""
    settings = get_settings()
    form = urlencode([
        ("mode", "payment"),
        ("line_items[0][price_data][currency]", str(proposal["currency"]).lower()),
        ("line_items[0][price_data][unit_amount]", str(proposal["total_minor"])),
        ("line_items[0][price_data][product_data][name]", str(proposal["title"])[:250]),
        ("line_items[0][quantity]", "1"),
        ("client_reference_id", str(proposal["id"])),
        ("metadata[workspace_id]", str(tenant)),
        ("metadata[proposal_id]", str(proposal["id"])),
        ("success_url", settings.public_base_url + SUCCESS_PATH),
    ]).encode()
    answer = _call(credentials, "POST", "/v1/checkout/sessions", form=form, idempotency_key=idempotency_key)
    session, url = answer.get("id"), answer.get("url")
    if not (isinstance(session, str) and SESSION_ID.fullmatch(session) and isinstance(url, str)
            and url.startswith("https://") and len(url) <= 2000):
        raise StripeApiError("checkout session answered no usable id and url")
    return session, url


def session_status(credentials: StripeCredentials, session: str) -> tuple[str, str]:
    """A Checkout Session's status (open, complete, expired; "missing" when Stripe has no such session for this
    key) and its payment_status."""
    if not SESSION_ID.fullmatch(session):
        raise StripeApiError("not a session id")
    found = _call(credentials, "GET", f"/v1/checkout/sessions/{session}")
    return str(found.get("status") or "missing"), str(found.get("payment_status"))


def expire_session(credentials: StripeCredentials, session: str) -> None:
    """Close an open Checkout Session, so nobody pays through it any more."""
    if not SESSION_ID.fullmatch(session):
        raise StripeApiError("not a session id")
    _call(credentials, "POST", f"/v1/checkout/sessions/{session}/expire", form=b"")


def _credentials(conn: Conn, tenant: uuid.UUID) -> StripeCredentials:
    try:
        return get_credentials(conn, tenant_id=tenant, provider="stripe")
    except errors.NotFound:
        raise errors.Conflict("the Stripe integration is not configured for this workspace") from None


def close_checkout(conn: Conn, *, tenant: uuid.UUID, proposal: dict[str, Any]) -> None:
    """Close the proposal's open Checkout Session, if it has one, and forget its link (409 when it was completed:
    its payment is paid or on its way, and another session could take the money twice; a delayed payment that
    failed forgets the session when its event comes)."""
    session = proposal.get("checkout_session_id")
    if not session:
        return
    credentials = _credentials(conn, tenant)
    status, _paid = session_status(credentials, session)
    if status == "complete":
        raise PaymentLinkUsed("the proposal's payment link was used: its payment is paid or on its way")
    if status == "open":
        expire_session(credentials, session)
    signing.forget_checkout(conn, proposal=proposal["id"], session_id=session)


def checkout(conn: Conn, *, tenant: uuid.UUID, proposal: dict[str, Any], idempotency_key: str,
             actor: Actor) -> None:
    """Make and record a Checkout Session for a signed proposal, closing the one before (409 when Stripe is not
    connected, the total is zero or above what Checkout takes, or the last session was completed)."""
    credentials = _credentials(conn, tenant)
    if not 0 < proposal["total_minor"] <= MAX_AMOUNT:
        raise errors.Conflict(f"Stripe Checkout takes totals from 1 to {MAX_AMOUNT:,} minor units")
    close_checkout(conn, tenant=tenant, proposal=proposal)
    session, url = create_checkout(credentials, tenant=tenant, proposal=proposal, idempotency_key=idempotency_key)
    signing.record_checkout(conn, tenant=tenant, proposal=proposal["id"], session_id=session, url=url, actor=actor)


def offer(conn: Conn, *, tenant: uuid.UUID, proposal: dict[str, Any]) -> None:
    """Once signed, a proposal gets its payment link when the workspace has Stripe; a failure leaves it signed
    (POST …/payment-link makes one later) and is logged by its class only."""
    try:
        checkout(conn, tenant=tenant, proposal=proposal, idempotency_key=f"proposal-{proposal['id']}-signed",
                 actor=Actor())
    except errors.Conflict:
        return  # no Stripe, or nothing Checkout can take
    except FAILURES as exc:
        log.warning("payment link not made", extra={"fields": {"error": type(exc).__name__}})


def signature_valid(secret: str, raw: bytes, header: str | None, now: float) -> bool:
    """Whether Stripe-Signature has a timestamp within TOLERANCE_S of `now` and a v1 over "<t>.<body>"."""
    if not header or len(header) > 2000:
        return False
    pairs = [item.split("=", 1) for item in header.split(",") if "=" in item]
    stamps = [value.strip() for key, value in pairs if key.strip() == "t"]
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit() and len(stamps[0]) <= 12):
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + raw, hashlib.sha256).hexdigest().encode()
    # Bytes: compare_digest refuses a str with non-ASCII characters (a hostile header is a 401, not a 500).
    if not any(hmac.compare_digest(expected, value.strip().encode()) for key, value in pairs if key.strip() == "v1"):
        return False
    if abs(now - int(stamps[0])) > TOLERANCE_S:  # genuine, but too old (or too far ahead) to be taken now
        raise Replayed(reason="stale")
    return True


@dataclass(frozen=True)
class _Verified:
    tenant: uuid.UUID


class Stripe:
    """Stripe's Checkout events for one workspace (provider base.Provider); no inbox, no replies."""

    name = "stripe"
    channel_type: str | None = None

    def screen(self, delivery: Delivery) -> object:
        """The URL must name a workspace id, and the body be JSON."""
        if delivery.tenant is None:
            raise UnknownSource(reason="unknown_workspace")
        if delivery.media_type != "application/json":
            raise UnsupportedContent()
        return None

    def verify(self, conn: Conn, delivery: Delivery, screened: object) -> _Verified:
        """Stripe-Signature under the workspace's webhook signing secret (vault)."""
        assert delivery.tenant is not None
        webhook_records.require_live_workspace(conn, delivery.tenant)
        try:
            secret = get_credentials(conn, tenant_id=delivery.tenant, provider="stripe").webhook_secret
        except (errors.NotFound, CredentialIntegrityError):
            secret = None
        if secret is None:
            raise BadSignature(reason="no_credentials")
        if not signature_valid(secret.get_secret_value(), delivery.raw, delivery.header("stripe-signature"),
                               clock.now().timestamp()):
            raise BadSignature()
        return _Verified(delivery.tenant)

    def events(self, conn: Conn, delivery: Delivery, verified: object) -> list[Event]:
        """A payment of one of our sessions, once per Stripe event id; other types are dropped."""
        assert isinstance(verified, _Verified)
        try:
            body = json.loads(delivery.raw)
            event_id, kind, session = body["id"], body["type"], body["data"]["object"]
        except (ValueError, KeyError, TypeError):
            raise MalformedEvent("event") from None
        if not (isinstance(event_id, str) and event_id.startswith("evt_") and len(event_id) <= 255
                and isinstance(kind, str) and isinstance(session, dict)):
            raise MalformedEvent("event")
        if kind not in KINDS:
            return []
        metadata: dict[str, Any] = session["metadata"] if isinstance(session.get("metadata"), dict) else {}
        if metadata.get("workspace_id") != str(verified.tenant) or "proposal_id" not in metadata:
            # Genuine, but not a proposal's session of this workspace (the account sells other things too, or serves
            # another workspace): acknowledged and dropped, so Stripe neither retries nor disables the endpoint.
            return []
        try:
            proposal = uuid.UUID(str(session["client_reference_id"]))
            payload: dict[str, Any] = {"proposal_id": str(proposal), "session_id": str(session["id"]),
                       "payment_status": str(session["payment_status"]), "amount_total": int(session["amount_total"]),
                       "currency": str(session["currency"])}
        except (KeyError, ValueError, TypeError):
            raise MalformedEvent("session") from None
        if str(metadata.get("proposal_id")) != str(proposal):
            raise MalformedEvent("session")
        if not SESSION_ID.fullmatch(payload["session_id"]) or len(payload["currency"]) != 3:
            raise MalformedEvent("session")
        return [Event(kind, event_id, payload)]

    def stored(self, conn: Conn, delivery: Delivery, verified: object, new: list[uuid.UUID]) -> None:
        """Nothing more."""

    def process(self, conn: Conn, event: StoredEvent) -> None:
        """Pay the proposal (and win its lead) when the session's money arrived; otherwise wait for the next."""
        payload = event.payload
        if event.kind == "checkout.session.async_payment_failed":
            # The session can take no other payment: a new link may be made (POST …/payment-link).
            signing.payment_failed(conn, tenant=event.tenant, proposal=uuid.UUID(payload["proposal_id"]),
                                   session_id=payload["session_id"])
            return
        if payload["payment_status"] not in PAID:
            return  # a delayed method: checkout.session.async_payment_succeeded or …_failed follows
        signing.record_paid(conn, tenant=event.tenant, now=clock.now(), payment=signing.Payment(
            uuid.UUID(payload["proposal_id"]), payload["session_id"], payload["amount_total"], payload["currency"]))

    def send_reply(self, reply: Reply, body: str) -> Sent:
        """Stripe has no replies."""
        raise NotImplementedError("Stripe has no replies")


PROVIDER = Stripe()
