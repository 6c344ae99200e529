"""The proposals API's models: what a client sends (never a total) and what it reads back."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from chalicelib.auth.addresses import EmailAddress
from chalicelib.crm.values import MAX_PRICE_MINOR, Currency

Status = Literal["draft", "sent", "signed", "paid", "declined", "expired", "void"]


def _quantity(value: object) -> Decimal:
    """An integer, or a decimal string with at most 3 places (never a float: 0.1 is not exact)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("an integer or a decimal string such as \"1.5\"")
    text = str(value)
    try:
        quantity = Decimal(text)
    except InvalidOperation:
        raise ValueError("an integer or a decimal string such as \"1.5\"") from None
    if not quantity.is_finite() or quantity <= 0 or quantity > 1_000_000 or -quantity.as_tuple().exponent > 3:  # type: ignore[operator]
        raise ValueError("above 0, at most 1,000,000, with at most 3 decimal places")
    return quantity


Quantity = Annotated[Decimal, BeforeValidator(_quantity)]


class LineIn(BaseModel):
    """A line: a product of the price book (its name, price and tax come from the book), or free text with
    its own unit amount and tax rate."""

    model_config = ConfigDict(extra="forbid")
    product_id: UUID | None = None
    description: str | None = Field(default=None, min_length=1, max_length=500)
    quantity: Quantity
    unit_amount_minor: int | None = Field(default=None, ge=0, le=MAX_PRICE_MINOR, strict=True)
    discount_bp: int = Field(default=0, ge=0, le=10_000, strict=True)
    tax_rate_bp: int | None = Field(default=None, ge=0, le=10_000, strict=True)

    @model_validator(mode="after")
    def _one_kind(self) -> LineIn:
        if self.product_id is not None and (self.unit_amount_minor is not None or self.tax_rate_bp is not None
                                            or self.description is not None):
            raise ValueError("a product's line takes its name, price and tax from the price book")
        if self.product_id is None and (self.description is None or self.unit_amount_minor is None):
            raise ValueError("a free-text line needs description and unit_amount_minor")
        return self


class ProposalIn(BaseModel):
    """A new draft."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    introduction: str = Field(default="", max_length=20_000)
    valid_until: date
    currency: Currency
    line_items: list[LineIn] = Field(default_factory=list, max_length=500)


class ProposalPatch(BaseModel):
    """Changes to a draft; line_items, when sent, replaces every line."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, min_length=1, max_length=200)
    introduction: str | None = Field(default=None, max_length=20_000)
    valid_until: date | None = None
    currency: Currency | None = None
    line_items: list[LineIn] | None = Field(default=None, max_length=500)


class LineOut(BaseModel):
    """A line with its computed amounts (quantity as a decimal string)."""

    position: int
    product_id: UUID | None
    sku: str | None
    description: str
    quantity: str
    unit_amount_minor: int
    discount_bp: int
    tax_rate_bp: int
    net_minor: int
    tax_minor: int
    total_minor: int


class RateOut(BaseModel):
    """The lines of one tax rate, summed."""

    tax_rate_bp: int
    net_minor: int
    tax_minor: int


class TotalsOut(BaseModel):
    """Computed by the server: sums of the lines, each rounded half-even."""

    subtotal_minor: int
    tax_minor: int
    total_minor: int
    tax_by_rate: list[RateOut]


class ProposalOut(BaseModel):
    """A proposal with its lines and totals."""

    id: UUID
    lead_id: UUID
    version: int
    previous_id: UUID | None
    status: Status
    title: str
    introduction: str
    valid_until: date
    currency: str
    line_items: list[LineOut]
    totals: TotalsOut
    pdf_sha256: str | None = Field(description="SHA-256 of the PDF frozen when the proposal was sent")
    sent_at: datetime | None
    signer_email: str | None = Field(default=None, description="Who was asked to sign (SignNow)")
    signnow_document_id: str | None = None
    signed_pdf_sha256: str | None = Field(default=None, description="SHA-256 of the signed copy SignNow returned")
    signed_at: datetime | None = None
    checkout_url: str | None = Field(default=None, description="The latest Stripe Checkout page for paying the total")
    paid_at: datetime | None = None
    status_changed_at: datetime
    created_at: datetime
    updated_at: datetime


class SendIn(BaseModel):
    """Who signs: the lead's contact's email unless another is given."""

    model_config = ConfigDict(extra="forbid")

    signer_email: EmailAddress | None = None
    message: str | None = Field(default=None, max_length=1000, description="The invitation's message")


class SignedCopy(BaseModel):
    """Where to fetch a proposal's signed PDF until `expires_at`, and its digest."""

    url: str
    expires_at: datetime
    sha256: str


class StatusChange(BaseModel):
    """One status a proposal took; no actor for a provider's callback or the scheduled expiry."""

    from_status: Status | None
    to_status: Status
    changed_at: datetime
    actor_user_id: UUID | None
    actor_api_key_id: UUID | None


class StatusHistory(BaseModel):
    """A proposal's statuses, oldest first."""

    data: list[StatusChange]


class ProposalDrafted(ProposalOut):
    """A draft Atlas wrote, with what it dropped from the provider's answer and why."""

    warnings: list[str]
    provider: str


class ProposalSummary(BaseModel):
    """A proposal in a lead's list (without its lines)."""

    id: UUID
    version: int
    status: Status
    title: str
    valid_until: date
    currency: str
    total_minor: int
    created_at: datetime
    updated_at: datetime


class ProposalList(BaseModel):
    """A lead's proposals, newest first (one page holds them all)."""

    data: list[ProposalSummary]
    next_cursor: str | None
