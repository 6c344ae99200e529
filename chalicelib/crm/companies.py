"""Companies: name, domain, custom fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.crm.api import Context, Resource
from chalicelib.crm.common import merged_custom, patch_values
from chalicelib.crm.listing import ListSpec, text_sort, time_sort
from chalicelib.crm.store import Row, Table

TABLE = Table(
    name="companies",
    columns=("id", "name", "domain", "custom", "created_at", "updated_at"),
    listing=ListSpec("companies", {"created_at": time_sort("created_at"), "updated_at": time_sort("updated_at"),
                                   "name": text_sort("name")}, "created_at", {}, search_object="company"),
)
DOMAIN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"


class CompanyCreate(BaseModel):
    """A new company."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    domain: str | None = Field(default=None, max_length=253, pattern=DOMAIN)
    custom: dict[str, Any] = Field(default_factory=dict)


class CompanyPatch(BaseModel):
    """Changes to a company (null clears domain; custom keys set to null are removed)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    domain: str | None = Field(default=None, max_length=253, pattern=DOMAIN)
    custom: dict[str, Any] | None = None


class CompanyOut(BaseModel):
    """A company."""

    id: UUID
    name: str
    domain: str | None
    custom: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def prepare_create(ctx: Context, body: CompanyCreate) -> dict[str, Any]:
    """Column values of a new company."""
    return {"name": body.name, "domain": body.domain and body.domain.lower(),
            "custom": merged_custom(ctx.conn, "company", None, body.custom)}


def prepare_patch(ctx: Context, existing: Row, body: CompanyPatch) -> dict[str, Any]:
    """Column values to change."""
    values = patch_values(body, required=("name",))
    if values.get("domain"):
        values["domain"] = values["domain"].lower()
    if "custom" in body.model_fields_set:
        values["custom"] = merged_custom(ctx.conn, "company", existing[TABLE.index("custom")], body.custom)
    return values


RESOURCE = Resource(path="/companies", singular="company", id_param="company_id", table=TABLE, out=TABLE.as_dict,
                    out_model=CompanyOut, create_model=CompanyCreate, patch_model=CompanyPatch,
                    prepare_create=prepare_create, prepare_patch=prepare_patch)
