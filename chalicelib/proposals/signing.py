"""What signing and payment change in the database, each in the caller's tenant transaction: a proposal sent
(its frozen PDF, SignNow's document, the callback's secret), signed (the signed copy), given a Checkout Session,
paid (and its lead won). The calls to SignNow and Stripe are the providers' (chalicelib.inbox.providers);
chalicelib.proposals.sending puts the two together for the API's routes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib import audit, errors
from chalicelib.audit import Actor
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.inbox import webhook_records
from chalicelib.outgoing import events
from chalicelib.proposals import service
from chalicelib.vault.envelope import credential_context

Q = queries.load(__package__)


def _current(conn: Conn, proposal: uuid.UUID) -> dict[str, Any]:
    return service.row_of(conn.execute(Q["proposal_get"], (proposal,)).fetchone())


def hook_context(tenant: uuid.UUID, hook_id: uuid.UUID) -> dict[str, str]:
    """The vault context of one SignNow subscription's secret: bound to the workspace and to that hook."""
    return credential_context(tenant, f"signnow-hook:{hook_id}")


def _emit(conn: Conn, tenant: uuid.UUID, status: str, row: dict[str, Any]) -> None:
    events.emit(conn, tenant_id=tenant, event_type=f"proposal.{status}", data={
        "proposal_id": str(row["id"]), "lead_id": str(row["lead_id"]), "status": status,
        "total_minor": row["total_minor"], "currency": row["currency"]})


@dataclass(frozen=True)
class Sent:
    """What sending produced outside the database: the frozen PDF, SignNow's document, the hook's secret."""

    pdf_key: str
    pdf_sha256: str
    signer_email: str
    document_id: str
    hook_id: uuid.UUID
    hook_secret_ciphertext: bytes


def record_sent(conn: Conn, *, tenant: uuid.UUID, row: dict[str, Any], sent: Sent, actor: Actor,
                now: datetime) -> None:
    """A locked draft (its row) becomes sent, frozen with its PDF, and its SignNow callback URL is routed here."""
    proposal = row["id"]
    marked = conn.execute(Q["proposal_mark_sent"], {
        "id": proposal, "now": now, "signer": sent.signer_email, "document": sent.document_id, "hook": sent.hook_id,
        "secret": sent.hook_secret_ciphertext, "key": sent.pdf_key, "sha": sent.pdf_sha256}).fetchone()
    if marked is None:
        raise errors.Conflict("the proposal changed while it was being sent")
    webhook_records.route(conn, sent.hook_id, tenant)
    service.set_status(conn, tenant=tenant, proposal=proposal, frm="draft", to="sent", actor=actor, now=now,
                       details={"signnow_document_id": sent.document_id})
    _emit(conn, tenant, "sent", row)


@dataclass(frozen=True)
class Hooked:
    """The proposal a SignNow callback URL names, with its document and its subscription's secret (encrypted)."""

    proposal: uuid.UUID
    document_id: str
    secret_ciphertext: bytes


def by_hook(conn: Conn, hook_id: uuid.UUID) -> Hooked | None:
    """The proposal whose SignNow subscription posts to this hook id (None: no such hook in this workspace)."""
    row = conn.execute(Q["proposal_by_hook"], (hook_id,)).fetchone()
    if row is None or row[1] is None or row[2] is None:
        return None
    return Hooked(row[0], str(row[1]), bytes(row[2]))


def awaiting_signature(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID) -> bool:
    """Whether a proposal is still sent, so its signature counts; if not, the late signature is audited."""
    row = conn.execute(Q["proposal_get"], (proposal,)).fetchone()
    if row is None:
        return False
    status = service.row_of(row)["status"]
    if status != "sent":
        audit.record(conn, tenant_id=tenant, action="proposal.signed_late", target_type="proposal",
                     target_id=proposal, details={"status": status})
    return bool(status == "sent")


def record_signed(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, blob_key: str, sha256: str,
                  now: datetime) -> dict[str, Any] | None:
    """A sent proposal becomes signed, with the signed copy's key and digest; None when it is no longer sent
    (signed already by an earlier delivery, voided, expired): nothing changes."""
    marked = conn.execute(Q["proposal_mark_signed"], {"id": proposal, "now": now, "key": blob_key,
                                                      "sha": sha256}).fetchone()
    if marked is None:
        return None
    service.set_status(conn, tenant=tenant, proposal=proposal, frm="sent", to="signed", actor=audit.SYSTEM, now=now)
    found = _current(conn, proposal)
    _emit(conn, tenant, "signed", found)
    return found


def record_checkout(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, session_id: str, url: str,
                    actor: Actor) -> None:
    """The Checkout Session made for a signed proposal (the latest one is shown; any of them may pay it)."""
    conn.execute(Q["proposal_checkout"], {"id": proposal, "session": session_id, "url": url})
    audit.record(conn, tenant_id=tenant, action="proposal.payment_link", actor=actor, target_type="proposal",
                 target_id=proposal, details={"checkout_session_id": session_id})


def forget_checkout(conn: Conn, *, proposal: uuid.UUID, session_id: str) -> None:
    """The proposal's link no longer pays (closed, or its delayed payment failed): not shown, not checked again."""
    conn.execute(Q["proposal_checkout_forget"], {"id": proposal, "session": session_id})


def payment_failed(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, session_id: str) -> None:
    """A delayed payment through the proposal's session failed: audited, and its link forgotten."""
    forget_checkout(conn, proposal=proposal, session_id=session_id)
    audit.record(conn, tenant_id=tenant, action="proposal.payment_failed", target_type="proposal",
                 target_id=proposal, details={"checkout_session_id": session_id})


@dataclass(frozen=True)
class Payment:
    """A completed Checkout Session as Stripe's verified event reported it."""

    proposal: uuid.UUID
    session_id: str
    amount_total: int
    currency: str


def record_paid(conn: Conn, *, tenant: uuid.UUID, payment: Payment, now: datetime) -> bool:
    """A signed proposal becomes paid, and its lead moves to its pipeline's won stage; exactly once: False when
    it is not signed (paid already, voided) or the amount is not the proposal's total (audited, nothing moves)."""
    found = conn.execute(Q["proposal_get"], (payment.proposal,)).fetchone()
    if found is None:
        return False  # deleted since, or not this workspace's
    row = service.row_of(found)
    details = {"checkout_session_id": payment.session_id, "status": row["status"]}
    if payment.amount_total != row["total_minor"] or payment.currency.upper() != row["currency"]:
        audit.record(conn, tenant_id=tenant, action="proposal.payment_mismatch", target_type="proposal",
                     target_id=payment.proposal, details=details)
        return False
    moved = conn.execute(Q["proposal_mark_paid"], {"id": payment.proposal, "now": now,
                                                   "session": payment.session_id}).fetchone()
    if moved is None:
        # Money for a proposal that was voided, expired or never signed; or a second session paid the same proposal
        # (a redelivery of the first, or of its other event, is no news).
        if row["status"] != "paid" or row["paid_session_id"] != payment.session_id:
            action = "proposal.payment_duplicate" if row["status"] == "paid" else "proposal.payment_unexpected"
            audit.record(conn, tenant_id=tenant, action=action, target_type="proposal", target_id=payment.proposal,
                         details=details)
        return False
    # Imported here: the CRM's resource layer (and Chalice with it) stays out of the inbound worker's cold start,
    # which loads this module for every provider's events.
    from chalicelib.auth.principal import Principal
    from chalicelib.crm import leads
    from chalicelib.crm.api import Context

    won = leads.win(Context(conn, tenant, Principal(actor=audit.SYSTEM)), row["lead_id"])
    service.set_status(conn, tenant=tenant, proposal=payment.proposal, frm="signed", to="paid", actor=audit.SYSTEM,
                       now=now, details={"checkout_session_id": payment.session_id, "lead_won": won})
    _emit(conn, tenant, "paid", row)
    return True
