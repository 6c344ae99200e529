"""Atlas drafts a proposal for a lead: read what the workspace holds (only once it turned Atlas on), ask the
provider for an introduction and SKU/quantity lines, then build the draft from the price book alone.

What a provider answers is checked, never trusted: a SKU that is not an active product in the proposal's
currency is dropped, a price or any other key on a line is ignored, and a sentence of the introduction that
states an amount is removed; each is reported in `warnings`. Prices, tax and currency come from the book.
Only the draft is stored: the prompt and the answer are not kept, logged or reported anywhere.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib import errors
from chalicelib.atlas.bedrock import BedrockDrafter
from chalicelib.atlas.model import Drafter, DraftInput, Product, Suggestion
from chalicelib.atlas.template import TemplateDrafter
from chalicelib.audit import Actor
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.proposals import service
from chalicelib.proposals.models import LineIn, ProposalIn, ProposalOut
from chalicelib.settings import get_settings

Q = queries.load(__package__)
VALID_FOR = timedelta(days=30)
OFF = ("Atlas is off for this workspace: an owner or admin turns it on with PATCH /workspaces/{id} "
       "and {\"atlas_enabled\": true}")
# Any mention of money: a currency sign, a common ISO code or a currency word, with or without a number
# ("EUR 5,000", "5k EUR", "ten thousand dollars", "500 kr"). A sentence that has one is dropped: the draft's
# amounts are the price book's, printed in its table, and nowhere else. Strict on purpose: a sentence lost
# is reported; a price a model made up would be read as an offer.
_PRICE = re.compile(r"[$€£¥₹₽₩₪₫฿¢]|(?<![a-z])(?:eur|usd|gbp|chf|jpy|cny|cad|aud|nzd|sek|nok|dkk|pln|czk|huf|inr"
                    r"|brl|mxn|zar|sgd|hkd|euros?|dollars?|pounds?|francs?|yen|rupees?|cents?|kr|kronor|kroner"
                    r"|z[łl]oty)(?![a-z])", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")

_override: Drafter | None = None


def use_drafter(drafter: Drafter | None) -> None:
    """Install a provider for this process (tests, with a stubbed Bedrock client); None: from settings."""
    global _override
    _override = drafter


def get_drafter() -> Drafter:
    """The provider ATLAS_PROVIDER names."""
    if _override is not None:
        return _override
    settings = get_settings()
    if settings.atlas_provider == "bedrock":
        return _bedrock(settings.atlas_model_id)
    return TemplateDrafter()


@functools.cache
def _bedrock(model_id: str) -> BedrockDrafter:
    """One provider (and so one boto3 client) per model for the process."""
    return BedrockDrafter(model_id)


@dataclass(frozen=True)
class Gathered:
    """What Atlas read for one lead, and the price book to map its answer back."""

    given: DraftInput
    title: str
    currency: str
    book: dict[str, tuple[uuid.UUID, str]]  # SKU (upper case) -> (product id, currency)


def gather(conn: Conn, tenant: uuid.UUID, lead: uuid.UUID) -> Gathered:
    """404 for a lead that is not this workspace's (whatever the switch), then 403 while Atlas is off."""
    # Queued together: one round trip for the four reads.
    lead_read, switch_read = conn.execute(Q["lead_for_draft"], (lead,)), conn.execute(Q["atlas_enabled"], (tenant,))
    notes_read, products_read = conn.execute(Q["lead_notes"], (lead,)), conn.execute(Q["active_products"])
    row = lead_read.fetchone()
    if row is None:
        raise errors.NotFound("no such lead")
    switch = switch_read.fetchone()
    if switch is None or not switch[0]:
        raise errors.Forbidden(OFF)
    title, contact, company, lead_currency, custom = row
    notes = tuple(r[0] for r in notes_read.fetchall())
    products = products_read.fetchall()
    currency = lead_currency or (Counter(p[4] for p in products).most_common(1) or [("EUR", 0)])[0][0]
    given = DraftInput(workspace=switch[1], lead_title=title, contact_name=contact, company_name=company,
                       notes=notes, custom=dict(custom or {}),
                       products=tuple(Product(p[1], p[2], p[3]) for p in products if p[4] == currency))
    return Gathered(given, title, currency, _by_sku(products))


def _by_sku(products: list[Any]) -> dict[str, tuple[uuid.UUID, str]]:
    """Products by their exact SKU, and by the upper-cased SKU where that names one product only (SKUs are
    unique as written: "pro-1" and "PRO-1" may be two products, and then only the exact one matches)."""
    exact = {p[1]: (p[0], p[4]) for p in products}
    folded: dict[str, list[tuple[uuid.UUID, str]]] = {}
    for product in products:
        folded.setdefault(product[1].upper(), []).append((product[0], product[4]))
    return {**{key: found[0] for key, found in folded.items() if len(found) == 1}, **exact}


def checked(gathered: Gathered, answer: Suggestion) -> tuple[list[LineIn], str, list[str]]:
    """The answer's lines priced from the book, its introduction without amounts, and what was dropped."""
    warnings: list[str] = []
    if answer.model_extra:
        warnings.append("the answer's extra fields were ignored: " + ", ".join(sorted(answer.model_extra)))
    lines: list[LineIn] = []
    for item in answer.line_items:
        found = gathered.book.get(item.sku) or gathered.book.get(item.sku.upper())
        if found is None:
            warnings.append(f"SKU {item.sku[:64]} is not in the price book: dropped")
            continue
        if found[1] != gathered.currency:
            warnings.append(f"SKU {item.sku[:64]} is priced in {found[1]}, not {gathered.currency}: dropped")
            continue
        if item.model_extra:
            warnings.append(f"SKU {item.sku[:64]}: {', '.join(sorted(item.model_extra))} ignored "
                            "(prices come from the price book)")
        lines.append(LineIn(product_id=found[0], quantity=item.quantity))
    kept = []
    for sentence in _SENTENCE.split(answer.introduction.strip()):
        if _PRICE.search(sentence):
            warnings.append("a sentence stating an amount was removed from the introduction")
        elif sentence:
            kept.append(sentence)
    return lines, " ".join(kept), warnings


def draft(conn: Conn, *, tenant: uuid.UUID, lead: uuid.UUID, gathered: Gathered, answer: Suggestion,
          actor: Callable[[], Actor], now: datetime) -> tuple[ProposalOut, list[str]]:
    """Store the checked draft (in the caller's tenant transaction); returns it and the warnings (403 when
    Atlas was turned off while the provider wrote). The switch is read with the draft's own reads (one round
    trip), and checked before anything is written."""
    switch_read = conn.execute(Q["atlas_enabled"], (tenant,))
    lines, introduction, warnings = checked(gathered, answer)
    spec = ProposalIn(title=f"Proposal: {gathered.title}"[:200], introduction=introduction,
                      valid_until=(now + VALID_FOR).date(), currency=gathered.currency, line_items=lines)

    def switched_on() -> Actor:
        switch = switch_read.fetchone()  # arrived with the lead's read
        if switch is None or not switch[0]:
            raise errors.Forbidden(OFF)
        return actor()

    return service.create(conn, tenant=tenant, lead=lead, spec=spec, actor=switched_on, now=now), warnings
