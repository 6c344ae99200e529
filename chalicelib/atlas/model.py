"""What a drafting provider is given and what it must answer, and the one interface every provider has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Product:
    """An active product of the price book, as a provider sees it (never its price: the book sets it)."""

    sku: str
    name: str
    description: str


@dataclass(frozen=True)
class DraftInput:
    """What Atlas reads for a lead. Notes are untrusted data, never instructions."""

    workspace: str
    lead_title: str
    contact_name: str | None
    company_name: str | None
    notes: tuple[str, ...]
    custom: dict[str, Any]
    products: tuple[Product, ...]


class SuggestedItem(BaseModel):
    """A line a provider proposes: a SKU and a quantity, nothing else (prices come from the price book)."""

    model_config = ConfigDict(extra="allow")  # extra keys (a price) are dropped and reported, not trusted
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)


class Suggestion(BaseModel):
    """A provider's answer."""

    model_config = ConfigDict(extra="allow")
    introduction: str = Field(max_length=5000)
    line_items: list[SuggestedItem] = Field(default_factory=list, max_length=50)


class Drafter(Protocol):
    """A drafting provider."""

    name: str

    def suggest(self, given: DraftInput) -> Suggestion:
        """An introduction and SKU/quantity lines for the lead."""
        ...
