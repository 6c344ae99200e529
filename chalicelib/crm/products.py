"""Products: the workspace's price book (name, SKU, price in minor units, currency, tax rate)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.crm.api import Context, Resource
from chalicelib.crm.common import patch_values
from chalicelib.crm.listing import Filter, ListSpec, parse_choice, text_sort, time_sort
from chalicelib.crm.store import Row, Table
from chalicelib.crm.values import MAX_PRICE_MINOR, Currency

TABLE = Table(
    name="products",
    columns=("id", "name", "sku", "description", "unit_amount_minor", "currency", "tax_rate_bp", "active",
             "created_at", "updated_at"),
    listing=ListSpec("products", {"created_at": time_sort("created_at"), "updated_at": time_sort("updated_at"),
                                  "name": text_sort("name")}, "created_at",
                     {"active": Filter("active::text", parse_choice("active", frozenset({"true", "false"})))},
                     search=False, custom_select_filters=False),
    conflicts={"products_sku_unique": "a product with this SKU exists"},
)
SKU = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ProductCreate(BaseModel):
    """A new product. Amounts are integers in the currency's minor unit (cents); tax in basis points."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    sku: str = Field(pattern=SKU)
    description: str = Field(default="", max_length=5000)
    unit_amount_minor: int = Field(ge=0, le=MAX_PRICE_MINOR, strict=True)
    currency: Currency
    tax_rate_bp: int = Field(default=0, ge=0, le=10_000, strict=True)
    active: bool = True


class ProductPatch(BaseModel):
    """Changes to a product (a proposal already sent keeps the prices it copied)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    sku: str | None = Field(default=None, pattern=SKU)
    description: str | None = Field(default=None, max_length=5000)
    unit_amount_minor: int | None = Field(default=None, ge=0, le=MAX_PRICE_MINOR, strict=True)
    currency: Currency | None = None
    tax_rate_bp: int | None = Field(default=None, ge=0, le=10_000, strict=True)
    active: bool | None = None


class ProductOut(BaseModel):
    """A product."""

    id: UUID
    name: str
    sku: str
    description: str
    unit_amount_minor: int
    currency: str
    tax_rate_bp: int
    active: bool
    created_at: datetime
    updated_at: datetime


def prepare_create(ctx: Context, body: ProductCreate) -> dict[str, Any]:
    """Column values of a new product."""
    return body.model_dump()


def prepare_patch(ctx: Context, existing: Row, body: ProductPatch) -> dict[str, Any]:
    """Column values to change (every field but description is required: null is refused)."""
    return patch_values(body, required=("name", "sku", "unit_amount_minor", "currency", "tax_rate_bp", "active",
                                        "description"))


# Owners and admins keep the price book; members read it.
RESOURCE = Resource(path="/products", singular="product", id_param="product_id", table=TABLE, out=TABLE.as_dict,
                    out_model=ProductOut, create_model=ProductCreate, patch_model=ProductPatch,
                    prepare_create=prepare_create, prepare_patch=prepare_patch, write_role="admin",
                    tags=("products",))
