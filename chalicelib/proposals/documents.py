"""A proposal's PDF: rendered from a draft as it stands, or the frozen copy a sent proposal stored."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from chalicelib import errors
from chalicelib.blobs import get_blobs, tenant_key
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.proposals import pdf, service
from chalicelib.proposals.models import ProposalOut, SignedCopy

Q = queries.load(__package__)


@dataclass(frozen=True)
class Source:
    """What a PDF is made from, read in the tenant transaction (the rendering happens after it)."""

    proposal: ProposalOut
    parties: pdf.Parties
    stored_key: str | None


def source(conn: Conn, proposal_id: uuid.UUID) -> Source:
    """The proposal, who it is from and for, and its stored PDF's key (404 for another workspace's)."""
    context = conn.execute(Q["pdf_context"], (proposal_id,))  # queued: it travels with the proposal's reads
    proposal, key = service.stored_pdf(conn, proposal_id)
    row = context.fetchone()
    if row is None:
        raise errors.NotFound("no such proposal")
    contact = " ".join(part for part in (row[1], row[2]) if part) or None
    return Source(proposal, pdf.Parties(workspace=row[0], contact=contact, email=row[3], company=row[4]), key)


def pdf_bytes(tenant: uuid.UUID, found: Source) -> bytes:
    """The stored PDF of a sent proposal, or a draft rendered now."""
    if found.stored_key is not None:
        with get_blobs().open(tenant_key(tenant, found.stored_key)) as stored:
            return stored.read()
    return pdf.render(found.proposal, found.parties)


def signed_copy(conn: Conn, tenant: uuid.UUID, proposal_id: uuid.UUID) -> SignedCopy:
    """A download link to a proposal's signed copy (404 until it is signed, or for another workspace's)."""
    row = service.row_of(conn.execute(Q["proposal_get"], (proposal_id,)).fetchone())
    if row["signed_pdf_blob_key"] is None:
        raise errors.NotFound("the proposal has no signed copy")
    link = get_blobs().download_url(str(row["signed_pdf_blob_key"]), tenant_id=tenant,
                                    filename=f"proposal-{proposal_id}-signed.pdf", content_type="application/pdf")
    return SignedCopy(url=link.url, expires_at=link.expires_at, sha256=str(row["signed_pdf_sha256"]))
