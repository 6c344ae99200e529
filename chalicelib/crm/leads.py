"""Leads: the items of a pipeline; status follows the stage's kind; every stage change is kept.

The only module that writes leads (and so leads.status): the resource's hooks, the bulk insert of an
import, and the moves and re-kinds of a stage that crm/stages.py asks for. So it is also the one place
that says which webhook events a change of place emits (`emit_placed`): lead.stage_changed when a lead
leaves its stage, lead.won / lead.lost when its status becomes won or lost (a lead created into a won
stage included).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from chalicelib import audit, errors
from chalicelib.crm import pipelines, store
from chalicelib.crm.api import Context, Resource, emit
from chalicelib.crm.common import merged_custom, patch_values
from chalicelib.crm.listing import (
    TIME_SORT_DESC,
    Filter,
    ListQuery,
    ListSpec,
    Sort,
    parse_choice,
    parse_uuid,
    text_sort,
    time_sort,
)
from chalicelib.crm.store import Row, Table
from chalicelib.crm.values import Money
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.outgoing import events

Q = queries.load(__package__)

TABLE = Table(
    name="leads",
    columns=("id", "title", "contact_id", "company_id", "pipeline_id", "stage_id", "status", "owner_id",
             "value_amount_minor", "value_currency", "lost_reason", "expected_close_date", "custom", "created_at",
             "updated_at"),
    listing=ListSpec(
        "leads",
        {"created_at": time_sort("created_at"), "updated_at": time_sort("updated_at"), "title": text_sort("title"),
         "value": Sort("coalesce(value_amount_minor, 0)", True)},
        "created_at",
        {**{name: Filter(name, parse_uuid(name))
            for name in ("stage_id", "pipeline_id", "owner_id", "company_id", "contact_id")},
         "status": Filter("status", parse_choice("status", frozenset({"open", "won", "lost"})))},
        search_object="lead"),
    references={"leads_contact_fk": "contact_id", "leads_company_fk": "company_id", "leads_stage_fk": "stage_id",
                "leads_owner_fk": "owner_id"},
)


class _LeadFields(BaseModel):
    """The optional fields a lead is created or changed with (null clears one on PATCH)."""

    model_config = ConfigDict(extra="forbid")
    contact_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    pipeline_id: uuid.UUID | None = None
    stage_id: uuid.UUID | None = None
    owner_id: uuid.UUID | None = None
    value: Money | None = None
    lost_reason: str | None = Field(default=None, max_length=500)
    expected_close_date: date | None = None


class LeadCreate(_LeadFields):
    """A new lead; without stage_id it starts in the first stage (of pipeline_id or the default pipeline)."""

    title: str = Field(min_length=1, max_length=200)
    custom: dict[str, Any] = Field(default_factory=dict)


class LeadPatch(_LeadFields):
    """Changes to a lead; moving stage_id (or pipeline_id) is recorded in the stage history."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    custom: dict[str, Any] | None = None


class LeadOut(BaseModel):
    """A lead."""

    id: uuid.UUID
    title: str
    contact_id: uuid.UUID | None
    company_id: uuid.UUID | None
    pipeline_id: uuid.UUID
    stage_id: uuid.UUID
    status: Literal["open", "won", "lost"]
    owner_id: uuid.UUID | None
    value: Money | None
    lost_reason: str | None
    expected_close_date: date | None
    custom: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class StageChange(BaseModel):
    """One entry of a lead's stage history."""

    from_stage_id: uuid.UUID | None
    to_stage_id: uuid.UUID
    changed_at: datetime
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None


class StageHistory(BaseModel):
    """A page of a lead's stage changes, oldest first."""

    data: list[StageChange]
    next_cursor: str | None = None


# The lead is a filter the route fills from its path (so a cursor is bound to the lead too).
HISTORY = Table(
    name="lead_stage_history",
    columns=("id", "from_stage_id", "to_stage_id", "changed_at", "actor_user_id", "actor_api_key_id"),
    listing=ListSpec("stage_history", {"changed_at": Sort("changed_at", False, **TIME_SORT_DESC)}, "changed_at",
                     {"lead_id": Filter("lead_id", parse_uuid("lead_id"))}, search=False, custom_select_filters=False,
                     created_bounds=False),
)


def out(row: Row) -> dict[str, Any]:
    """Row to API shape (LeadOut; money as one value object)."""
    data = TABLE.as_dict(row)
    amount, currency = data.pop("value_amount_minor"), data.pop("value_currency")
    data["value"] = {"amount_minor": amount, "currency": currency} if amount is not None else None
    return data


def _not_found(field: str) -> errors.ValidationFailed:
    # The same answer for another workspace's id and an id that never existed.
    return errors.ValidationFailed("a referenced record does not exist",
                                   errors=[errors.FieldError(field, "not found", "not_found")])


def _placement_pending(ctx: Context, pipeline_id: uuid.UUID | None, stage_id: uuid.UUID | None
                       ) -> Callable[[], dict[str, Any]]:
    """Queue the lookup of pipeline_id, stage_id and status for a requested stage and/or pipeline.

    Queued, not awaited: it travels with the next read (the custom field definitions), one round trip.
    """
    if stage_id is not None:
        found_stage = pipelines.stage_pending(ctx.conn, stage_id)

        def of_stage() -> dict[str, Any]:
            found = found_stage()
            if found is None:
                raise _not_found("stage_id")
            if pipeline_id is not None and found[0] != pipeline_id:
                raise errors.ValidationFailed("the stage is not in that pipeline",
                                              errors=[errors.FieldError("stage_id", "not a stage of pipeline_id",
                                                                        "stage_mismatch")])
            return {"pipeline_id": found[0], "stage_id": stage_id, "status": found[1]}

        return of_stage
    found_first = pipelines.first_stage_pending(ctx.conn, pipeline_id)

    def of_pipeline() -> dict[str, Any]:
        first = found_first()
        if first is None:
            raise _not_found("pipeline_id")
        return {"pipeline_id": first[0], "stage_id": first[1], "status": first[2]}

    return of_pipeline


def placement(ctx: Context, pipeline_id: uuid.UUID | None, stage_id: uuid.UUID | None) -> dict[str, Any]:
    """pipeline_id, stage_id and status for a requested stage and/or pipeline."""
    return _placement_pending(ctx, pipeline_id, stage_id)()


def _money(values: dict[str, Any]) -> None:
    if "value" in values:
        value = values.pop("value")
        values["value_amount_minor"] = value["amount_minor"] if value else None
        values["value_currency"] = value["currency"] if value else None


def prepare_create(ctx: Context, body: LeadCreate) -> dict[str, Any]:
    """Column values of a new lead."""
    values = body.model_dump(exclude={"custom", "pipeline_id", "stage_id"})
    _money(values)
    placement = _placement_pending(ctx, body.pipeline_id, body.stage_id)
    values["custom"] = merged_custom(ctx.conn, "lead", None, body.custom)
    values.update(placement())
    return values


def prepare_patch(ctx: Context, existing: Row, body: LeadPatch) -> dict[str, Any]:
    """Column values to change."""
    values = patch_values(body, required=("title", "pipeline_id", "stage_id"), skip=("custom", "pipeline_id",
                                                                                      "stage_id"))
    _money(values)
    sent = body.model_fields_set
    if ("pipeline_id" in sent and body.pipeline_id is None) or ("stage_id" in sent and body.stage_id is None):
        raise errors.ValidationFailed("a lead always has a pipeline and a stage", errors=[
            errors.FieldError("stage_id" if "stage_id" in sent else "pipeline_id", "cannot be null",
                              "null_not_allowed")])
    same_pipeline = body.pipeline_id in (None, existing[TABLE.index("pipeline_id")])
    # A new stage (checked against pipeline_id when both are sent), or the first stage of a new pipeline;
    # queued so that it shares a round trip with the custom field definitions.
    moved = (_placement_pending(ctx, body.pipeline_id, body.stage_id)
             if body.stage_id is not None or not same_pipeline else None)
    if "custom" in body.model_fields_set:
        values["custom"] = merged_custom(ctx.conn, "lead", existing[TABLE.index("custom")], body.custom)
    if moved is not None:
        placement = moved()
        if placement["stage_id"] != existing[TABLE.index("stage_id")]:
            values.update(placement)
    return values


class Placement(NamedTuple):
    """Where a lead is: its pipeline, its stage, and its status (the stage's kind)."""

    pipeline_id: uuid.UUID
    stage_id: uuid.UUID
    status: str


def placement_of(row: Row) -> Placement:
    """A lead row's placement."""
    return Placement(*(row[TABLE.index(name)] for name in Placement._fields))


def after_write(ctx: Context, lead_id: uuid.UUID, values: dict[str, Any], existing: Row | None) -> None:
    """Keep the stage history and emit the placement's events: queued with the write, no extra round trip."""
    if "stage_id" in values:
        # A new place always comes whole (pipeline, stage and status: see placement()).
        before = placement_of(existing) if existing is not None else None
        after = Placement(values["pipeline_id"], values["stage_id"], values["status"])
        record_moves(ctx, [lead_id], before.stage_id if before else None, after.stage_id)
        emit_placed(ctx, [lead_id], before=before, after=after)


# Statuses whose arrival is an event of its own, named after them: lead.won, lead.lost.
CLOSED = frozenset({"won", "lost"})


def emit_placed(ctx: Context, lead_ids: Sequence[uuid.UUID], *, before: Placement | None,
                after: Placement) -> None:
    """Queue the webhook events of leads placed at `after` (created there when `before` is None), after the
    statements that wrote them: lead.stage_changed for each lead that left another stage, then lead.won /
    lead.lost when their status became won or lost."""
    if before is not None and before.stage_id != after.stage_id:
        # Its own data (not a snapshot): the move itself, which a later lead.updated would not show.
        for lead in lead_ids:
            events.emit(ctx.conn, tenant_id=ctx.tenant, event_type="lead.stage_changed", data={
                "lead_id": str(lead), "from_stage_id": str(before.stage_id), "to_stage_id": str(after.stage_id),
                "pipeline_id": str(after.pipeline_id)})
    if after.status in CLOSED and (before is None or before.status != after.status):
        emit(ctx, RESOURCE, after.status, lead_ids)


def changed_by_stage(ctx: Context, lead_ids: Sequence[uuid.UUID], *, before: Placement, after: Placement) -> None:
    """The follow-ups of leads a change of their stage rewrote (moved off a deleted stage, or given a re-kinded
    stage's status), queued after that write: their stage history when they moved, lead.updated, and the
    placement's events (emit_placed)."""
    if not lead_ids:
        return
    if before.stage_id != after.stage_id:
        record_moves(ctx, lead_ids, before.stage_id, after.stage_id)
    emit(ctx, RESOURCE, "updated", lead_ids)
    emit_placed(ctx, lead_ids, before=before, after=after)


def record_moves(ctx: Context, lead_ids: Sequence[uuid.UUID], from_stage: uuid.UUID | None,
                 to_stage: uuid.UUID) -> None:
    """Append stage-history rows for leads moved from one stage to another."""
    actor: audit.Actor = ctx.principal.actor
    statement = Q["lead_stage_history_insert"]
    rows = [(ctx.tenant, lead, from_stage, to_stage, ctx.now, actor.user_id, actor.api_key_id) for lead in lead_ids]
    if len(rows) == 1:
        # The common case (one lead created or moved): a plain queued statement, no executemany machinery.
        ctx.conn.execute(statement, rows[0])
        return
    with ctx.conn.cursor() as cur:
        cur.executemany(statement, rows)


def history_pending(conn: Conn, query: ListQuery) -> Callable[[], StageHistory]:
    """Queue the read of one page of a lead's stage changes (HISTORY's list query; oldest first); call the
    result for the page."""
    page = store.list_pending(conn, HISTORY, query)

    def changes() -> StageHistory:
        rows, cursor = page()
        return StageHistory(data=[StageChange(from_stage_id=r[1], to_stage_id=r[2], changed_at=r[3],
                                              actor_user_id=r[4], actor_api_key_id=r[5]) for r in rows],
                            next_cursor=cursor)
    return changes


def move_stage_leads(conn: Conn, *, from_stage: uuid.UUID, to_stage: uuid.UUID, kind: str) -> list[uuid.UUID]:
    """Move every lead of a stage to another, with the target's kind as their status; returns the ids moved."""
    # RETURNING: the leads really moved, not the ones read before (the history must name each of them).
    return [r[0] for r in conn.execute(Q["leads_move_to_stage"], (to_stage, kind, from_stage)).fetchall()]


def set_stage_kind(conn: Conn, *, stage_id: uuid.UUID, kind: str, now: datetime) -> list[uuid.UUID]:
    """Give a stage's leads the status of its new kind (and a new updated_at: their ETags change too);
    returns the ids of the leads changed."""
    return [r[0] for r in conn.execute(Q["leads_set_status_of_stage"], (kind, now, stage_id, kind)).fetchall()]


def insert_many_pending(conn: Conn, columns: Mapping[str, list[Any]]) -> Callable[[], int]:
    """Queue the insert of many leads (one statement; each column a list, one item per lead, status
    included); call the result for how many were written."""
    cursor = conn.execute(Q["leads_insert_many"], columns)

    def written() -> int:
        row = cursor.fetchone()
        assert row is not None
        return int(row[0])
    return written


def before_delete(ctx: Context, existing: Row) -> None:
    """A lead whose proposal went out is kept (409): its drafts go with it, a sent or settled one never does."""
    row = ctx.conn.execute(Q["lead_kept_proposals"], (existing[TABLE.index("id")],)).fetchone()
    if row is not None and row[0]:
        raise errors.Conflict("this lead has proposals that were sent: they are kept, and so is the lead")


RESOURCE = Resource(path="/leads", singular="lead", id_param="lead_id", table=TABLE, out=out, out_model=LeadOut,
                    create_model=LeadCreate, patch_model=LeadPatch, prepare_create=prepare_create,
                    prepare_patch=prepare_patch, after_write=after_write, before_delete=before_delete)


def win(ctx: Context, lead_id: uuid.UUID) -> bool:
    """Move a lead to its pipeline's won stage (the first, by position) with its stage history and events; False
    when it is won already or its pipeline has no won stage."""
    row = ctx.conn.execute(Q["lead_to_won_stage"], {"lead": lead_id, "now": ctx.now}).fetchone()
    if row is None:
        return False
    changed_by_stage(ctx, [lead_id], before=Placement(row[0], row[1], row[2]), after=Placement(row[0], row[3], "won"))
    return True
