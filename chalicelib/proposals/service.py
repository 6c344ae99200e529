"""Proposals: create and edit drafts, read them with their lines and totals, move them along the status
machine, revise a frozen one as a new draft. Every function runs in the caller's tenant transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from chalicelib import audit, errors, versions
from chalicelib.audit import Actor
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.proposals import totals as money
from chalicelib.proposals.models import (
    LineIn,
    LineOut,
    ProposalIn,
    ProposalList,
    ProposalOut,
    ProposalPatch,
    ProposalSummary,
    RateOut,
    StatusChange,
    StatusHistory,
    TotalsOut,
)

Q = queries.load(__package__)
# Which status each may move to: only a draft is edited; sent, signed and paid come from SignNow and Stripe;
# expired from the schedule; void from an operator.
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"sent", "void"}),
    "sent": frozenset({"signed", "declined", "expired", "void"}),
    "signed": frozenset({"paid", "void"}),
    "paid": frozenset(),
    "declined": frozenset(),
    "expired": frozenset(),
    "void": frozenset(),
}
_COLUMNS = ("id", "lead_id", "version", "previous_id", "status", "title", "introduction", "valid_until", "currency",
            "subtotal_minor", "tax_minor", "total_minor", "pdf_sha256", "sent_at", "status_changed_at",
            "created_at", "updated_at", "signer_email", "signnow_document_id", "signed_pdf_sha256", "signed_at",
            "checkout_url", "paid_at", "pdf_blob_key", "signed_pdf_blob_key", "checkout_session_id", "paid_session_id")
# A line's columns as proposal_lines returns them.
_LINE_COLUMNS = ("position", "product_id", "sku", "description", "quantity", "unit_amount_minor", "discount_bp",
                 "tax_rate_bp", "net_minor", "tax_minor")
# Stored, not shown as such: where the blobs are (GET …/pdf and …/signed-pdf serve them), Stripe's session ids.
_INTERNAL = frozenset({"subtotal_minor", "tax_minor", "total_minor", "pdf_blob_key", "signed_pdf_blob_key",
                       "checkout_session_id", "paid_session_id"})


def row_of(row: Sequence[Any] | None) -> dict[str, Any]:
    """A proposal's row (proposal_get's columns) by column name; NotFound for no row."""
    if row is None:
        raise errors.NotFound("no such proposal")
    return dict(zip(_COLUMNS, row, strict=True))


def etag(proposal: ProposalOut) -> str:
    """The proposal version's strong ETag."""
    return versions.etag(proposal.id, proposal.updated_at)


def _book(conn: Conn, items: Sequence[LineIn]) -> Callable[[], dict[uuid.UUID, Sequence[Any]]]:
    """Queue the read of the products the lines name; call the result for them by id."""
    wanted = sorted({item.product_id for item in items if item.product_id is not None})
    if not wanted:
        return dict
    cursor = conn.execute(Q["products_by_id"], (wanted,))
    return lambda: {row[0]: row for row in cursor.fetchall()}


def _lines(conn: Conn, currency: str, items: Sequence[LineIn],
           book: Callable[[], dict[uuid.UUID, Sequence[Any]]] | None = None) -> list[dict[str, Any]]:
    """Each line's columns: a product's name, SKU, price and tax from the price book (422 for a product that is
    not this workspace's, inactive, or in another currency), then its computed amounts."""
    books = (book or _book(conn, items))()
    problems, lines = [], []
    for position, item in enumerate(items):
        if item.product_id is not None:
            product = books.get(item.product_id)
            if product is None or not product[6] or product[4] != currency:
                why = "not found" if product is None else "inactive" if not product[6] else f"priced in {product[4]}"
                problems.append(errors.FieldError(f"line_items.{position}.product_id", why, "invalid_product"))
                continue
            description, sku, unit, rate = product[1], product[2], product[3], product[5]
        else:
            assert item.description is not None and item.unit_amount_minor is not None
            description, sku, unit, rate = item.description, None, item.unit_amount_minor, item.tax_rate_bp or 0
        lines.append({"position": position, "product_id": item.product_id, "sku": sku, "description": description,
                      "quantity": item.quantity, "unit_amount_minor": unit, "discount_bp": item.discount_bp,
                      "tax_rate_bp": rate})
    if problems:
        raise errors.ValidationFailed("some lines cannot be priced", errors=problems)
    return lines


def _computed(lines: list[dict[str, Any]]) -> money.Totals:
    try:
        computed = money.compute([money.Line(Decimal(line["quantity"]), line["unit_amount_minor"],
                                             line["discount_bp"], line["tax_rate_bp"]) for line in lines])
    except money.TooLarge as exc:
        raise errors.ValidationFailed(str(exc), errors=[errors.FieldError("line_items", "too large",
                                                                          "too_large")]) from None
    for line, amounts in zip(lines, computed.lines, strict=True):
        line.update(net_minor=amounts.net_minor, tax_minor=amounts.tax_minor)
    return computed


def _write_lines(conn: Conn, tenant: uuid.UUID, proposal: uuid.UUID, lines: list[dict[str, Any]]) -> None:
    if not lines:
        return

    def column(name: str) -> list[Any]:
        return [line[name] for line in lines]

    conn.execute(Q["lines_insert"], {
        "tenant": tenant, "proposal": proposal, "positions": column("position"), "products": column("product_id"),
        "skus": column("sku"), "descriptions": column("description"), "quantities": column("quantity"),
        "units": column("unit_amount_minor"), "discounts": column("discount_bp"), "rates": column("tax_rate_bp"),
        "nets": column("net_minor"), "taxes": column("tax_minor")})


def _insert(conn: Conn, *, tenant: uuid.UUID, lead: uuid.UUID, title: str, introduction: str, valid_until: Any,
            currency: str, lines: list[dict[str, Any]], actor: Actor, now: datetime, version: int = 1,
            previous: uuid.UUID | None = None, computed: money.Totals | None = None) -> uuid.UUID:
    computed = computed or _computed(lines)
    proposal = uuid.uuid4()
    conn.execute(Q["proposal_insert"], {
        "tenant": tenant, "id": proposal, "lead": lead, "version": version, "previous": previous, "title": title,
        "introduction": introduction, "valid_until": valid_until, "currency": currency,
        "subtotal": computed.subtotal_minor, "tax": computed.tax_minor, "total": computed.total_minor, "now": now,
        "user": actor.user_id, "key": actor.api_key_id})
    _write_lines(conn, tenant, proposal, lines)
    return proposal


def create(conn: Conn, *, tenant: uuid.UUID, lead: uuid.UUID, spec: ProposalIn, actor: Actor | Callable[[], Actor],
           now: datetime) -> ProposalOut:
    """A new draft for a lead of this workspace (404 for another's). `actor` may be a function, called once the
    lead was read (a caller whose authorization travels with that read).

    One round trip before the commit: the lead and the products are read together, and the writes are queued
    (their errors come with the commit); the answer is built from what was written, not read back."""
    exists = conn.execute(Q["lead_exists"], (lead,))
    book = _book(conn, spec.line_items)  # queued behind it: one round trip for both
    if exists.fetchone() is None:
        raise errors.NotFound("no such lead")
    who = actor() if callable(actor) else actor
    lines = _lines(conn, spec.currency, spec.line_items, book)
    computed = _computed(lines)
    proposal = _insert(conn, tenant=tenant, lead=lead, title=spec.title, introduction=spec.introduction,
                       valid_until=spec.valid_until, currency=spec.currency, lines=lines, actor=who, now=now,
                       computed=computed)
    audit.record(conn, tenant_id=tenant, action="proposal.created", actor=who, target_type="proposal",
                 target_id=proposal, details={"lead_id": str(lead)})
    row = dict.fromkeys(_COLUMNS)
    row.update(id=proposal, lead_id=lead, version=1, status="draft", title=spec.title, introduction=spec.introduction,
               valid_until=spec.valid_until, currency=spec.currency, subtotal_minor=computed.subtotal_minor,
               tax_minor=computed.tax_minor, total_minor=computed.total_minor, status_changed_at=now, created_at=now,
               updated_at=now)
    return _out(row, [tuple(line[name] for name in _LINE_COLUMNS) for line in lines])


def get(conn: Conn, proposal: uuid.UUID) -> ProposalOut:
    """A proposal with its lines and totals (404 when it is not this workspace's)."""
    return stored_pdf(conn, proposal)[0]


def stored_pdf(conn: Conn, proposal: uuid.UUID) -> tuple[ProposalOut, str | None]:
    """The proposal and the blob key of its frozen PDF (None while it is a draft); one round trip."""
    head, lines = conn.execute(Q["proposal_get"], (proposal,)), conn.execute(Q["proposal_lines"], (proposal,))
    row = row_of(head.fetchone())
    return _out(row, lines.fetchall()), row["pdf_blob_key"]


def _out(row: dict[str, Any], line_rows: Sequence[Sequence[Any]]) -> ProposalOut:
    lines = [LineOut(position=r[0], product_id=r[1], sku=r[2], description=r[3], quantity=_text(r[4]),
                     unit_amount_minor=r[5], discount_bp=r[6], tax_rate_bp=r[7], net_minor=r[8], tax_minor=r[9],
                     total_minor=r[8] + r[9])
             for r in line_rows]
    rates = money.by_rate((line.tax_rate_bp, line.net_minor, line.tax_minor) for line in lines)
    totals = TotalsOut(subtotal_minor=row["subtotal_minor"], tax_minor=row["tax_minor"], total_minor=row["total_minor"],
                       tax_by_rate=[RateOut(tax_rate_bp=r.tax_rate_bp, net_minor=r.net_minor, tax_minor=r.tax_minor)
                                    for r in rates])
    fields = {k: v for k, v in row.items() if k not in _INTERNAL}
    return ProposalOut(**fields, line_items=lines, totals=totals)


def _text(quantity: Decimal) -> str:
    """A quantity as the shortest exact decimal string ("2", "1.5")."""
    return format(quantity.normalize(), "f")


def lead_list(conn: Conn, lead: uuid.UUID) -> ProposalList:
    """A lead's proposals, newest first (404 for another workspace's lead)."""
    if conn.execute(Q["lead_exists"], (lead,)).fetchone() is None:
        raise errors.NotFound("no such lead")
    rows = conn.execute(Q["lead_proposals"], (lead,)).fetchall()
    keys = ("id", "version", "status", "title", "valid_until", "currency", "total_minor", "created_at", "updated_at")
    return ProposalList(data=[ProposalSummary(**dict(zip(keys, r, strict=True))) for r in rows], next_cursor=None)


def locked(conn: Conn, proposal: uuid.UUID, expected: frozenset[str] | None) -> dict[str, Any]:
    """A proposal row locked for this transaction, checked against If-Match (404, 412)."""
    row = row_of(conn.execute(Q["proposal_lock"], (proposal,)).fetchone())
    versions.check(expected, versions.etag(row["id"], row["updated_at"]), "proposal")
    return row


def patch(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, spec: ProposalPatch,
          expected: frozenset[str] | None, actor: Actor, now: datetime) -> ProposalOut:
    """Edit a draft (409 once it was sent: revise it instead); honours If-Match."""
    row = locked(conn, proposal, expected)
    if row["status"] != "draft":
        raise errors.Conflict(f"a {row['status']} proposal is frozen: revise it as a new draft")
    sent = spec.model_fields_set
    for name in ("title", "valid_until", "currency"):
        if name in sent and getattr(spec, name) is None:
            raise errors.ValidationFailed("some fields cannot be cleared",
                                          errors=[errors.FieldError(name, "cannot be null", "null_not_allowed")])
    merged = {name: getattr(spec, name) if name in sent and getattr(spec, name) is not None else row[name]
              for name in ("title", "introduction", "valid_until", "currency")}
    amounts = {"subtotal": row["subtotal_minor"], "tax": row["tax_minor"], "total": row["total_minor"]}
    if "line_items" in sent and spec.line_items is not None:
        lines = _lines(conn, merged["currency"], spec.line_items)
        computed = _computed(lines)
        amounts = {"subtotal": computed.subtotal_minor, "tax": computed.tax_minor, "total": computed.total_minor}
        conn.execute(Q["lines_delete"], (proposal,))
        _write_lines(conn, tenant, proposal, lines)
    elif merged["currency"] != row["currency"] and _has_book_lines(conn, proposal):
        # The lines stay, and with them their totals; the price book's lines are priced in the old currency.
        raise errors.ValidationFailed("the lines are priced in the old currency: send line_items too",
                                      errors=[errors.FieldError("currency", "lines priced in another currency",
                                                                "currency_mismatch")])
    conn.execute(Q["proposal_update"], {**merged, **amounts, "now": now, "id": proposal})
    audit.record(conn, tenant_id=tenant, action="proposal.updated", actor=actor, target_type="proposal",
                 target_id=proposal, details={"fields": sorted(sent)})
    return get(conn, proposal)


def _has_book_lines(conn: Conn, proposal: uuid.UUID) -> bool:
    row = conn.execute(Q["proposal_has_book_lines"], (proposal,)).fetchone()
    return bool(row and row[0])


def move(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, to: str, actor: Actor, now: datetime,
         expected: frozenset[str] | None = None) -> ProposalOut:
    """Move a proposal along the status machine (409 for a move it does not allow)."""
    row = locked(conn, proposal, expected)
    if to not in TRANSITIONS[row["status"]]:
        raise errors.Conflict(f"a {row['status']} proposal cannot become {to}")
    set_status(conn, tenant=tenant, proposal=proposal, frm=row["status"], to=to, actor=actor, now=now)
    return get(conn, proposal)


def set_status(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, frm: str, to: str, actor: Actor,
               now: datetime, details: dict[str, Any] | None = None) -> bool:
    """Move a proposal from `frm` to `to` with its history entry and audit entry; False (nothing written) when it
    was no longer in `frm`. The caller checked the move against TRANSITIONS."""
    assert to in TRANSITIONS[frm], (frm, to)
    moved = conn.execute(Q["proposal_status"], {"status": to, "from": frm, "now": now, "id": proposal,
                                                "user": actor.user_id, "key": actor.api_key_id}).fetchone()
    if moved is None:
        return False
    audit.record(conn, tenant_id=tenant, action=f"proposal.{to}", actor=actor, target_type="proposal",
                 target_id=proposal, details={"from": frm, **(details or {})})
    return True


def history(conn: Conn, proposal: uuid.UUID) -> StatusHistory:
    """Every status a proposal took, oldest first (404 for another workspace's)."""
    exists, rows = conn.execute(Q["proposal_exists"], (proposal,)), conn.execute(Q["proposal_history"], (proposal,))
    if exists.fetchone() is None:
        raise errors.NotFound("no such proposal")
    return StatusHistory(data=[StatusChange(from_status=r[0], to_status=r[1], changed_at=r[2], actor_user_id=r[3],
                                            actor_api_key_id=r[4]) for r in rows.fetchall()])


def revise(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, actor: Actor, now: datetime) -> ProposalOut:
    """A new draft copying a frozen proposal (its lines and prices as they were), one version up; a proposal is
    revised once (409 after: revise its latest version)."""
    # Locked: of two revisions of one proposal at once, the second waits, then finds the first.
    source = _out(locked(conn, proposal, None), conn.execute(Q["proposal_lines"], (proposal,)).fetchall())
    if source.status == "draft":
        raise errors.Conflict("a draft is edited, not revised")
    newer = conn.execute(Q["proposal_revision"], (proposal,)).fetchone()
    if newer is not None:
        raise errors.Conflict(f"this proposal was revised already, as {newer[0]}")
    lines = [{**line.model_dump(exclude={"total_minor"}), "quantity": Decimal(line.quantity)}
             for line in source.line_items]
    copy = _insert(conn, tenant=tenant, lead=source.lead_id, title=source.title, introduction=source.introduction,
                   valid_until=source.valid_until, currency=source.currency, lines=lines, actor=actor, now=now,
                   version=source.version + 1, previous=source.id)
    audit.record(conn, tenant_id=tenant, action="proposal.revised", actor=actor, target_type="proposal",
                 target_id=copy, details={"previous_id": str(source.id)})
    return get(conn, copy)


def delete_draft(conn: Conn, *, tenant: uuid.UUID, proposal: uuid.UUID, expected: frozenset[str] | None,
                 actor: Actor) -> None:
    """Delete a draft (409 for anything sent: void it instead)."""
    row = locked(conn, proposal, expected)
    if row["status"] != "draft":
        raise errors.Conflict(f"a {row['status']} proposal is kept: void it instead")
    conn.execute(Q["proposal_delete"], (proposal,))
    audit.record(conn, tenant_id=tenant, action="proposal.deleted", actor=actor, target_type="proposal",
                 target_id=proposal)
