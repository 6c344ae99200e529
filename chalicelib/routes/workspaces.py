"""Workspaces, their members and invitations."""

from __future__ import annotations

import uuid

from chalice.app import Blueprint, Response

from chalicelib import audit, clock
from chalicelib.accounts import members, users, workspaces
from chalicelib.accounts.models import (
    Accepted,
    InvitationCreate,
    MemberList,
    MemberPatch,
    WorkspaceCreate,
    WorkspaceList,
    WorkspaceOut,
    WorkspacePatch,
)
from chalicelib.auth import links, ratelimit
from chalicelib.auth.principal import account_scope, parse_id, workspace_read, workspace_scope, workspace_tx
from chalicelib.db.tenancy import tenant_tx
from chalicelib.errors import Forbidden, RateLimited
from chalicelib.http import endpoint, json_response
from chalicelib.inputs import if_match, parse_body
from chalicelib.mail import send_email
from chalicelib.settings import get_settings

bp = Blueprint(__name__)
TAGS = ("workspaces",)
WS = "/workspaces/{workspace_id}"


def _with_etag(workspace: WorkspaceOut, status: int = 200, extra: dict[str, str] | None = None) -> Response:
    return json_response(workspace, status, headers={"ETag": workspaces.etag(workspace), **(extra or {})})


@endpoint(bp, "/workspaces", "POST", summary="Create a workspace (you become its owner)",
          request_model=WorkspaceCreate, response_model=WorkspaceOut, status=201, errors_=(401, 403), tags=TAGS)
def create_workspace() -> Response:
    """201 with Location."""
    request = bp.current_request
    body = parse_body(request, WorkspaceCreate)
    with account_scope(request) as (_conn, principal):
        pass  # authenticated (cookie + CSRF) before anything is created
    tenant = uuid.uuid4()
    with tenant_tx(tenant) as conn:
        created = workspaces.create(conn, tenant_id=tenant, name=body.name, actor=principal.actor, now=clock.now())
    return _with_etag(created, 201, {"Location": f"/workspaces/{tenant}"})


@endpoint(bp, "/workspaces", "GET", summary="Your workspaces, with your role", response_model=WorkspaceList,
          errors_=(401,), tags=TAGS)
def list_workspaces() -> Response:
    """Every workspace you are a member of (deleted ones show deleted_at while restorable)."""
    with account_scope(bp.current_request) as (conn, _principal):
        return json_response(WorkspaceList(data=users.my_workspaces(conn)))


@endpoint(bp, WS, "GET", summary="One workspace", response_model=WorkspaceOut, errors_=(401, 404), tags=TAGS)
def get_workspace(workspace_id: str) -> Response:
    """With ETag."""
    with workspace_tx(bp.current_request, workspace_id) as (conn, caller):
        found = workspaces.get_pending(conn, tenant_id=parse_id(workspace_id))
    return _with_etag(found(caller().role))


@endpoint(bp, WS, "PATCH", summary="Rename a workspace or turn Atlas on or off (admin)", request_model=WorkspacePatch,
          response_model=WorkspaceOut, errors_=(401, 403, 404, 412), tags=TAGS)
def patch_workspace(workspace_id: str) -> Response:
    """Honours If-Match."""
    request = bp.current_request
    body = parse_body(request, WorkspacePatch)
    tenant = parse_id(workspace_id)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        current = workspaces.get(conn, tenant_id=tenant, role=principal.role)
        workspaces.check_version(if_match(request), current)
        renamed = workspaces.update(conn, tenant_id=tenant, name=body.name, atlas_enabled=body.atlas_enabled,
                                    actor=principal.actor, now=clock.now(), role=principal.role)
    return _with_etag(renamed)


@endpoint(bp, WS, "DELETE", summary="Delete a workspace (owner); purged after 7 days",
          response_model=WorkspaceOut, status=202, errors_=(401, 403, 404, 409, 412), tags=TAGS)
def delete_workspace(workspace_id: str) -> Response:
    """Soft delete: restorable until purge_after, then purged by the privacy jobs."""
    request = bp.current_request
    tenant = parse_id(workspace_id)
    with workspace_scope(request, workspace_id, min_role="owner") as (conn, principal):
        workspaces.check_version(if_match(request), workspaces.get(conn, tenant_id=tenant, role=principal.role))
        deleted = workspaces.set_deleted(conn, tenant_id=tenant, deleted=True, actor=principal.actor,
                                         now=clock.now(), role=principal.role)
    return json_response(deleted, 202)


@endpoint(bp, WS + "/restore", "POST", summary="Restore a deleted workspace within the grace period (owner)",
          response_model=WorkspaceOut, errors_=(401, 403, 404, 409), tags=TAGS)
def restore_workspace(workspace_id: str) -> Response:
    """Undo a delete before purge_after."""
    with workspace_scope(bp.current_request, workspace_id, min_role="owner", allow_deleted=True) as (conn, principal):
        restored = workspaces.set_deleted(conn, tenant_id=parse_id(workspace_id), deleted=False,
                                          actor=principal.actor, now=clock.now(), role=principal.role)
    return _with_etag(restored)


@endpoint(bp, WS + "/members", "GET", summary="Members and their roles", response_model=MemberList,
          errors_=(401, 404), tags=TAGS)
def list_members(workspace_id: str) -> Response:
    """Owners first."""
    with workspace_read(bp.current_request, workspace_id) as conn:
        found = members.list_members_pending(conn)
    return json_response(MemberList(data=found()))


@endpoint(bp, WS + "/members/{user_id}", "PATCH", summary="Change a member's role (admin; owner for owners)",
          request_model=MemberPatch, status=204, errors_=(401, 403, 404, 409), tags=TAGS)
def patch_member(workspace_id: str, user_id: str) -> Response:
    """The last owner cannot be demoted."""
    request = bp.current_request
    body = parse_body(request, MemberPatch)
    target = parse_id(user_id)
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        members.set_role(conn, tenant_id=parse_id(workspace_id), user_id=target, role=body.role,
                         actor=principal.actor, actor_role=str(principal.role), now=clock.now())
    return Response(body="", status_code=204)


@endpoint(bp, WS + "/members/{user_id}", "DELETE", summary="Remove a member, or leave (the last owner cannot)",
          status=204, errors_=(401, 403, 404, 409), tags=TAGS)
def delete_member(workspace_id: str, user_id: str) -> Response:
    """Access ends with the next request."""
    target = parse_id(user_id)
    with workspace_scope(bp.current_request, workspace_id) as (conn, principal):
        members.remove(conn, tenant_id=parse_id(workspace_id), user_id=target, actor=principal.actor,
                       actor_role=str(principal.role))
    return Response(body="", status_code=204)


@endpoint(bp, WS + "/invitations", "POST", summary="Invite someone by email (admin)",
          request_model=InvitationCreate, response_model=Accepted, status=202, errors_=(401, 403, 404), tags=TAGS)
def invite(workspace_id: str) -> Response:
    """Emails a sign-in link that adds the membership when used."""
    request = bp.current_request
    body = parse_body(request, InvitationCreate)
    tenant, settings, now = parse_id(workspace_id), get_settings(), clock.now()
    with workspace_scope(request, workspace_id, min_role="admin") as (conn, principal):
        if body.role == "owner" and principal.role != "owner":
            raise Forbidden("only an owner can invite an owner")
        # Invitations send email: limited per workspace and per invited address.
        for kind, subject, limit in (("invite-workspace", str(tenant), settings.magic_link_limit_per_ip),
                                     ("invite-email", body.email, settings.magic_link_limit_per_email)):
            verdict = ratelimit.hit(conn, kind=kind, subject=subject, limit=limit, now=now)
            if not verdict.allowed:
                raise RateLimited("too many invitations", retry_after=verdict.retry_after_s)
        name = workspaces.get(conn, tenant_id=tenant, role=principal.role).name
        issued = links.issue(conn, purpose="invitation", email=body.email, now=now, settings=settings,
                             workspace_id=tenant, role=body.role)
        audit.record(conn, tenant_id=tenant, action="invitation.sent", actor=principal.actor,
                     details={"role": body.role})
    subject, text = links.compose(settings, issued, workspace_name=name)
    send_email(to=issued.email, subject=subject, text=text, settings=settings)
    return json_response(Accepted(status="sent"), 202)
