"""Changes to a pipeline's stages: add, rename, re-kind, move, delete (its leads move with it).

Every change locks the pipeline's row first (stage changes serialize on it) and gives the pipeline a
new version, since its stages are part of its representation and ETag.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from chalicelib import audit, errors
from chalicelib.crm import leads, pipelines, store
from chalicelib.crm.api import Context
from chalicelib.crm.common import patch_values
from chalicelib.crm.pipelines import STAGES, TABLE, Conn, Kind, PipelineOut, StageIn
from chalicelib.crm.store import Row


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
    conn.execute("UPDATE pipelines SET updated_at = now() WHERE id = %s", (pipeline_id,))


def add_stage(conn: Conn, *, tenant_id: uuid.UUID, pipeline_id: uuid.UUID, stage: StageIn,
              expected: frozenset[str] | None = None) -> uuid.UUID:
    """Append a stage, or insert it at `stage.position` (the later ones shift down one)."""
    lock(conn, pipeline_id, expected)
    count = conn.execute("SELECT count(*) FROM stages WHERE pipeline_id = %s", (pipeline_id,)).fetchone()
    stage_id = uuid.uuid4()
    conn.execute("INSERT INTO stages (tenant_id, id, pipeline_id, name, position, kind, probability)"
                 " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 (tenant_id, stage_id, pipeline_id, stage.name, int(count[0]) if count else 0, stage.kind,
                  stage.probability))
    if stage.position is not None:
        reorder(conn, pipeline_id, stage_id, stage.position)
    return stage_id


def reorder(conn: Conn, pipeline_id: uuid.UUID, moved: uuid.UUID | None = None, to: int | None = None) -> None:
    """Renumber a pipeline's stages 0..n-1, moving `moved` to index `to` first."""
    ids = [r[0] for r in conn.execute("SELECT id FROM stages WHERE pipeline_id = %s ORDER BY position, created_at",
                                      (pipeline_id,)).fetchall()]
    if moved is not None and to is not None:
        ids.remove(moved)
        ids.insert(min(to, len(ids)), moved)
    # The unique (pipeline, position) check waits for the end of the statement's transaction.
    conn.execute("SET CONSTRAINTS stages_position_unique DEFERRED")
    conn.execute("UPDATE stages SET position = v.position FROM unnest(%s::uuid[], %s::int[]) AS v(id, position)"
                 " WHERE stages.id = v.id AND stages.position <> v.position RETURNING 1",
                 (ids, list(range(len(ids))))).fetchall()


def delete_stage(conn: Conn, *, pipeline_id: uuid.UUID, stage_id: uuid.UUID, target: uuid.UUID | None,
                 expected: frozenset[str] | None = None) -> list[uuid.UUID]:
    """Delete a stage; its leads move to `target` (same pipeline) first. Returns the moved lead ids."""
    lock(conn, pipeline_id, expected)
    ids = [r[0] for r in conn.execute("SELECT id FROM stages WHERE pipeline_id = %s", (pipeline_id,)).fetchall()]
    if stage_id not in ids:
        raise errors.NotFound("no such stage")
    if len(ids) == 1:
        raise errors.Conflict("a pipeline keeps at least one stage")
    holding = [r[0] for r in conn.execute("SELECT id FROM leads WHERE stage_id = %s", (stage_id,)).fetchall()]
    if holding and target is None:
        raise errors.Conflict("the stage holds leads; pass target_stage_id to move them")
    if holding and (target not in ids or target == stage_id):
        raise errors.ValidationFailed("the target must be another stage of this pipeline",
                                      errors=[errors.FieldError("target_stage_id", "not found", "not_found")])
    if holding:
        kind = conn.execute("SELECT kind FROM stages WHERE id = %s", (target,)).fetchone()
        # RETURNING: the leads really moved (the history must name each of them).
        holding = [r[0] for r in conn.execute(
            "UPDATE leads SET stage_id = %s, status = %s, updated_at = now() WHERE stage_id = %s RETURNING id",
            (target, kind[0] if kind else "open", stage_id)).fetchall()]
    try:
        conn.execute("DELETE FROM stages WHERE id = %s RETURNING 1", (stage_id,)).fetchall()
    except psycopg.errors.ForeignKeyViolation:
        # A lead created into the stage by a concurrent request after we looked.
        raise errors.Conflict("the stage holds leads; pass target_stage_id to move them") from None
    reorder(conn, pipeline_id)
    return list(holding)


def stage_values(body: StagePatch) -> dict[str, Any]:
    """Column values a stage PATCH changes (position is handled by reorder); null clears the probability
    only, and is a 422 for the rest."""
    values = patch_values(body, required=("name", "kind", "position"))
    values.pop("position", None)
    return values


def set_stage_kind_of_leads(conn: Conn, *, stage_id: uuid.UUID, kind: str, now: datetime) -> None:
    """Give the stage's leads the status of its new kind (and a new updated_at: their ETags change too)."""
    conn.execute("UPDATE leads SET status = %s, updated_at = %s WHERE stage_id = %s AND status <> %s RETURNING 1",
                 (kind, now, stage_id, kind)).fetchall()


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
        set_stage_kind_of_leads(ctx.conn, stage_id=stage_id, kind=values["kind"], now=ctx.now)
    if body.position is not None:
        reorder(ctx.conn, pipeline_id, stage_id, body.position)
    audit.record(ctx.conn, tenant_id=ctx.tenant, action="stage.updated", actor=ctx.principal.actor,
                 target_type="stage", target_id=stage_id)
    return pipelines.read_pending(ctx.conn, pipeline_id)()


def delete(ctx: Context, *, pipeline_id: uuid.UUID, stage_id: uuid.UUID, target: uuid.UUID | None,
           expected: frozenset[str] | None) -> None:
    """Delete a stage (delete_stage), audited; the leads it held move to `target`, each with a history row."""
    moved = delete_stage(ctx.conn, pipeline_id=pipeline_id, stage_id=stage_id, target=target, expected=expected)
    if moved and target is not None:
        leads.record_moves(ctx, moved, stage_id, target)
    audit.record(ctx.conn, tenant_id=ctx.tenant, action="stage.deleted", actor=ctx.principal.actor,
                 target_type="stage", target_id=stage_id, details={"moved_leads": len(moved)})
