"""Proposals: drafts under a lead, then one proposal by id (read, edit a draft, void, revise, its PDF)."""

from __future__ import annotations

import uuid

from chalice.app import Blueprint, Response

from chalicelib import clock
from chalicelib.atlas import drafting
from chalicelib.auth.principal import parse_id, workspace_read, workspace_scope, workspace_tx
from chalicelib.http import endpoint, idempotent, json_response
from chalicelib.inputs import if_match, parse_body
from chalicelib.proposals import documents, sending, service
from chalicelib.proposals.models import (
    ProposalDrafted,
    ProposalIn,
    ProposalList,
    ProposalOut,
    ProposalPatch,
    SendIn,
    SignedCopy,
    StatusHistory,
)
from chalicelib.web import pages

bp = Blueprint(__name__)
LEAD = "/workspaces/{workspace_id}/leads/{lead_id}/proposals"
ITEM = "/workspaces/{workspace_id}/proposals/{proposal_id}"
TAGS = ("proposals",)
ERRORS = (401, 403, 404)


def _answer(proposal: ProposalOut, status: int = 200, workspace: str | None = None) -> Response:
    headers = {"ETag": service.etag(proposal)}
    if workspace is not None:
        headers["Location"] = f"/workspaces/{workspace}/proposals/{proposal.id}"
    return json_response(proposal, status, headers=headers)


@endpoint(bp, LEAD, "POST", summary="Draft a proposal for a lead", request_model=ProposalIn,
          response_model=ProposalOut, status=201, errors_=(*ERRORS, 422), tags=TAGS, idempotent=True, etag=True,
          description="Lines name a product of the price book (its price and tax are copied) or are free text "
                      "with their own unit amount and tax rate. The server computes every total: per line, "
                      "net = quantity x unit x (1 - discount), then tax on the net, each rounded half-even to "
                      "a minor unit; the totals are the sums of the rounded lines.")
def create_proposal(workspace_id: str, lead_id: str) -> Response:
    """A product of another workspace, an inactive one or one priced in another currency is a 422."""
    request = bp.current_request
    body = parse_body(request, ProposalIn)
    tenant, lead = parse_id(workspace_id), parse_id(lead_id)
    with workspace_scope(request, workspace_id) as (conn, principal):
        # The key's route names the lead: the same key and body for another lead is another request.
        return idempotent(conn, request, tenant_id=tenant, route=f"POST /leads/{lead}/proposals",
                          produce=lambda: _answer(service.create(conn, tenant=tenant, lead=lead, spec=body,
                                                                 actor=principal.actor, now=clock.now()),
                                                  201, workspace_id))


@endpoint(bp, LEAD + "/draft", "POST", summary="Let Atlas draft a proposal for a lead", response_model=ProposalDrafted,
          status=201, errors_=(*ERRORS, 502), tags=TAGS, etag=True,
          description="Only once an owner or admin turned Atlas on (`PATCH /workspaces/{id}` with "
                      "`{\"atlas_enabled\": true}`; 403 before). Atlas reads the lead, its contact, company, notes "
                      "and custom fields and the active products, and proposes an introduction and lines by SKU "
                      "and quantity. Prices, tax and currency always come from the price book: an unknown SKU, "
                      "a price on a line or an amount in the text is dropped and reported in `warnings`. The "
                      "draft is for an operator to review and edit; the prompt and the answer are not kept.")
def draft_proposal(workspace_id: str, lead_id: str) -> Response:
    """Two short transactions around the provider's call: no connection is held while a model writes."""
    request = bp.current_request
    tenant, lead = parse_id(workspace_id), parse_id(lead_id)
    # Database work only inside each: the authorization travels with the reads (workspace_tx).
    with workspace_tx(request, workspace_id) as (conn, _caller):
        gathered = drafting.gather(conn, tenant, lead)
    provider = drafting.get_drafter()
    answer = provider.suggest(gathered.given)
    with workspace_tx(request, workspace_id) as (conn, caller):
        proposal, warnings = drafting.draft(conn, tenant=tenant, lead=lead, gathered=gathered, answer=answer,
                                            actor=lambda: caller().actor, now=clock.now())
    drafted = ProposalDrafted(**proposal.model_dump(), warnings=warnings, provider=provider.name)
    return json_response(drafted, 201, headers={"ETag": service.etag(proposal),
                                                "Location": f"/workspaces/{workspace_id}/proposals/{proposal.id}"})


@endpoint(bp, LEAD, "GET", summary="A lead's proposals, newest first", response_model=ProposalList,
          errors_=ERRORS, tags=TAGS)
def list_proposals(workspace_id: str, lead_id: str) -> Response:
    """Without their lines."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        found = service.lead_list(conn, parse_id(lead_id))
    return json_response(found)


@endpoint(bp, ITEM, "GET", summary="A proposal with its lines and totals", response_model=ProposalOut,
          errors_=ERRORS, tags=TAGS, etag=True)
def get_proposal(workspace_id: str, proposal_id: str) -> Response:
    """With ETag."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        found = service.get(conn, parse_id(proposal_id))
    return _answer(found)


@endpoint(bp, ITEM, "PATCH", summary="Edit a draft proposal", request_model=ProposalPatch,
          response_model=ProposalOut, errors_=(*ERRORS, 409, 412, 422), tags=TAGS, etag=True,
          description="Only a draft is edited (409 otherwise: revise it). `line_items` replaces every line. "
                      "Honours If-Match.")
def patch_proposal(workspace_id: str, proposal_id: str) -> Response:
    """Audited with the changed fields' names."""
    request = bp.current_request
    body = parse_body(request, ProposalPatch)
    with workspace_scope(request, workspace_id) as (conn, principal):
        changed = service.patch(conn, tenant=parse_id(workspace_id), proposal=parse_id(proposal_id), spec=body,
                                expected=if_match(request), actor=principal.actor, now=clock.now())
    return _answer(changed)


@endpoint(bp, ITEM, "DELETE", summary="Delete a draft proposal", status=204, errors_=(*ERRORS, 409, 412),
          tags=TAGS)
def delete_proposal(workspace_id: str, proposal_id: str) -> Response:
    """Anything sent is kept (409): void it instead."""
    request = bp.current_request
    with workspace_scope(request, workspace_id) as (conn, principal):
        service.delete_draft(conn, tenant=parse_id(workspace_id), proposal=parse_id(proposal_id),
                             expected=if_match(request), actor=principal.actor)
    return Response(body="", status_code=204)


@endpoint(bp, ITEM + "/void", "POST", summary="Void a proposal", response_model=ProposalOut,
          errors_=(*ERRORS, 409, 412), tags=TAGS, etag=True,
          description="A draft, sent or signed proposal can be voided; a paid, declined, expired or void one "
                      "cannot (409). Its open Stripe payment link is closed; a signature that comes later is "
                      "audited and changes nothing.")
def void_proposal(workspace_id: str, proposal_id: str) -> Response:
    """Audited."""
    request = bp.current_request
    with workspace_scope(request, workspace_id) as (conn, principal):
        voided = sending.void(conn, tenant=parse_id(workspace_id), proposal=parse_id(proposal_id),
                              expected=if_match(request), actor=principal.actor, now=clock.now())
    return _answer(voided)


@endpoint(bp, ITEM + "/revise", "POST", summary="Revise a sent proposal as a new draft", response_model=ProposalOut,
          status=201, errors_=(*ERRORS, 409), tags=TAGS, etag=True,
          description="Copies the proposal, its lines and their prices as they were, into a new draft one "
                      "version up that names it as `previous_id`. A draft is edited instead (409).")
def revise_proposal(workspace_id: str, proposal_id: str) -> Response:
    """Audited."""
    request = bp.current_request
    with workspace_scope(request, workspace_id) as (conn, principal):
        copy = service.revise(conn, tenant=parse_id(workspace_id), proposal=parse_id(proposal_id),
                              actor=principal.actor, now=clock.now())
    return _answer(copy, 201, workspace_id)


@endpoint(bp, ITEM + "/pdf", "GET", summary="A proposal as a PDF", errors_=ERRORS, tags=TAGS,
          description="A draft is rendered as it stands; a sent proposal's PDF was stored when it was sent and is "
                      "served as stored, never rendered again.")
def proposal_pdf(workspace_id: str, proposal_id: str) -> Response:
    """application/pdf."""
    tenant, proposal = parse_id(workspace_id), parse_id(proposal_id)
    with workspace_read(bp.current_request, workspace_id) as conn:
        found = documents.source(conn, proposal)
    body = documents.pdf_bytes(tenant, found)  # outside the transaction: no connection held while drawing
    return _pdf(body, f"proposal-{proposal}.pdf")


def _pdf(body: bytes, filename: str) -> Response:
    return Response(body=body, status_code=200, headers={
        "Content-Type": "application/pdf", "Content-Disposition": f'inline; filename="{filename}"',
        "Cache-Control": "private, no-store"})


@endpoint(bp, ITEM + "/signed-pdf", "GET", summary="A link to the signed copy of a proposal (PDF)",
          response_model=SignedCopy, errors_=ERRORS, tags=TAGS,
          description="A short-lived download link (DOWNLOAD_URL_TTL_S) to the copy SignNow returned when the signer "
                      "finished, with its SHA-256 (404 until then). A link, not the bytes: a signed PDF may be "
                      "larger than an API answer can carry.")
def signed_pdf(workspace_id: str, proposal_id: str) -> Response:
    """Like an attachment's download."""
    tenant, proposal = parse_id(workspace_id), parse_id(proposal_id)
    with workspace_read(bp.current_request, workspace_id) as conn:
        found = documents.signed_copy(conn, tenant, proposal)
    return json_response(found)


@endpoint(bp, ITEM + "/history", "GET", summary="Every status a proposal took, oldest first",
          response_model=StatusHistory, errors_=ERRORS, tags=TAGS)
def proposal_history(workspace_id: str, proposal_id: str) -> Response:
    """No actor for SignNow's and Stripe's callbacks and the scheduled expiry."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        found = service.history(conn, parse_id(proposal_id))
    return json_response(found)


@endpoint(bp, ITEM + "/send", "POST", summary="Send a draft for signature (SignNow)", request_model=SendIn,
          response_model=ProposalOut, errors_=(*ERRORS, 409, 412, 422, 502), tags=TAGS, idempotent=True, etag=True,
          description="Freezes the draft: its PDF is stored with its SHA-256 and never rendered again. With the "
                      "workspace's SignNow integration (409 without it), the PDF is uploaded, its completion "
                      "subscribed to a callback URL of its own with a secret of its own, and a signature invite "
                      "sent to `signer_email` (default: the lead's contact's email). Any failure of SignNow is a "
                      "502 with nothing recorded. SignNow's signed callback then makes it `signed`, keeps the "
                      "signed copy and, with a Stripe integration, makes its payment link.")
def send_proposal(workspace_id: str, proposal_id: str) -> Response:
    """Audited; emits proposal.sent."""
    request = bp.current_request
    body = parse_body(request, SendIn)
    tenant, proposal = parse_id(workspace_id), parse_id(proposal_id)
    with workspace_scope(request, workspace_id) as (conn, principal):
        return idempotent(conn, request, tenant_id=tenant, route=f"POST /proposals/{proposal}/send",
                          produce=lambda: _answer(sending.send(conn, tenant=tenant, proposal=proposal, spec=body,
                                                               expected=if_match(request), actor=principal.actor,
                                                               now=clock.now())))


@endpoint(bp, ITEM + "/payment-link", "POST", summary="A new Stripe payment link for a signed proposal",
          response_model=ProposalOut, errors_=(*ERRORS, 409, 502), tags=TAGS, idempotent=True, etag=True,
          description="A Stripe Checkout Session for the proposal's total, with the workspace's Stripe key (409 "
                      "without it, or before the proposal is signed); `checkout_url` is its page. One is made "
                      "when the proposal is signed; this makes a new one (say, after that one expired). Stripe's "
                      "`checkout.session.completed` for any of them makes the proposal `paid` and moves its lead "
                      "to its pipeline's won stage, once.")
def proposal_payment_link(workspace_id: str, proposal_id: str) -> Response:
    """Audited."""
    request = bp.current_request
    tenant, proposal = parse_id(workspace_id), parse_id(proposal_id)
    key = f"proposal-{proposal}-{request.headers.get('idempotency-key') or uuid.uuid4()}"
    with workspace_scope(request, workspace_id) as (conn, principal):
        return idempotent(conn, request, tenant_id=tenant, route=f"POST /proposals/{proposal}/payment-link",
                          produce=lambda: _answer(sending.payment_link(conn, tenant=tenant, proposal=proposal,
                                                                       idempotency_key=key, actor=principal.actor)))


@endpoint(bp, "/payments/complete", "GET", summary="Where Stripe Checkout returns a payer", tags=TAGS,
          description="A static thank-you page (the Checkout Sessions' success_url). The proposal becomes paid "
                      "only by Stripe's signed event, never by a visit here.")
def payment_complete() -> Response:
    """text/html."""
    html, headers = pages.payment_complete_page()
    return Response(body=html, status_code=200, headers=headers)
