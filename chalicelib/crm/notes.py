"""Notes attached to exactly one lead, contact or company."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chalicelib.crm.api import Context, Resource
from chalicelib.crm.common import patch_values
from chalicelib.crm.listing import Filter, ListSpec, parse_uuid, time_sort
from chalicelib.crm.store import Row, Table

TABLE = Table(
    name="notes",
    columns=("id", "body", "lead_id", "contact_id", "company_id", "author_user_id", "created_at", "updated_at"),
    listing=ListSpec("notes", {"created_at": time_sort("created_at"), "updated_at": time_sort("updated_at")},
                     "created_at", {name: Filter(name, parse_uuid(name)) for name in ("lead_id", "contact_id",
                                                                                        "company_id")},
                     search=False, custom_select_filters=False),
    references={"notes_lead_fk": "lead_id", "notes_contact_fk": "contact_id", "notes_company_fk": "company_id"},
)


class NoteCreate(BaseModel):
    """A new note on one record."""

    model_config = ConfigDict(extra="forbid")
    body: str = Field(min_length=1, max_length=20_000)
    lead_id: UUID | None = None
    contact_id: UUID | None = None
    company_id: UUID | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> NoteCreate:
        if sum(x is not None for x in (self.lead_id, self.contact_id, self.company_id)) != 1:
            raise ValueError("a note belongs to exactly one of lead_id, contact_id, company_id")
        return self


class NotePatch(BaseModel):
    """A note's new text (a note cannot move to another record)."""

    model_config = ConfigDict(extra="forbid")
    body: str | None = Field(default=None, min_length=1, max_length=20_000)


class NoteOut(BaseModel):
    """A note."""

    id: UUID
    body: str
    lead_id: UUID | None
    contact_id: UUID | None
    company_id: UUID | None
    author_user_id: UUID | None
    created_at: datetime
    updated_at: datetime


def out(row: Row) -> dict[str, Any]:
    """Row to API shape (NoteOut)."""
    return TABLE.as_dict(row)


def prepare_create(ctx: Context, body: NoteCreate) -> dict[str, Any]:
    """Column values of a new note, written by the caller."""
    return {**body.model_dump(), "author_user_id": ctx.principal.user_id}


def prepare_patch(ctx: Context, existing: Row, body: NotePatch) -> dict[str, Any]:
    """Column values to change."""
    return patch_values(body, required=("body",))


RESOURCE = Resource(path="/notes", singular="note", id_param="note_id", table=TABLE, out=out, out_model=NoteOut,
                    create_model=NoteCreate, patch_model=NotePatch, prepare_create=prepare_create,
                    prepare_patch=prepare_patch)
