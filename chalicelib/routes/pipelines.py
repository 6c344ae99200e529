"""Pipelines, their stages, the board, and a lead's stage history."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from chalice.app import Blueprint, Response
from psycopg import Connection
from psycopg.rows import TupleRow

from chalicelib import audit, errors
from chalicelib.auth.principal import parse_id, workspace_read, workspace_tx
from chalicelib.crm import idempotency, leads, pipelines, store
from chalicelib.crm.api import Context, Page, raw_body
from chalicelib.crm.listing import list_parameters, parse_list, parse_uuid
from chalicelib.crm.pipelines import (
    STAGES,
    TABLE,
    Board,
    PipelineCreate,
    PipelineOut,
    PipelinePatch,
    StageIn,
    StagePatch,
)
from chalicelib.http import endpoint, json_response, parse_body, query_params

bp = Blueprint(__name__)
WS = "/workspaces/{workspace_id}"
ONE = WS + "/pipelines/{pipeline_id}"
TAGS = ("crm",)


def _pipeline_pending(conn: Connection[TupleRow], record: uuid.UUID) -> Callable[[], tuple[store.Row, PipelineOut]]:
    """Queue the pipeline's row and its stages (nothing awaited); call the result for them (404 if none)."""
    found = store.get_pending(conn, TABLE, record)
    stages = pipelines.stages_of_pending(conn, [record])

    def result() -> tuple[store.Row, PipelineOut]:
        row = store.found(found())
        return row, pipelines.out(row, stages()[record])
    return result


def _pipeline(ctx: Context, pipeline_id: str) -> tuple[store.Row, PipelineOut]:
    # Both reads queued before either is awaited: one round trip.
    return _pipeline_pending(ctx.conn, parse_id(pipeline_id))()


def _answer(row: store.Row, pipeline: PipelineOut, status: int = 200, extra: dict[str, str] | None = None) -> Response:
    return json_response(pipeline, status, headers={"ETag": store.etag(row, TABLE), **(extra or {})})


@endpoint(bp, WS + "/pipelines", "GET", summary="List pipelines with their stages",
          response_model=Page[PipelineOut], errors_=(400, 401, 404), tags=TAGS,
          parameters=list_parameters(TABLE.listing))
def list_pipelines(workspace_id: str) -> Response:
    """Pipelines (paged) each with its stages in order."""
    request = bp.current_request
    query = parse_list(TABLE.listing, query_params(request), tenant=parse_id(workspace_id))
    with workspace_read(request, workspace_id) as conn:
        page = store.list_pending(conn, TABLE, query)
        stages = pipelines.page_stages_pending(conn, query)
    # Read after the block: the authorization, the page, its stages and the commit in one round trip.
    rows, cursor = page()
    found = stages()
    missing = [r[0] for r in rows if not found.get(r[0])]
    if missing:
        # Every pipeline has a stage: none means a commit landed between the two reads (each statement
        # has its own snapshot) and the stages' page was another one. Rare; read those directly.
        with workspace_read(request, workspace_id) as conn:
            again = pipelines.stages_of_pending(conn, missing)
        found.update(again())
    data = [pipelines.out(r, found.get(r[0], [])) for r in rows]
    return json_response({"data": data, "next_cursor": cursor})


@endpoint(bp, WS + "/pipelines", "POST", summary="Create a pipeline (admin)", request_model=PipelineCreate,
          response_model=PipelineOut, status=201, errors_=(400, 401, 403, 404, 409), tags=TAGS, idempotent=True,
          etag=True)
def create_pipeline(workspace_id: str) -> Response:
    """Without stages it gets New, Qualified, Proposal, Won, Lost."""
    request = bp.current_request
    body = parse_body(request, PipelineCreate)
    tenant = parse_id(workspace_id)
    with workspace_tx(request, workspace_id, min_role="admin") as (conn, caller):
        ctx = Context(conn, tenant, caller, request)

        def produce() -> Response:
            created = pipelines.create(conn, tenant_id=tenant, name=body.name, stages=body.stages,
                                       is_default=False, now=ctx.now)
            # The read first: it brings the authorization (and the caller the audit entry names) with it.
            row, pipeline = _pipeline(ctx, str(created))
            audit.record(conn, tenant_id=tenant, action="pipeline.created", actor=ctx.principal.actor,
                         target_type="pipeline", target_id=created)
            return _answer(row, pipeline, 201, {"Location": f"/workspaces/{tenant}/pipelines/{created}"})

        return idempotency.run(conn, tenant_id=tenant, key=request.headers.get("idempotency-key"),
                               route="POST /pipelines", body=raw_body(request), produce=produce)


@endpoint(bp, ONE, "GET", summary="A pipeline with its stages", response_model=PipelineOut, errors_=(401, 404),
          tags=TAGS, etag=True)
def get_pipeline(workspace_id: str, pipeline_id: str) -> Response:
    """With ETag."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        pipeline = _pipeline_pending(conn, parse_id(pipeline_id))
    return _answer(*pipeline())


@endpoint(bp, ONE, "PATCH", summary="Rename a pipeline or make it the default (admin)", request_model=PipelinePatch,
          response_model=PipelineOut, errors_=(401, 403, 404, 412), tags=TAGS, etag=True)
def patch_pipeline(workspace_id: str, pipeline_id: str) -> Response:
    """Honours If-Match."""
    request = bp.current_request
    body = parse_body(request, PipelinePatch)
    record = parse_id(pipeline_id)
    with workspace_tx(request, workspace_id, min_role="admin") as (conn, caller):
        ctx = Context(conn, parse_id(workspace_id), caller, request)
        if body.is_default:
            # Every pipeline row, in id order, before this one alone: two concurrent switches then wait
            # for each other instead of each holding the row the other needs (a deadlock).
            pipelines.lock_all(conn)
        existing = store.require_for_update(conn, TABLE, record)
        store.check_if_match(request.headers.get("if-match"), existing, TABLE)
        if body.is_default:
            pipelines.make_default(conn, record)
        store.update(conn, TABLE, record, pipelines.pipeline_values(body), ctx.now)
        audit.record(conn, tenant_id=ctx.tenant, action="pipeline.updated", actor=ctx.principal.actor,
                     target_type="pipeline", target_id=record)
        row, pipeline = _pipeline(ctx, pipeline_id)
    return _answer(row, pipeline)


@endpoint(bp, ONE, "DELETE", summary="Delete a pipeline without leads (admin; not the default)", status=204,
          errors_=(401, 403, 404, 409, 412), tags=TAGS)
def delete_pipeline(workspace_id: str, pipeline_id: str) -> Response:
    """409 while it holds leads or is the default."""
    request = bp.current_request
    record = parse_id(pipeline_id)
    with workspace_tx(request, workspace_id, min_role="admin") as (conn, caller):
        pipelines.delete(conn, tenant_id=parse_id(workspace_id), pipeline_id=record,
                         if_match=request.headers.get("if-match"), actor=lambda: caller().actor)
    return Response(body="", status_code=204)


@endpoint(bp, ONE + "/stages", "POST", summary="Add a stage at a position (admin)", request_model=StageIn,
          response_model=PipelineOut, status=201, errors_=(400, 401, 403, 404, 409, 412), tags=TAGS, idempotent=True,
          etag=True)
def add_stage(workspace_id: str, pipeline_id: str) -> Response:
    """The stages after `position` shift down one."""
    request = bp.current_request
    body = parse_body(request, StageIn)
    record = parse_id(pipeline_id)
    with workspace_tx(request, workspace_id, min_role="admin") as (conn, caller):
        ctx = Context(conn, parse_id(workspace_id), caller, request)

        def produce() -> Response:
            created = pipelines.add_stage(conn, tenant_id=ctx.tenant, pipeline_id=record, stage=body,
                                          if_match=request.headers.get("if-match"))
            audit.record(conn, tenant_id=ctx.tenant, action="stage.created", actor=ctx.principal.actor,
                         target_type="stage", target_id=created)
            prow, pipeline = _pipeline(ctx, pipeline_id)
            # The new stage's own address (its PATCH and DELETE); the body is the whole pipeline.
            return _answer(prow, pipeline, 201, {"Location": f"/workspaces/{ctx.tenant}/pipelines/{record}"
                                                             f"/stages/{created}"})

        # The pipeline is part of the route: one key adding a stage to two pipelines is two requests.
        return idempotency.run(conn, tenant_id=ctx.tenant, key=request.headers.get("idempotency-key"),
                               route=f"POST /pipelines/{record}/stages", body=raw_body(request), produce=produce)


@endpoint(bp, ONE + "/stages/{stage_id}", "PATCH", summary="Rename, re-kind or move a stage (admin)",
          request_model=StagePatch, response_model=PipelineOut, errors_=(401, 403, 404, 412), tags=TAGS, etag=True)
def patch_stage(workspace_id: str, pipeline_id: str, stage_id: str) -> Response:
    """A new kind changes the status of the stage's leads too."""
    request = bp.current_request
    body = parse_body(request, StagePatch)
    record, stage = parse_id(pipeline_id), parse_id(stage_id)
    with workspace_tx(request, workspace_id, min_role="admin") as (conn, caller):
        ctx = Context(conn, parse_id(workspace_id), caller, request)
        pipelines.lock(conn, record, request.headers.get("if-match"))
        found = pipelines.stage(conn, stage)
        if found is None or found[0] != record:
            raise errors.NotFound("no such stage")
        values = pipelines.stage_values(body)
        if values:
            store.update(conn, STAGES, stage, values, ctx.now)
        if "kind" in values:
            pipelines.set_stage_kind_of_leads(conn, stage_id=stage, kind=values["kind"], now=ctx.now)
        if body.position is not None:
            pipelines.reorder(conn, record, stage, body.position)
        audit.record(conn, tenant_id=ctx.tenant, action="stage.updated", actor=ctx.principal.actor, target_type="stage",
                     target_id=stage)
        prow, pipeline = _pipeline(ctx, pipeline_id)
    return _answer(prow, pipeline)


@endpoint(bp, ONE + "/stages/{stage_id}", "DELETE", summary="Delete a stage; ?target_stage_id= moves its leads",
          status=204, errors_=(401, 403, 404, 409, 412, 422), tags=TAGS, parameters=[
              {"name": "target_stage_id", "in": "query", "description": "Where the stage's leads move (another stage "
               "of the same pipeline); needed while the stage holds leads.",
               "schema": {"type": "string", "format": "uuid"}}])
def delete_stage(workspace_id: str, pipeline_id: str, stage_id: str) -> Response:
    """A stage holding leads needs a target stage of the same pipeline."""
    request = bp.current_request
    record, stage = parse_id(pipeline_id), parse_id(stage_id)
    raw_target = query_params(request).get("target_stage_id")
    # A malformed id is the request's fault (400), not a missing stage.
    target = parse_uuid("target_stage_id")(raw_target) if raw_target else None
    with workspace_tx(request, workspace_id, min_role="admin") as (conn, caller):
        ctx = Context(conn, parse_id(workspace_id), caller, request)
        moved = pipelines.delete_stage(conn, pipeline_id=record, stage_id=stage, target=target,
                                       if_match=request.headers.get("if-match"))
        if moved and target is not None:
            leads.record_moves(ctx, moved, stage, target)
        audit.record(conn, tenant_id=ctx.tenant, action="stage.deleted", actor=ctx.principal.actor, target_type="stage",
                     target_id=stage, details={"moved_leads": len(moved)})
    return Response(body="", status_code=204)


@endpoint(bp, ONE + "/board", "GET", summary="Stages in order with lead counts and totals per currency",
          response_model=Board, errors_=(401, 404), tags=TAGS)
def board(workspace_id: str, pipeline_id: str) -> Response:
    """One query."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        board = pipelines.board_pending(conn, parse_id(pipeline_id))
    return json_response(board())


@endpoint(bp, WS + "/leads/{lead_id}/stage-history", "GET", summary="A lead's stage changes, oldest first",
          response_model=leads.StageHistory, errors_=(400, 401, 404), tags=TAGS,
          parameters=[p for p in list_parameters(leads.HISTORY.listing) if p["name"] != "lead_id"])
def stage_history(workspace_id: str, lead_id: str) -> Response:
    """From, to, when, who; paged like every list (limit, cursor)."""
    request = bp.current_request
    record = parse_id(lead_id)
    params = query_params(request)
    if "lead_id" in params:
        raise errors.BadRequest("unknown query parameter lead_id")  # the path names the lead
    query = parse_list(leads.HISTORY.listing, {**params, "lead_id": str(record)}, tenant=parse_id(workspace_id))
    with workspace_read(request, workspace_id) as conn:
        lead = store.get_pending(conn, leads.TABLE, record)
        changes = leads.history_pending(conn, query)
    store.found(lead())
    return json_response(changes())

