"""Sending a proposal for signature, and making its payment link: the API's two calls to the providers.

Sending happens in the proposal's locked transaction, so two sends of one draft cannot both go out: the frozen
PDF is rendered and stored, uploaded to SignNow, its completion subscribed to a new hook URL with a new secret,
and the invite sent last; any failure rolls the whole send back (502 for the provider's, nothing recorded and no
invite out). The provider calls are short and capped (chalicelib.outbound), unlike a model's.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from typing import Any

from chalicelib import audit, blobs, errors, outbound
from chalicelib.audit import Actor
from chalicelib.db.types import Conn
from chalicelib.inbox.providers import signnow, stripe
from chalicelib.proposals import documents, pdf, service, signing
from chalicelib.proposals.models import ProposalOut, SendIn
from chalicelib.settings import get_settings
from chalicelib.vault.store import get_credentials, get_vault


def _provider_failed(name: str) -> errors.BadGateway:
    return errors.BadGateway(f"{name} did not confirm the request; nothing was recorded, try again")


def send(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, spec: SendIn, expected: frozenset[str] | None,
         actor: Actor, now: datetime) -> ProposalOut:
    """Freeze a draft's PDF and send it to its signer through SignNow (409 without the integration)."""
    row = service.locked(conn, proposal, expected)
    if row["status"] != "draft":
        raise errors.Conflict(f"a {row['status']} proposal was sent already: revise it as a new draft")
    found = documents.source(conn, proposal)
    signer = spec.signer_email or found.parties.email
    if not signer:
        raise errors.ValidationFailed("the lead's contact has no email", errors=[errors.FieldError(
            "signer_email", "required: the lead's contact has no email", "missing")])
    try:
        credentials = get_credentials(conn, tenant_id=tenant, provider="signnow")
    except errors.NotFound:
        raise errors.Conflict("the SignNow integration is not configured for this workspace") from None
    signnow.sender(credentials)  # checked before anything reaches SignNow
    superseded = _previous_to_supersede(conn, row)
    link_open = superseded is not None and not _close_link(conn, tenant, superseded, refuse_used=True)
    document = pdf.render(found.proposal, found.parties)
    digest = hashlib.sha256(document).hexdigest()
    key = blobs.tenant_key(tenant, f"tenants/{tenant}/proposals/{proposal}/sent-{digest[:16]}.pdf")
    blobs.get_blobs().put_bytes(key, document)
    hook, secret = uuid.uuid4(), secrets.token_urlsafe(32)
    ciphertext = get_vault().encrypt(secret.encode(), signing.hook_context(tenant, hook))
    callback = f"{get_settings().public_base_url}/webhooks/signnow/{hook}"
    title = found.proposal.title
    try:
        document_id = signnow.upload(credentials, document, f"proposal-{proposal}.pdf")
        signnow.subscribe(credentials, document_id, callback, secret)
        signnow.invite(credentials, document_id, to=signer, subject=f"Please sign: {title}"[:200],
                       message=spec.message or f"{found.parties.workspace} sent you a proposal to sign: {title}")
    except (signnow.SignNowApiError, outbound.OutboundRefused):
        raise _provider_failed("SignNow") from None
    signing.record_sent(conn, tenant=tenant, row=row, actor=actor, now=now, sent=signing.Sent(
        pdf_key=key, pdf_sha256=digest, signer_email=signer, document_id=document_id, hook_id=hook,
        hook_secret_ciphertext=ciphertext))
    if superseded is not None:
        _void(conn, tenant=tenant, row=superseded, actor=actor, now=now, details={"superseded_by": str(proposal)},
              link_open=link_open)
    return service.get(conn, proposal)


def _previous_to_supersede(conn: Conn, row: dict[str, Any]) -> dict[str, Any] | None:
    """The version a revision replaces when that one is still out (sent or signed, so it could still be signed or
    paid): it is voided once the revision is sent."""
    if row["previous_id"] is None:
        return None
    previous = service.locked(conn, row["previous_id"], None)
    return previous if previous["status"] in ("sent", "signed") else None


def _close_link(conn: Conn, tenant: uuid.UUID, row: dict[str, Any], *, refuse_used: bool = False) -> bool:
    """Close a proposal's payment link; False when Stripe cannot close it now (no integration any more, or Stripe
    did not answer). A link already used is a 409 with `refuse_used`, else False too."""
    try:
        stripe.close_checkout(conn, tenant=tenant, proposal=row)
    except stripe.PaymentLinkUsed:
        if refuse_used:
            raise errors.Conflict("the version this revises was paid through its payment link, or its payment is "
                                  "on its way: it is not replaced") from None
        return False
    except (errors.Conflict, *stripe.FAILURES):
        return False
    return True


def _void(conn: Conn, *, tenant: uuid.UUID, row: dict[str, Any], actor: Actor, now: datetime,
          details: dict[str, Any] | None = None, link_open: bool | None = None) -> None:
    """Void a locked proposal and close its payment link (unless the caller did: `link_open`); a link that stays
    open is audited (a payment through it would be audited as unexpected and move nothing)."""
    service.set_status(conn, tenant=tenant, proposal=row["id"], frm=row["status"], to="void", actor=actor, now=now,
                       details=details)
    if link_open is None:
        link_open = not _close_link(conn, tenant, row)
    if link_open:
        audit.record(conn, tenant_id=tenant, action="proposal.payment_link_open", actor=actor, target_type="proposal",
                     target_id=row["id"])


def void(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, expected: frozenset[str] | None, actor: Actor,
         now: datetime) -> ProposalOut:
    """Void a draft, sent or signed proposal (409 otherwise), closing its payment link."""
    row = service.locked(conn, proposal, expected)
    if "void" not in service.TRANSITIONS[row["status"]]:
        raise errors.Conflict(f"a {row['status']} proposal cannot become void")
    _void(conn, tenant=tenant, row=row, actor=actor, now=now)
    return service.get(conn, proposal)


def payment_link(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, idempotency_key: str, actor: Actor
                 ) -> ProposalOut:
    """A new Stripe Checkout Session for a signed proposal's total (409 before it is signed or without Stripe)."""
    row = service.locked(conn, proposal, None)
    if row["status"] != "signed":
        raise errors.Conflict(f"a {row['status']} proposal takes no payment: only a signed one does")
    try:
        stripe.checkout(conn, tenant=tenant, proposal=row, idempotency_key=idempotency_key, actor=actor)
    except stripe.FAILURES:
        raise _provider_failed("Stripe") from None
    return service.get(conn, proposal)
