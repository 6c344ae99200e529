"""A proposal as a PDF, drawn with reportlab (pure Python; imported only when a PDF is made, so a cold start
of the API never pays for it): the workspace's name, the contact and company, the lines, the totals and the
validity. Amounts are printed from the stored integers (minor units of the currency, two decimals)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from chalicelib.proposals.models import ProposalOut

ITEM_COLUMN_MM = 70


@dataclass(frozen=True)
class Parties:
    """Who the proposal is from and for."""

    workspace: str
    contact: str | None
    email: str | None
    company: str | None


def amount(minor: int, currency: str) -> str:
    """Minor units as "1,234.56 EUR" (every currency printed with two decimals)."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole:,}.{cents:02d} {currency}"


def render(proposal: ProposalOut, parties: Parties) -> bytes:
    """The PDF's bytes (deterministic for the same proposal: no creation date in the document)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    buffer = io.BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=A4, title=proposal.title, author=parties.workspace,
                                 invariant=1, leftMargin=18 * mm, rightMargin=18 * mm)
    fits = ITEM_COLUMN_MM * mm - 12  # the column less its padding: a wider label wraps in a Paragraph
    story: list[Any] = [Paragraph(_escape(parties.workspace), styles["Title"]),
                        Paragraph(_escape(proposal.title), styles["Heading1"])]
    recipient = ", ".join(part for part in (parties.contact, parties.email, parties.company) if part)
    if recipient:
        story.append(Paragraph("For: " + _escape(recipient), styles["Normal"]))
    story.append(Paragraph(f"Version {proposal.version}. Valid until {proposal.valid_until.isoformat()}.",
                           styles["Normal"]))
    if proposal.introduction:
        story += [Spacer(1, 4 * mm)] + [Paragraph(_escape(part), styles["Normal"])
                                       for part in proposal.introduction.split("\n\n")]
    currency = proposal.currency
    rows: list[list[Any]] = [["Item", "Qty", "Unit", "Discount", "Tax", "Net"]]
    for line in proposal.line_items:
        label = f"{line.description} ({line.sku})" if line.sku else line.description
        # A Paragraph wraps a long label; a short one is drawn as it is (a Paragraph per row costs as much as
        # the rest of the table: bench B12).
        cell = Paragraph(_escape(label), styles["BodyText"]) if stringWidth(label, "Helvetica", 10) > fits else label
        rows.append([cell, line.quantity,
                     amount(line.unit_amount_minor, currency), f"{line.discount_bp / 100:g} %",
                     f"{line.tax_rate_bp / 100:g} %", amount(line.net_minor, currency)])
    totals = proposal.totals
    rows.append(["Subtotal", "", "", "", "", amount(totals.subtotal_minor, currency)])
    for rate in totals.tax_by_rate:
        rows.append([f"Tax {rate.tax_rate_bp / 100:g} %", "", "", "", "", amount(rate.tax_minor, currency)])
    rows.append(["Total", "", "", "", "", amount(totals.total_minor, currency)])
    table = Table(rows, colWidths=[ITEM_COLUMN_MM * mm, 16 * mm, 28 * mm, 18 * mm, 14 * mm, 28 * mm], repeatRows=1)
    table.setStyle(TableStyle([
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"), ("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold"),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"), ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
        ("LINEABOVE", (0, len(proposal.line_items) + 1), (-1, len(proposal.line_items) + 1), 0.5, colors.black),
    ]))
    story += [Spacer(1, 6 * mm), table]
    document.build(story)
    return buffer.getvalue()


def _escape(text: str) -> str:
    """Text for a reportlab Paragraph, which reads a little markup: nothing a note or a name holds is markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
