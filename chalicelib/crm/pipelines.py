"""Pipelines and their ordered stages; the default "Sales" pipeline; the board (one query).

Changes to one pipeline's stages (add, re-kind, move, delete) are in crm/stages.py.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from pydantic import BaseModel, ConfigDict, Field

from chalicelib import audit, clock, errors
from chalicelib.audit import Actor
from chalicelib.crm import store
from chalicelib.crm.common import patch_values
from chalicelib.crm.listing import ListQuery, ListSpec, text_sort, time_sort
from chalicelib.crm.store import Row, Table
from chalicelib.db import queries
from chalicelib.db.types import Conn

Q = queries.load(__package__)
Kind = Literal["open", "won", "lost"]
DEFAULT_STAGES: tuple[tuple[str, Kind], ...] = (("New", "open"), ("Qualified", "open"), ("Proposal", "open"),
                                                ("Won", "won"), ("Lost", "lost"))

TABLE = Table(
    name="pipelines",
    columns=("id", "name", "is_default", "created_at", "updated_at"),
    listing=ListSpec("pipelines", {"created_at": time_sort("created_at"), "updated_at": time_sort("updated_at"),
                                   "name": text_sort("name")}, "name", {}, custom_select_filters=False,
                     search_object="pipeline"),
)
STAGES = Table(
    name="stages",
    columns=("id", "pipeline_id", "name", "position", "kind", "probability", "created_at", "updated_at"),
    listing=ListSpec("stages", {"position": text_sort("position")}, "position", {}, search=False,
                     custom_select_filters=False),
)


class StageIn(BaseModel):
    """A stage of a new pipeline, or a new stage (position: where to insert; default last)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    kind: Kind = "open"
    probability: int | None = Field(default=None, ge=0, le=100)
    position: int | None = Field(default=None, ge=0)


class PipelineCreate(BaseModel):
    """A new pipeline; without `stages` it gets the default five."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    stages: list[StageIn] | None = Field(default=None, min_length=1, max_length=50)


class PipelinePatch(BaseModel):
    """Rename a pipeline, or make it the default."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    is_default: Literal[True] | None = None


class StageOut(BaseModel):
    """A stage."""

    id: uuid.UUID
    name: str
    position: int
    kind: Kind
    probability: int | None


class PipelineOut(BaseModel):
    """A pipeline with its stages in order."""

    id: uuid.UUID
    name: str
    is_default: bool
    stages: list[StageOut]
    created_at: datetime
    updated_at: datetime


class BoardColumn(BaseModel):
    """One stage on the board: how many leads, and their value per currency (integer minor units)."""

    stage: StageOut
    leads: int
    totals: dict[str, int]


class Board(BaseModel):
    """A pipeline's stages in order with counts and totals."""

    pipeline_id: uuid.UUID
    columns: list[BoardColumn]


def _stage(row: Row) -> StageOut:
    return StageOut(id=row[0], name=row[2], position=row[3], kind=row[4], probability=row[5])


def _grouped(cursor: psycopg.Cursor[TupleRow], pipeline_ids: list[uuid.UUID] | None = None
             ) -> Callable[[], dict[uuid.UUID, list[StageOut]]]:
    def stages() -> dict[uuid.UUID, list[StageOut]]:
        found: dict[uuid.UUID, list[StageOut]] = {pid: [] for pid in pipeline_ids or ()}
        for row in cursor.fetchall():
            found.setdefault(row[1], []).append(_stage(row))
        return found
    return stages


def stages_of_pending(conn: Conn, pipeline_ids: list[uuid.UUID]) -> Callable[[], dict[uuid.UUID, list[StageOut]]]:
    """Queue the read of several pipelines' stages (one query); call the result for each list in order."""
    return _grouped(conn.execute(Q["stages_of_pipelines"], (pipeline_ids,)), pipeline_ids)


@functools.lru_cache(maxsize=64)
def _page_stages_sql(page_sql: str) -> sql.SQL:
    # The page's own statement as a subquery (its parameters are the page's): the stages need not wait
    # for the page's ids, so both reads travel in one round trip. Composed (the subquery is the page's
    # statement), so not a named query: the columns are those of Q["stages_of_pipelines"].
    return sql.SQL(sql.SQL("SELECT id, pipeline_id, name, position, kind, probability FROM stages"
                           " WHERE pipeline_id IN (SELECT id FROM ({}) AS page)"
                           " ORDER BY pipeline_id, position").format(sql.SQL(page_sql)).as_string())


def page_stages_pending(conn: Conn, query: ListQuery) -> Callable[[], dict[uuid.UUID, list[StageOut]]]:
    """Queue the read of the stages of the pipelines on one list page, next to store.list_pending (one
    query, nothing awaited); call the result for {pipeline id: stages in order}."""
    statement, params = store.list_statement(TABLE, query)
    return _grouped(conn.execute(_page_stages_sql(statement.as_string()), params))


def stages_of(conn: Conn, pipeline_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[StageOut]]:
    """Stages of several pipelines (one query), each list in order."""
    return stages_of_pending(conn, pipeline_ids)()


def out(row: Row, stages: list[StageOut]) -> PipelineOut:
    """Row plus stages to API shape."""
    return PipelineOut(id=row[0], name=row[1], is_default=row[2], stages=stages, created_at=row[3], updated_at=row[4])


def read_pending(conn: Conn, pipeline_id: uuid.UUID) -> Callable[[], tuple[Row, PipelineOut]]:
    """Queue the read of a pipeline's row and its stages (nothing awaited); call the result for the row and
    its API shape (404 when there is no such pipeline)."""
    found = store.get_pending(conn, TABLE, pipeline_id)
    stages = stages_of_pending(conn, [pipeline_id])

    def result() -> tuple[Row, PipelineOut]:
        row = store.found(found())
        return row, out(row, stages()[pipeline_id])
    return result


def create(conn: Conn, *, tenant_id: uuid.UUID, name: str, stages: list[StageIn] | None, is_default: bool,
           now: datetime) -> uuid.UUID:
    """Insert a pipeline and its stages (queued; nothing awaited)."""
    pipeline_id = uuid.uuid4()
    conn.execute(Q["pipeline_insert"], (tenant_id, pipeline_id, name, is_default, now, now))
    specs = stages or [StageIn(name=n, kind=k) for n, k in DEFAULT_STAGES]
    with conn.cursor() as cur:
        cur.executemany(
            Q["stages_insert_of_new_pipeline"],
            [(tenant_id, pipeline_id, s.name, i, s.kind, s.probability, now, now) for i, s in enumerate(specs)])
    return pipeline_id


def create_default(conn: Conn, *, tenant_id: uuid.UUID, now: datetime) -> uuid.UUID:
    """The "Sales" pipeline every new workspace starts with."""
    return create(conn, tenant_id=tenant_id, name="Sales", stages=None, is_default=True, now=now)


def add(conn: Conn, *, tenant_id: uuid.UUID, body: PipelineCreate, actor: Callable[[], Actor]
        ) -> tuple[Row, PipelineOut]:
    """Create a pipeline (never the default: a PATCH makes one that), audited; returns its row and API shape."""
    created = create(conn, tenant_id=tenant_id, name=body.name, stages=body.stages, is_default=False,
                     now=clock.now())
    # The read first: it brings the authorization (and the caller the audit entry names) with it.
    found = read_pending(conn, created)()
    audit.record(conn, tenant_id=tenant_id, action="pipeline.created", actor=actor(), target_type="pipeline",
                 target_id=created)
    return found


def update(conn: Conn, *, tenant_id: uuid.UUID, pipeline_id: uuid.UUID, body: PipelinePatch,
           expected: frozenset[str] | None, actor: Callable[[], Actor]) -> tuple[Row, PipelineOut]:
    """Rename a pipeline or make it the default (`expected`: the ETags the caller holds; None: any version),
    audited; returns its new row and API shape."""
    if body.is_default:
        # Every pipeline row, in id order, before this one alone: two concurrent switches then wait
        # for each other instead of each holding the row the other needs (a deadlock).
        lock_all(conn)
    existing = store.require_for_update(conn, TABLE, pipeline_id)
    store.check_version(expected, existing, TABLE)
    if body.is_default:
        make_default(conn, pipeline_id)
    # The time is read after the locks were granted, as the stamp of the version this write makes.
    store.update(conn, TABLE, pipeline_id, pipeline_values(body), clock.now())
    audit.record(conn, tenant_id=tenant_id, action="pipeline.updated", actor=actor(), target_type="pipeline",
                 target_id=pipeline_id)
    return read_pending(conn, pipeline_id)()


def lock_all(conn: Conn) -> None:
    """Lock the workspace's pipeline rows in id order (taking them in one order cannot deadlock)."""
    # Concurrent switches of the default serialize here; without it, the second one would not see the
    # first one's new default and would break the one-default index.
    conn.execute(Q["pipelines_lock_all"]).fetchall()


def make_default(conn: Conn, pipeline_id: uuid.UUID) -> None:
    """Make this pipeline the workspace's default (one default at a time). The caller holds lock_all()."""
    # updated_at too: the demoted pipeline's representation (and so its ETag) changes.
    conn.execute(Q["pipelines_demote_default"], (pipeline_id,)).fetchall()
    conn.execute(Q["pipeline_make_default"], (pipeline_id,)).fetchall()


def first_stage_pending(conn: Conn, pipeline_id: uuid.UUID | None
                        ) -> Callable[[], tuple[uuid.UUID, uuid.UUID, str] | None]:
    """Queue the lookup of (pipeline, stage, kind) of the first stage of a pipeline, or of the default
    pipeline (pipeline mode: nothing awaited); call the result to read it."""
    if pipeline_id is None:
        cur = conn.execute(Q["stage_first_of_default_pipeline"])
    else:
        cur = conn.execute(Q["stage_first_of_pipeline"], (pipeline_id,))

    def read() -> tuple[uuid.UUID, uuid.UUID, str] | None:
        row = cur.fetchone()
        return (row[0], row[1], str(row[2])) if row else None

    return read


def stage_pending(conn: Conn, stage_id: uuid.UUID) -> Callable[[], tuple[uuid.UUID, str] | None]:
    """Queue the lookup of stage() (pipeline mode: nothing awaited); call the result to read it."""
    cur = conn.execute(Q["stage_pipeline_and_kind"], (stage_id,))

    def read() -> tuple[uuid.UUID, str] | None:
        row = cur.fetchone()
        return (row[0], str(row[1])) if row else None

    return read


def stage(conn: Conn, stage_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """(pipeline, kind) of a stage of this workspace."""
    return stage_pending(conn, stage_id)()


def board_pending(conn: Conn, pipeline_id: uuid.UUID) -> Callable[[], Board]:
    """Queue the board (stages in order with lead counts and value totals per currency: one query);
    call the result for it (404 when there is no such pipeline)."""
    cursor = conn.execute(Q["pipeline_board"], {"p": pipeline_id})

    def result() -> Board:
        rows = cursor.fetchall()
        if not rows:
            raise errors.NotFound("no such pipeline")
        return Board(pipeline_id=pipeline_id, columns=[
            BoardColumn(stage=_stage(r), leads=int(r[6]), totals={str(k): int(v) for k, v in dict(r[7]).items()})
            for r in rows])
    return result


def pipeline_values(body: PipelinePatch) -> dict[str, Any]:
    """Column values a pipeline PATCH changes (is_default is handled by make_default); null is a 422 for
    every field (none of them can be cleared)."""
    values = patch_values(body, required=("name", "is_default"))
    values.pop("is_default", None)
    return values


def delete(conn: Conn, *, tenant_id: uuid.UUID, pipeline_id: uuid.UUID, expected: frozenset[str] | None,
           actor: Callable[[], Actor]) -> None:
    """Delete a pipeline that is not the default and holds no leads (Conflict otherwise), audited.

    `expected`: the ETags the caller holds (None: any version). `actor` is called after the reads, so a
    deferred authorization shares their round trip.
    """
    existing = store.require_for_update(conn, TABLE, pipeline_id)
    store.check_version(expected, existing, TABLE)
    if existing[TABLE.index("is_default")]:
        raise errors.Conflict("the default pipeline cannot be deleted; make another one the default first")
    if conn.execute(Q["pipeline_holds_a_lead"], (pipeline_id,)).fetchone():
        raise errors.Conflict("the pipeline holds leads; move or delete them first")
    store.delete(conn, TABLE, pipeline_id)
    audit.record(conn, tenant_id=tenant_id, action="pipeline.deleted", actor=actor(), target_type="pipeline",
                 target_id=pipeline_id)
