"""The `template` provider (the local default): deterministic, no model and no network.

It proposes each active product that the lead's notes or custom field values name, by SKU or by name (whole
words, case-insensitive), with the quantity written right before it ("3 x Pro plan", "2 PRO-1"), else 1. The
introduction is a fixed text with the contact's, company's and lead's names. A note's words can only decide
which products are named: never a price, never the instructions.
"""

from __future__ import annotations

import re

from chalicelib.atlas.model import DraftInput, Product, SuggestedItem, Suggestion

MAX_QUANTITY = 1000


class TemplateDrafter:
    """Rules over the lead's own text."""

    name = "template"

    def suggest(self, given: DraftInput) -> Suggestion:
        """Products named in the notes or custom fields, in the price book's order."""
        text = "\n".join([*given.notes, *(str(v) for v in given.custom.values() if v is not None)])
        items = []
        for product in given.products:
            quantity = _named(text, product)
            if quantity:
                items.append(SuggestedItem(sku=product.sku, quantity=quantity))
        greeting = f"Dear {given.contact_name}," if given.contact_name else "Hello,"
        company = f" for {given.company_name}" if given.company_name else ""
        introduction = (f"{greeting}\n\nThank you for your interest. Following our conversations about "
                        f"\"{given.lead_title}\", here is our proposal{company}. Prices and taxes are as "
                        f"listed below; we are happy to adjust the scope with you.")
        return Suggestion(introduction=introduction, line_items=items)


def _named(text: str, product: Product) -> int:
    """The quantity the text asks for the product (0: not named)."""
    best = 0
    for label in (product.sku, product.name):
        pattern = re.compile(r"(?:(\d{1,4})\s*(?:x|×)?\s*)?(?<![\w-])" + re.escape(label) + r"(?![\w-])",
                             re.IGNORECASE)
        for match in pattern.finditer(text):
            best = max(best, min(int(match.group(1)), MAX_QUANTITY) if match.group(1) else 1)
    return best
