"""A proposal's totals, computed by the server in integer minor units (a client never sends a total).

Per line, exactly (Decimal, no float anywhere):
    gross = quantity x unit_amount_minor
    net   = gross x (10000 - discount_bp) / 10000, rounded half-even to a whole minor unit
    tax   = net x tax_rate_bp / 10000, rounded half-even to a whole minor unit
Rounding happens once per line and per amount, half to even (banker's rounding: 0.5 goes to the even
neighbour, so a long list of halves does not drift up). The proposal's subtotal, tax and total are the sums of
the rounded lines, and `tax_by_rate` sums net and tax per tax rate, as an invoice shows them.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from chalicelib.crm.values import MAX_PRICE_MINOR

BP = 10_000
MAX_QUANTITY = Decimal(1_000_000)
MAX_AMOUNT_MINOR = MAX_PRICE_MINOR  # per line and in all
_EXACT = decimal.Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[decimal.InvalidOperation, decimal.Overflow])


class TooLarge(ValueError):
    """An amount beyond MAX_AMOUNT_MINOR: refused, never wrapped or rounded away."""


@dataclass(frozen=True)
class Line:
    """What a line's amounts come from."""

    quantity: Decimal
    unit_amount_minor: int
    discount_bp: int = 0
    tax_rate_bp: int = 0


@dataclass(frozen=True)
class LineTotals:
    """One line's rounded amounts."""

    net_minor: int
    tax_minor: int

    @property
    def total_minor(self) -> int:
        """Net plus tax."""
        return self.net_minor + self.tax_minor


@dataclass(frozen=True)
class RateTotals:
    """The lines of one tax rate, summed."""

    tax_rate_bp: int
    net_minor: int
    tax_minor: int


@dataclass(frozen=True)
class Totals:
    """Every line's amounts and the proposal's."""

    lines: tuple[LineTotals, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    tax_by_rate: tuple[RateTotals, ...]


def _whole(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN, context=_EXACT))


def line_totals(line: Line) -> LineTotals:
    """One line's net and tax, each rounded half-even (TooLarge beyond the limit)."""
    if not (0 < line.quantity <= MAX_QUANTITY) or line.quantity != line.quantity.quantize(Decimal("0.001")):
        raise ValueError("quantity must be above 0, at most 1,000,000, with at most 3 decimal places")
    if not (0 <= line.discount_bp <= BP and 0 <= line.tax_rate_bp <= BP and line.unit_amount_minor >= 0):
        raise ValueError("discount and tax are 0-10000 basis points; amounts are not negative")
    gross = _EXACT.multiply(line.quantity, Decimal(line.unit_amount_minor))
    net = _whole(_EXACT.divide(_EXACT.multiply(gross, Decimal(BP - line.discount_bp)), Decimal(BP)))
    if net > MAX_AMOUNT_MINOR:
        raise TooLarge("a line's amount is too large")
    tax = _whole(_EXACT.divide(_EXACT.multiply(Decimal(net), Decimal(line.tax_rate_bp)), Decimal(BP)))
    return LineTotals(net, tax)


def compute(lines: Sequence[Line]) -> Totals:
    """The proposal's totals (TooLarge when the total passes the limit)."""
    each = tuple(line_totals(line) for line in lines)
    subtotal = sum(a.net_minor for a in each)
    tax = sum(a.tax_minor for a in each)
    if subtotal + tax > MAX_AMOUNT_MINOR:
        raise TooLarge("the proposal's total is too large")
    return Totals(each, subtotal, tax, subtotal + tax,
                  by_rate((line.tax_rate_bp, a.net_minor, a.tax_minor) for line, a in zip(lines, each, strict=True)))


def by_rate(lines: Iterable[tuple[int, int, int]]) -> tuple[RateTotals, ...]:
    """Rounded lines' (tax rate, net, tax) summed per rate, lowest rate first."""
    sums: dict[int, tuple[int, int]] = {}
    for rate, net, tax in lines:
        net_sum, tax_sum = sums.get(rate, (0, 0))
        sums[rate] = (net_sum + net, tax_sum + tax)
    return tuple(RateTotals(rate, net, tax) for rate, (net, tax) in sorted(sums.items()))
