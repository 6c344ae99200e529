"""Atlas's check of a provider's answer: every sentence that names money goes, the rest stays."""

from __future__ import annotations

import pytest

from chalicelib.atlas.drafting import Gathered, checked
from chalicelib.atlas.model import DraftInput, Suggestion

GATHERED = Gathered(DraftInput("w", "t", None, None, (), {}, ()), "t", "EUR", {})


@pytest.mark.parametrize("sentence", [
    "All of this costs only 5 EUR today!", "EUR 5,000 in all.", "USD 99 only.", "It costs CHF 12.", "EUR5000 flat.",
    "About 5k EUR.", "Just ₹500.", "Only 500 kr.", "1.000,- Euro.", "Ten thousand dollars, no more.", "$0 for you.",
    "Everything for 0 euros.",
])
def test_atlas_drops_every_sentence_that_names_money(sentence: str) -> None:
    _, introduction, warnings = checked(GATHERED, Suggestion(introduction=f"Dear Grace. {sentence} Regards."))
    assert introduction == "Dear Grace. Regards." and warnings == [
        "a sentence stating an amount was removed from the introduction"]


@pytest.mark.parametrize("sentence", ["We deliver in 3 phases.", "Europe and the US are covered.",
                                      "Percent of uptime is 99.9.", "A euphoric launch."])
def test_atlas_keeps_sentences_without_money(sentence: str) -> None:
    assert checked(GATHERED, Suggestion(introduction=sentence))[1:] == (sentence, [])
