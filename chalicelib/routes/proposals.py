"""Proposals: drafts under a lead, then one proposal by id (read, edit a draft, void, revise, its PDF)."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib import clock
from chalicelib.atlas import drafting
from chalicelib.auth.principal import parse_id, workspace_read, workspace_scope
from chalicelib.http import endpoint, idempotent, json_response
from chalicelib.inputs import if_match, parse_body
from chalicelib.proposals import documents, service
from chalicelib.proposals.models import ProposalDrafted, ProposalIn, ProposalList, ProposalOut, ProposalPatch

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
    with workspace_scope(request, workspace_id) as (conn, _principal):
        gathered = drafting.gather(conn, tenant, lead)
    provider = drafting.get_drafter()
    answer = provider.suggest(gathered.given)
    with workspace_scope(request, workspace_id) as (conn, principal):
        proposal, warnings = drafting.draft(conn, tenant=tenant, lead=lead, gathered=gathered, answer=answer,
                                            actor=principal.actor, now=clock.now())
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
                      "cannot (409).")
def void_proposal(workspace_id: str, proposal_id: str) -> Response:
    """Audited."""
    request = bp.current_request
    with workspace_scope(request, workspace_id) as (conn, principal):
        voided = service.move(conn, tenant=parse_id(workspace_id), proposal=parse_id(proposal_id), to="void",
                              actor=principal.actor, now=clock.now(), expected=if_match(request))
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
    return Response(body=body, status_code=200, headers={
        "Content-Type": "application/pdf", "Content-Disposition": f'inline; filename="proposal-{proposal}.pdf"',
        "Cache-Control": "private, no-store"})
