"""Contacts: people, with an E.164 phone and a per-workspace unique email."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chalicelib import errors
from chalicelib.crm.api import Context, Resource
from chalicelib.crm.common import merged_custom, patch_values
from chalicelib.crm.listing import Filter, ListSpec, parse_uuid, text_sort, time_sort
from chalicelib.crm.store import Row, Table
from chalicelib.crm.values import Email, Phone

TABLE = Table(
    name="contacts",
    columns=("id", "first_name", "last_name", "email", "phone", "company_id", "owner_id", "custom", "created_at",
             "updated_at"),
    listing=ListSpec(
        "contacts",
        {"created_at": time_sort("created_at"), "updated_at": time_sort("updated_at"), "name": text_sort("name")},
        "created_at",
        {"company_id": Filter("company_id", parse_uuid("company_id")),
         "owner_id": Filter("owner_id", parse_uuid("owner_id"))}, search_object="contact"),
    references={"contacts_company_fk": "company_id", "contacts_owner_fk": "owner_id"},
    conflicts={"contacts_email_unique": "a contact with this email already exists in this workspace"},
)


class _ContactFields(BaseModel):
    """The fields a contact is created or changed with (null clears one on PATCH)."""

    model_config = ConfigDict(extra="forbid")
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    email: Email | None = None
    phone: Phone | None = None
    company_id: UUID | None = None
    owner_id: UUID | None = None


class ContactCreate(_ContactFields):
    """A new contact: at least a name or an email."""

    custom: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _someone(self) -> ContactCreate:
        if not (self.first_name or self.last_name or self.email):
            raise ValueError("a contact needs a first name, a last name or an email")
        return self


class ContactPatch(_ContactFields):
    """Changes to a contact (null clears a field)."""

    custom: dict[str, Any] | None = None


class ContactOut(BaseModel):
    """A contact."""

    id: UUID
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    company_id: UUID | None
    owner_id: UUID | None
    custom: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def prepare_create(ctx: Context, body: ContactCreate) -> dict[str, Any]:
    """Column values of a new contact."""
    values = body.model_dump(exclude={"custom"})
    values["custom"] = merged_custom(ctx.conn, "contact", None, body.custom)
    return values


def prepare_patch(ctx: Context, existing: Row, body: ContactPatch) -> dict[str, Any]:
    """Column values to change (the contact keeps a name or an email, as on create)."""
    values = patch_values(body)
    after = {**dict(zip(TABLE.columns, existing, strict=True)), **values}
    if not (after["first_name"] or after["last_name"] or after["email"]):
        raise errors.ValidationFailed("a contact needs a first name, a last name or an email", errors=[
            errors.FieldError("(body)", "a contact needs a first name, a last name or an email", "value_error")])
    if "custom" in body.model_fields_set:
        values["custom"] = merged_custom(ctx.conn, "contact", existing[TABLE.index("custom")], body.custom)
    return values


RESOURCE = Resource(path="/contacts", singular="contact", id_param="contact_id", table=TABLE, out=TABLE.as_dict,
                    out_model=ContactOut, create_model=ContactCreate, patch_model=ContactPatch,
                    prepare_create=prepare_create, prepare_patch=prepare_patch)
