"""Changes to a pipeline's stages: add, rename, re-kind, move, delete (its leads move with it).

Every change locks the pipeline's row first (stage changes serialize on it) and gives the pipeline a
new version, since its stages are part of its representation and ETag.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from chalicelib import audit, errors
from chalicelib.crm import leads, pipelines, store
from chalicelib.crm.api import Context
from chalicelib.crm.common import patch_values
from chalicelib.crm.pipelines import STAGES, TABLE, Kind, PipelineOut, StageIn
from chalicelib.crm.store import Row
from chalicelib.db import queries
from chalicelib.db.types import Conn

Q = queries.load(__package__)


class StagePatch(BaseModel):
    """Changes to a stage; `position` moves it (the others shift)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    kind: Kind | None = None
    probability: int | None = Field(default=None, ge=0, le=100)
    position: int | None = Field(default=None, ge=0)


def lock(conn: Conn, pipeline_id: uuid.UUID, expected: frozenset[str] | None = None) -> None:
    """Lock a pipeline's row (404 when it is not this workspace's) so stage changes serialize, check its
    version against the `expected` ETags (the stages are part of the pipeline's representation and ETag;
    None: any version), and mark it changed.

    Stage edits read the pipeline's stages and then write (count, renumber, "is this the last one?"):
    without the lock two concurrent requests could both delete one of the last two stages, or both
    append at the same position (write skew).
    """
    store.check_version(expected, store.require_for_update(conn, TABLE, pipeline_id), TABLE)
    # Every caller changes the stages: a new updated_at gives the pipeline a new ETag.
    conn.execute(Q["pipeline_touch"], (pipeline_id,))


def add_stage(conn: Conn, *, tenant_id: uuid.UUID, pipeline_id: uuid.UUID, stage: StageIn,
              expected: frozenset[str] | None = None) -> uuid.UUID:
    """Append a stage, or insert it at `stage.position` (the later ones shift down one)."""
    lock(conn, pipeline_id, expected)
    count = conn.execute(Q["stages_count"], (pipeline_id,)).fetchone()
    stage_id = uuid.uuid4()
    conn.execute(Q["stage_insert"], (tenant_id, stage_id, pipeline_id, stage.name, int(count[0]) if count else 0,
                                     stage.kind, stage.probability))
    if stage.position is not None:
        reorder(conn, pipeline_id, stage_id, stage.position)
    return stage_id


def reorder(conn: Conn, pipeline_id: uuid.UUID, moved: uuid.UUID | None = None, to: int | None = None) -> None:
    """Renumber a pipeline's stages 0..n-1, moving `moved` to index `to` first."""
    ids = [r[0] for r in conn.execute(Q["stage_ids_in_order"], (pipeline_id,)).fetchall()]
    if moved is not None and to is not None:
        ids.remove(moved)
        ids.insert(min(to, len(ids)), moved)
    # The unique (pipeline, position) check waits for the end of the statement's transaction.
    conn.execute(Q["stages_defer_position_check"])
    conn.execute(Q["stages_renumber"], (ids, list(range(len(ids))))).fetchall()


@dataclass(frozen=True)
class Moved:
    """The leads a deleted stage held, and where they were and went."""

    lead_ids: list[uuid.UUID]
    before: leads.Placement
    after: leads.Placement


def delete_stage(conn: Conn, *, pipeline_id: uuid.UUID, stage_id: uuid.UUID, target: uuid.UUID | None,
                 expected: frozenset[str] | None = None) -> Moved | None:
    """Delete a stage; its leads move to `target` (same pipeline) first. Returns the move (None: no leads)."""
    lock(conn, pipeline_id, expected)
    kinds = {r[0]: str(r[1]) for r in conn.execute(Q["stage_ids"], (pipeline_id,)).fetchall()}
    if stage_id not in kinds:
        raise errors.NotFound("no such stage")
    if len(kinds) == 1:
        raise errors.Conflict("a pipeline keeps at least one stage")
    holding = [r[0] for r in conn.execute(Q["lead_ids_of_stage"], (stage_id,)).fetchall()]
    if holding and target is None:
        raise errors.Conflict("the stage holds leads; pass target_stage_id to move them")
    if holding and (target not in kinds or target == stage_id):
        raise errors.ValidationFailed("the target must be another stage of this pipeline",
                                      errors=[errors.FieldError("target_stage_id", "not found", "not_found")])
    moved = None
    if holding:
        assert target is not None  # checked above: leads need a target
        # The leads really moved (the history and the events must name each of them). Their status was
        # the deleted stage's kind (a lead's status always is its stage's kind).
        moved = Moved(leads.move_stage_leads(conn, from_stage=stage_id, to_stage=target, kind=kinds[target]),
                      leads.Placement(pipeline_id, stage_id, kinds[stage_id]),
                      leads.Placement(pipeline_id, target, kinds[target]))
    try:
        conn.execute(Q["stage_delete"], (stage_id,)).fetchall()
    except psycopg.errors.ForeignKeyViolation:
        # A lead created into the stage by a concurrent request after we looked.
        raise errors.Conflict("the stage holds leads; pass target_stage_id to move them") from None
    reorder(conn, pipeline_id)
    return moved


def stage_values(body: StagePatch) -> dict[str, Any]:
    """Column values a stage PATCH changes (position is handled by reorder); null clears the probability
    only, and is a 422 for the rest."""
    values = patch_values(body, required=("name", "kind", "position"))
    values.pop("position", None)
    return values


def create(ctx: Context, *, pipeline_id: uuid.UUID, body: StageIn, expected: frozenset[str] | None
           ) -> tuple[uuid.UUID, Row, PipelineOut]:
    """Add a stage (add_stage), audited; returns its id and the pipeline's new row and API shape."""
    created = add_stage(ctx.conn, tenant_id=ctx.tenant, pipeline_id=pipeline_id, stage=body, expected=expected)
    audit.record(ctx.conn, tenant_id=ctx.tenant, action="stage.created", actor=ctx.principal.actor,
                 target_type="stage", target_id=created)
    return (created, *pipelines.read_pending(ctx.conn, pipeline_id)())


def update(ctx: Context, *, pipeline_id: uuid.UUID, stage_id: uuid.UUID, body: StagePatch,
           expected: frozenset[str] | None) -> tuple[Row, PipelineOut]:
    """Rename, re-kind or move a stage, audited; a new kind changes the status of the stage's leads too.
    Returns the pipeline's new row and API shape."""
    lock(ctx.conn, pipeline_id, expected)
    found = pipelines.stage(ctx.conn, stage_id)
    if found is None or found[0] != pipeline_id:
        raise errors.NotFound("no such stage")
    values = stage_values(body)
    if values:
        store.update(ctx.conn, STAGES, stage_id, values, ctx.now)
    if "kind" in values:
        changed = leads.set_stage_kind(ctx.conn, stage_id=stage_id, kind=values["kind"], now=ctx.now)
        leads.changed_by_stage(ctx, changed, before=leads.Placement(pipeline_id, stage_id, found[1]),
                               after=leads.Placement(pipeline_id, stage_id, values["kind"]))
    if body.position is not None:
        reorder(ctx.conn, pipeline_id, stage_id, body.position)
    audit.record(ctx.conn, tenant_id=ctx.tenant, action="stage.updated", actor=ctx.principal.actor,
                 target_type="stage", target_id=stage_id)
    return pipelines.read_pending(ctx.conn, pipeline_id)()


def delete(ctx: Context, *, pipeline_id: uuid.UUID, stage_id: uuid.UUID, target: uuid.UUID | None,
           expected: frozenset[str] | None) -> None:
    """Delete a stage (delete_stage), audited; the leads it held move to `target`, each with a history row and
    its events (leads.changed_by_stage)."""
    moved = delete_stage(ctx.conn, pipeline_id=pipeline_id, stage_id=stage_id, target=target, expected=expected)
    if moved is not None:
        leads.changed_by_stage(ctx, moved.lead_ids, before=moved.before, after=moved.after)
    audit.record(ctx.conn, tenant_id=ctx.tenant, action="stage.deleted", actor=ctx.principal.actor,
                 target_type="stage", target_id=stage_id,
                 details={"moved_leads": len(moved.lead_ids) if moved is not None else 0})
