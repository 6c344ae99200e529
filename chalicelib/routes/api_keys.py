"""Workspace API keys and the workspace audit log."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib import audit, clock, errors, pagination
from chalicelib.accounts.models import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyOut, AuditEntry, AuditPage
from chalicelib.auth import apikeys
from chalicelib.auth.principal import parse_id, workspace_read, workspace_scope
from chalicelib.crm.listing import page_parameters
from chalicelib.http import endpoint, json_response
from chalicelib.inputs import if_match, parse_body, query_params
from chalicelib.settings import get_settings

bp = Blueprint(__name__)
WS = "/workspaces/{workspace_id}"


def _key(row: tuple[object, ...]) -> ApiKeyOut:
    return ApiKeyOut(id=row[0], name=row[1], prefix=row[2], role=row[3], created_at=row[4],
                     expires_at=row[5], last_used_at=row[6],
                     revoked_at=row[7] if len(row) > 7 else None)


@endpoint(bp, WS + "/api-keys", "POST", summary="Create an API key (admin); the key is shown once",
          request_model=ApiKeyCreate, response_model=ApiKeyCreated, status=201, errors_=(401, 403, 404),
          tags=("api-keys",))
def create_key(workspace_id: str) -> Response:
    """`Authorization: Bearer <key>` then acts in this workspace only, with the key's role."""
    request = bp.current_request
    body = parse_body(request, ApiKeyCreate)
    now = clock.now()
    if body.expires_at is not None and (body.expires_at.tzinfo is None or body.expires_at <= now):
        raise errors.ValidationFailed("expires_at must be a future time with a timezone",
                                      errors=[errors.FieldError("expires_at", "must be in the future", "value_error")])
    tenant = parse_id(workspace_id)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        # A key cannot mint keys: otherwise a leaked admin key would outlive its own revocation.
        if principal.api_key_id is not None:
            raise errors.Forbidden("API keys are created by signed-in members, not by other keys")
        if body.role == "admin" and principal.role not in ("owner", "admin"):
            raise errors.Forbidden("this needs the admin role")
        key, row = apikeys.create(conn, tenant_id=tenant, name=body.name, role=body.role,
                                  expires_at=body.expires_at, created_by=principal.user_id, now=now,
                                  settings=get_settings())
        audit.record(conn, tenant_id=tenant, action="api_key.created", actor=principal.actor, target_type="api_key",
                     target_id=row[0], details={"role": body.role})
    created = ApiKeyCreated(**_key(row).model_dump(), key=key)
    return json_response(created, 201, headers={"Location": f"/workspaces/{tenant}/api-keys/{row[0]}"})


@endpoint(bp, WS + "/api-keys", "GET", summary="API keys: name, prefix, role, created, last used (admin)",
          response_model=ApiKeyList, errors_=(401, 403, 404), tags=("api-keys",))
def list_keys(workspace_id: str) -> Response:
    """Never the key itself."""
    with workspace_read(bp.current_request, workspace_id, min_role="admin") as conn:
        found = apikeys.list_keys_pending(conn)
    return json_response(ApiKeyList(data=[_key(r) for r in found()]))


@endpoint(bp, WS + "/api-keys/{key_id}", "GET", summary="An API key: name, prefix, role, created, last used (admin)",
          response_model=ApiKeyOut, errors_=(401, 403, 404), tags=("api-keys",), etag=True)
def get_key(workspace_id: str, key_id: str) -> Response:
    """Never the key itself; the ETag is what a PATCH's If-Match names."""
    with workspace_read(bp.current_request, workspace_id, min_role="admin") as conn:
        found = apikeys.get_pending(conn, parse_id(key_id))
    row = found()
    if row is None:
        raise errors.NotFound("no such API key")
    return json_response(_key(row), headers={"ETag": apikeys.etag(row)})


@endpoint(bp, WS + "/api-keys/{key_id}", "PATCH", summary="Rename an API key (admin)",
          description="Only the name changes: a key's role, expiry and secret are fixed (create another key). "
                      "Honours If-Match; audited \"api_key.renamed\".",
          request_model=apikeys.ApiKeyPatch, response_model=ApiKeyOut, errors_=(400, 401, 403, 404, 412, 422),
          tags=("api-keys",), etag=True)
def rename_key(workspace_id: str, key_id: str) -> Response:
    """The key keeps working; a revoked key may be renamed too."""
    request = bp.current_request
    body = parse_body(request, apikeys.ApiKeyPatch)
    target = parse_id(key_id)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        row = apikeys.rename(conn, key_id=target, name=body.name, expected=if_match(request))
        audit.record(conn, tenant_id=parse_id(workspace_id), action="api_key.renamed", actor=principal.actor,
                     target_type="api_key", target_id=target)
    return json_response(_key(row), headers={"ETag": apikeys.etag(row)})


@endpoint(bp, WS + "/api-keys/{key_id}", "DELETE", summary="Revoke an API key at once (admin)", status=204,
          errors_=(401, 403, 404), tags=("api-keys",))
def revoke_key(workspace_id: str, key_id: str) -> Response:
    """The next request with the key is refused."""
    target = parse_id(key_id)
    with workspace_scope(bp.current_request, workspace_id, min_role="admin") as (conn, principal):
        if not apikeys.revoke(conn, key_id=target, now=clock.now()):
            raise errors.NotFound("no such API key")
        audit.record(conn, tenant_id=parse_id(workspace_id), action="api_key.revoked", actor=principal.actor,
                     target_type="api_key", target_id=target)
    return Response(body="", status_code=204)


@endpoint(bp, WS + "/audit-log", "GET", summary="The workspace audit log, newest first (owner/admin, paged)",
          response_model=AuditPage, errors_=(400, 401, 403, 404), tags=("audit",), parameters=page_parameters())
def audit_log(workspace_id: str) -> Response:
    """`limit` (<= 200) and an opaque `cursor`."""
    request = bp.current_request
    binding = f"audit|{parse_id(workspace_id)}"
    limit, before = pagination.time_keyset(query_params(request), binding=binding)
    with workspace_read(request, workspace_id, min_role="admin") as conn:
        found = audit.entries_pending(conn, limit=limit, before=before)
    rows = found()
    page = rows[:limit]
    data = [AuditEntry(id=r[0], occurred_at=r[1], action=r[2], actor_user_id=r[3],
                       actor_api_key_id=r[4], target_type=r[5], target_id=r[6], ip=r[7],
                       user_agent=r[8], details=r[9]) for r in page]
    cursor = pagination.time_cursor(page[-1][1], page[-1][0], binding=binding) if len(rows) > limit else None
    return json_response(AuditPage(data=data, next_cursor=cursor))
