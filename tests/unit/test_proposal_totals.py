"""Proposal totals: integer minor units, half-even rounding per line, sums of rounded lines, limits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chalicelib.proposals.totals import Line, TooLarge, compute, line_totals


def test_a_plain_line_is_quantity_times_price_plus_tax() -> None:
    assert line_totals(Line(Decimal(3), 1999, 0, 1900)) == line_totals(Line(Decimal("3.000"), 1999, 0, 1900))
    amounts = line_totals(Line(Decimal(3), 1999, 0, 1900))
    assert (amounts.net_minor, amounts.tax_minor, amounts.total_minor) == (5997, 1139, 7136)  # 1139.43 -> 1139


@pytest.mark.parametrize(("quantity", "unit", "discount", "net"), [
    ("0.5", 1, 0, 0),      # 0.5 -> 0 (even)
    ("1.5", 1, 0, 2),      # 1.5 -> 2 (even)
    ("2.5", 1, 0, 2),      # 2.5 -> 2 (even), never 3
    ("0.125", 100, 0, 12),  # 12.5 -> 12
    ("1", 25, 5000, 12),   # half off 25 = 12.5 -> 12
    ("1", 35, 5000, 18),   # 17.5 -> 18
])
def test_rounding_is_half_even_per_line(quantity: str, unit: int, discount: int, net: int) -> None:
    assert line_totals(Line(Decimal(quantity), unit, discount, 0)).net_minor == net


def test_tax_rounds_half_even_on_the_rounded_net() -> None:
    assert line_totals(Line(Decimal(1), 50, 0, 1000)).tax_minor == 5        # 5.0
    assert line_totals(Line(Decimal(1), 25, 0, 1000)).tax_minor == 2        # 2.5 -> 2
    assert line_totals(Line(Decimal(1), 35, 0, 1000)).tax_minor == 4        # 3.5 -> 4


def test_many_lines_sum_their_rounded_amounts_and_group_tax_by_rate() -> None:
    lines = [Line(Decimal("0.5"), 3, 0, 1900)] * 10 + [Line(Decimal(2), 1000, 0, 700), Line(Decimal(1), 999, 0, 0)]
    totals = compute(lines)
    # Each 1.5 rounds to 2 on its own line: 10 lines are 20, not round(15) = 15 or 16.
    assert totals.subtotal_minor == 20 + 2000 + 999
    assert [(r.tax_rate_bp, r.net_minor, r.tax_minor) for r in totals.tax_by_rate] == [
        (0, 999, 0), (700, 2000, 140), (1900, 20, 0)]
    assert totals.tax_minor == 140 and totals.total_minor == 3159


def test_zero_tax_and_a_full_discount() -> None:
    totals = compute([Line(Decimal(4), 2500, 10_000, 1900), Line(Decimal(1), 100, 0, 0)])
    assert (totals.subtotal_minor, totals.tax_minor, totals.total_minor) == (100, 0, 100)
    assert totals.lines[0].net_minor == 0 and totals.lines[0].tax_minor == 0


def test_an_empty_proposal_totals_zero() -> None:
    totals = compute([])
    assert (totals.subtotal_minor, totals.tax_minor, totals.total_minor, totals.tax_by_rate) == (0, 0, 0, ())


@pytest.mark.parametrize("lines", [
    [Line(Decimal(1_000_000), 10**9, 0, 0)],                    # one line past 10^14
    [Line(Decimal(1_000_000), 10**8, 0, 0)] * 2,                # each fine, together past it
    [Line(Decimal(1_000_000), 10**8, 0, 10_000)],               # the tax takes it past
])
def test_huge_amounts_are_refused_not_wrapped(lines: list[Line]) -> None:
    with pytest.raises(TooLarge):
        compute(lines)


@pytest.mark.parametrize("line", [
    Line(Decimal(0), 100), Line(Decimal("-1"), 100), Line(Decimal("0.0005"), 100), Line(Decimal(1_000_001), 1),
    Line(Decimal(1), -1), Line(Decimal(1), 1, 10_001), Line(Decimal(1), 1, 0, -1),
])
def test_impossible_lines_are_refused(line: Line) -> None:
    with pytest.raises(ValueError, match=r"quantity|basis points"):
        line_totals(line)

