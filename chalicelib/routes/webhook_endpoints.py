"""Outgoing webhooks: endpoints (owner/admin), their delivery log, replays, test pings, and the event catalogue."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib import clock, pagination
from chalicelib.auth.principal import parse_id, workspace_read, workspace_scope, workspace_tx
from chalicelib.crm.api import Page
from chalicelib.crm.listing import page_parameters
from chalicelib.http import endpoint, json_response
from chalicelib.inputs import if_match, parse_body, query_params
from chalicelib.outgoing import catalogue, endpoints, log, trigger
from chalicelib.outgoing.endpoints import EndpointCreated, EndpointIn, EndpointOut, EndpointPatch, SecretRotated

bp = Blueprint(__name__)
BASE = "/workspaces/{workspace_id}/webhook-endpoints"
ITEM = BASE + "/{endpoint_id}"
TAGS = ("webhooks-out",)
ERRORS = (401, 403, 404)


class EndpointList(Page[EndpointOut]):
    """The workspace's endpoints (one page holds them all)."""


@endpoint(bp, "/webhook-event-types", "GET", summary="Every event type a webhook endpoint can subscribe to",
          description="Each with a description and the JSON Schema of its `data`. A delivery's body is "
                      "`{\"type\", \"timestamp\", \"data\"}`, signed per Standard Webhooks (webhook-id, "
                      "webhook-timestamp, webhook-signature).",
          response_model=catalogue.EventTypeList, tags=TAGS)
def event_types() -> Response:
    """Public: the catalogue holds no workspace data."""
    return json_response(catalogue.listing(), headers={"Cache-Control": "public, max-age=300"})


@endpoint(bp, BASE, "POST", summary="Subscribe an endpoint to events (owner/admin); its secret is shown once",
          request_model=EndpointIn, response_model=EndpointCreated, status=201, errors_=(*ERRORS, 422), tags=TAGS)
def create_endpoint(workspace_id: str) -> Response:
    """The URL must be https on a public host (checked again at every delivery)."""
    request = bp.current_request
    body = parse_body(request, EndpointIn)
    tenant = parse_id(workspace_id)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        created = endpoints.create(conn, tenant_id=tenant, spec=body, actor=principal.actor, now=clock.now())
    return json_response(created, 201, headers={"Location": f"/workspaces/{tenant}/webhook-endpoints/{created.id}",
                                                "ETag": endpoints.etag(created)})


@endpoint(bp, BASE, "GET", summary="The workspace's webhook endpoints (owner/admin)", response_model=EndpointList,
          errors_=ERRORS, tags=TAGS)
def list_endpoints(workspace_id: str) -> Response:
    """Never a secret."""
    with workspace_read(bp.current_request, workspace_id, min_role="admin") as conn:
        found = endpoints.list_pending(conn)
    return json_response(EndpointList(data=found(), next_cursor=None))


@endpoint(bp, ITEM, "GET", summary="A webhook endpoint (owner/admin)", response_model=EndpointOut, errors_=ERRORS,
          tags=TAGS, etag=True)
def get_endpoint(workspace_id: str, endpoint_id: str) -> Response:
    """With ETag."""
    with workspace_read(bp.current_request, workspace_id, min_role="admin") as conn:
        found = endpoints.get_pending(conn, parse_id(endpoint_id))
    current = found()
    return json_response(current, headers={"ETag": endpoints.etag(current)})


@endpoint(bp, ITEM, "PATCH", summary="Change a webhook endpoint (owner/admin)", request_model=EndpointPatch,
          response_model=EndpointOut, errors_=(*ERRORS, 412, 422), tags=TAGS, etag=True,
          description="URL, event types, description, enabled, rate limit. Re-enabling a disabled endpoint "
                      "clears why it was disabled. Honours If-Match.")
def patch_endpoint(workspace_id: str, endpoint_id: str) -> Response:
    """Audited with the changed fields' names."""
    request = bp.current_request
    body = parse_body(request, EndpointPatch)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        changed = endpoints.patch(conn, tenant_id=parse_id(workspace_id), endpoint_id=parse_id(endpoint_id),
                                  spec=body, expected=if_match(request), actor=principal.actor, now=clock.now())
    return json_response(changed, headers={"ETag": endpoints.etag(changed)})


@endpoint(bp, ITEM, "DELETE", summary="Delete a webhook endpoint (owner/admin)", status=204, errors_=ERRORS,
          tags=TAGS)
def delete_endpoint(workspace_id: str, endpoint_id: str) -> Response:
    """Its pending deliveries stop; its log goes with it."""
    with workspace_tx(bp.current_request, workspace_id, min_role="admin") as (conn, caller):
        endpoints.delete(conn, tenant_id=parse_id(workspace_id), endpoint_id=parse_id(endpoint_id),
                         actor=caller().actor)
    return Response(body="", status_code=204)


@endpoint(bp, ITEM + "/rotate-secret", "POST", summary="Rotate an endpoint's signing secret (owner/admin)",
          response_model=SecretRotated, errors_=ERRORS, tags=TAGS,
          description="The new secret is shown once. The previous one stays valid for 24 hours, during which "
                      "every delivery carries both signatures (space-separated).")
def rotate_secret(workspace_id: str, endpoint_id: str) -> Response:
    """Audited."""
    with workspace_scope(bp.current_request, workspace_id, min_role="admin") as (conn, principal):
        rotated = endpoints.rotate_secret(conn, tenant_id=parse_id(workspace_id), endpoint_id=parse_id(endpoint_id),
                                          actor=principal.actor, now=clock.now())
    return json_response(rotated)


@endpoint(bp, ITEM + "/test", "POST", summary="Send a ping event to an endpoint (owner/admin)",
          response_model=log.Queued, status=202, errors_=ERRORS, tags=TAGS)
def test_endpoint(workspace_id: str, endpoint_id: str) -> Response:
    """The ping shows in the delivery log like any event."""
    tenant = parse_id(workspace_id)
    with workspace_tx(bp.current_request, workspace_id, min_role="admin") as (conn, caller):
        caller()
        queued = log.ping(conn, endpoint_id=parse_id(endpoint_id), now=clock.now())
    trigger.after_commit([tenant])
    return json_response(queued, 202)


@endpoint(bp, ITEM + "/deliveries", "GET", summary="An endpoint's delivery log: every attempt, newest first "
          "(owner/admin, paged)", response_model=log.AttemptPage, errors_=(400, *ERRORS), tags=TAGS,
          parameters=page_parameters())
def list_deliveries(workspace_id: str, endpoint_id: str) -> Response:
    """`limit` (<= 200) and an opaque `cursor`."""
    request = bp.current_request
    target = parse_id(endpoint_id)
    binding = f"webhook-attempts|{parse_id(workspace_id)}|{target}"
    limit, before = pagination.time_keyset(query_params(request), binding=binding)
    with workspace_read(request, workspace_id, min_role="admin") as conn:
        exists = endpoints.get_pending(conn, target)
        found = log.attempts_pending(conn, target, limit=limit, before=before)
    exists()
    rows = found()
    page = rows[:limit]
    cursor = pagination.time_cursor(page[-1].attempted_at, page[-1].id, binding=binding) if len(rows) > limit else None
    return json_response(log.AttemptPage(data=page, next_cursor=cursor))


@endpoint(bp, ITEM + "/deliveries/{delivery_id}/replay", "POST", summary="Send a delivery again (owner/admin)",
          response_model=log.Queued, status=202, errors_=ERRORS, tags=TAGS,
          description="A new attempt of the same message, with the same webhook-id.")
def replay_delivery(workspace_id: str, endpoint_id: str, delivery_id: str) -> Response:
    """Audited."""
    tenant = parse_id(workspace_id)
    with workspace_tx(bp.current_request, workspace_id, min_role="admin") as (conn, caller):
        queued = log.replay(conn, tenant_id=tenant, endpoint_id=parse_id(endpoint_id),
                            delivery_id=parse_id(delivery_id), actor=caller().actor, now=clock.now())
    trigger.after_commit([tenant])
    return json_response(queued, 202)
