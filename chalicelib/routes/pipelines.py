"""Pipelines, their stages, the board, and a lead's stage history."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib import errors
from chalicelib.auth.principal import parse_id, workspace_read, workspace_tx
from chalicelib.crm import leads, pipelines, stages, store
from chalicelib.crm.api import Context, Page
from chalicelib.crm.listing import list_parameters, parse_list, parse_uuid
from chalicelib.crm.pipelines import TABLE, Board, PipelineCreate, PipelineOut, PipelinePatch, StageIn
from chalicelib.crm.stages import StagePatch
from chalicelib.http import endpoint, idempotent, json_response
from chalicelib.inputs import if_match, parse_body, query_params

bp = Blueprint(__name__)
WS = "/workspaces/{workspace_id}"
ONE = WS + "/pipelines/{pipeline_id}"
TAGS = ("crm",)


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

        def produce() -> Response:
            row, pipeline = pipelines.add(conn, tenant_id=tenant, body=body, actor=lambda: caller().actor)
            return _answer(row, pipeline, 201, {"Location": f"/workspaces/{tenant}/pipelines/{pipeline.id}"})

        return idempotent(conn, request, tenant_id=tenant, route="POST /pipelines", produce=produce)


@endpoint(bp, ONE, "GET", summary="A pipeline with its stages", response_model=PipelineOut, errors_=(401, 404),
          tags=TAGS, etag=True)
def get_pipeline(workspace_id: str, pipeline_id: str) -> Response:
    """With ETag."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        pipeline = pipelines.read_pending(conn, parse_id(pipeline_id))
    return _answer(*pipeline())


@endpoint(bp, ONE, "PATCH", summary="Rename a pipeline or make it the default (admin)", request_model=PipelinePatch,
          response_model=PipelineOut, errors_=(401, 403, 404, 412), tags=TAGS, etag=True)
def patch_pipeline(workspace_id: str, pipeline_id: str) -> Response:
    """Honours If-Match."""
    request = bp.current_request
    body = parse_body(request, PipelinePatch)
    record = parse_id(pipeline_id)
    with workspace_tx(request, workspace_id, min_role="admin") as (conn, caller):
        row, pipeline = pipelines.update(conn, tenant_id=parse_id(workspace_id), pipeline_id=record, body=body,
                                         expected=if_match(request), actor=lambda: caller().actor)
    return _answer(row, pipeline)


@endpoint(bp, ONE, "DELETE", summary="Delete a pipeline without leads (admin; not the default)", status=204,
          errors_=(401, 403, 404, 409, 412), tags=TAGS)
def delete_pipeline(workspace_id: str, pipeline_id: str) -> Response:
    """409 while it holds leads or is the default."""
    request = bp.current_request
    record = parse_id(pipeline_id)
    with workspace_tx(request, workspace_id, min_role="admin") as (conn, caller):
        pipelines.delete(conn, tenant_id=parse_id(workspace_id), pipeline_id=record,
                         expected=if_match(request), actor=lambda: caller().actor)
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
        ctx = Context(conn, parse_id(workspace_id), caller)

        def produce() -> Response:
            created, prow, pipeline = stages.create(ctx, pipeline_id=record, body=body, expected=if_match(request))
            # The new stage's own address (its PATCH and DELETE); the body is the whole pipeline.
            return _answer(prow, pipeline, 201, {"Location": f"/workspaces/{ctx.tenant}/pipelines/{record}"
                                                             f"/stages/{created}"})

        # The pipeline is part of the route: one key adding a stage to two pipelines is two requests.
        return idempotent(conn, request, tenant_id=ctx.tenant, route=f"POST /pipelines/{record}/stages",
                          produce=produce)


@endpoint(bp, ONE + "/stages/{stage_id}", "PATCH", summary="Rename, re-kind or move a stage (admin)",
          request_model=StagePatch, response_model=PipelineOut, errors_=(401, 403, 404, 412), tags=TAGS, etag=True)
def patch_stage(workspace_id: str, pipeline_id: str, stage_id: str) -> Response:
    """A new kind changes the status of the stage's leads too."""
    request = bp.current_request
    body = parse_body(request, StagePatch)
    record, stage = parse_id(pipeline_id), parse_id(stage_id)
    with workspace_tx(request, workspace_id, min_role="admin") as (conn, caller):
        prow, pipeline = stages.update(Context(conn, parse_id(workspace_id), caller), pipeline_id=record,
                                       stage_id=stage, body=body, expected=if_match(request))
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
        stages.delete(Context(conn, parse_id(workspace_id), caller), pipeline_id=record, stage_id=stage,
                      target=target, expected=if_match(request))
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

