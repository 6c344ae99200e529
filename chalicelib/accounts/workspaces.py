"""Workspaces: created by a signed-in user (its first owner), renamed, soft-deleted, restored."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from chalicelib import audit, errors, versions
from chalicelib.accounts.models import WorkspaceOut
from chalicelib.crm import pipelines
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.settings import get_settings

Q = queries.load(__package__)


def purge_grace() -> timedelta:
    """How long a deleted workspace stays restorable before the purge job deletes it (< 7 days, by policy)."""
    return timedelta(days=get_settings().workspace_purge_grace_days)


def _out(row: tuple[object, ...] | None, role: str | None) -> WorkspaceOut:
    if row is None:
        raise errors.NotFound("not found")
    deleted = row[4]
    purge = deleted + purge_grace() if isinstance(deleted, datetime) else None
    return WorkspaceOut(id=row[0], name=row[1], role=role, created_at=row[2],
                        updated_at=row[3], deleted_at=deleted, purge_after=purge, atlas_enabled=row[5])


def etag(workspace: WorkspaceOut) -> str:
    """A strong validator that changes whenever the workspace does."""
    return versions.etag(workspace.id, workspace.updated_at)


def check_version(expected: frozenset[str] | None, current: WorkspaceOut) -> None:
    """PreconditionFailed unless the workspace's ETag is among the `expected` ones (None: any version)."""
    versions.check(expected, etag(current), "workspace")


def create(conn: Conn, *, tenant_id: uuid.UUID, name: str, actor: audit.Actor,
           now: datetime) -> WorkspaceOut:
    """Create the workspace of this tenant transaction with the actor as its owner."""
    row = conn.execute(Q["workspace_create"], (tenant_id, name, actor.user_id, now, now)).fetchone()
    conn.execute(Q["workspace_first_owner"], (tenant_id, actor.user_id, now, now))
    pipelines.create_default(conn, tenant_id=tenant_id, now=now)
    audit.record(conn, tenant_id=tenant_id, action="workspace.created", actor=actor,
                 target_type="workspace", target_id=tenant_id)
    return _out(row, "owner")


def get_pending(conn: Conn, *, tenant_id: uuid.UUID) -> Callable[[str | None], WorkspaceOut]:
    """Queue the read of the workspace of this tenant transaction; call the result with the caller's role."""
    cursor = conn.execute(Q["workspace_get"], (tenant_id,))
    return lambda role: _out(cursor.fetchone(), role)


def get(conn: Conn, *, tenant_id: uuid.UUID, role: str | None) -> WorkspaceOut:
    """The workspace of this tenant transaction."""
    return get_pending(conn, tenant_id=tenant_id)(role)


def update(conn: Conn, *, tenant_id: uuid.UUID, name: str | None, atlas_enabled: bool | None,
           actor: audit.Actor, now: datetime, role: str | None) -> WorkspaceOut:
    """Rename the workspace and/or turn Atlas on or off (audited with what changed)."""
    row = conn.execute(Q["workspace_update"], (name, atlas_enabled, now, tenant_id)).fetchone()
    details: dict[str, object] = {"fields": sorted(k for k, v in (("name", name), ("atlas_enabled", atlas_enabled))
                                                   if v is not None)}
    if atlas_enabled is not None:
        details["atlas_enabled"] = atlas_enabled
    audit.record(conn, tenant_id=tenant_id, action="workspace.updated", actor=actor, target_type="workspace",
                 target_id=tenant_id, details=details)
    return _out(row, role)


def set_deleted(conn: Conn, *, tenant_id: uuid.UUID, deleted: bool, actor: audit.Actor,
                now: datetime, role: str | None) -> WorkspaceOut:
    """Soft-delete (purged by the jobs after the grace period) or restore within it."""
    if deleted:
        row = conn.execute(Q["workspace_soft_delete"], (now, now, tenant_id)).fetchone()
    else:
        row = conn.execute(Q["workspace_undelete"], (now, tenant_id, now - purge_grace())).fetchone()
    if row is None:
        raise errors.Conflict("the workspace is not deleted" if not deleted else "already deleted")
    audit.record(conn, tenant_id=tenant_id, action="workspace.deleted" if deleted else "workspace.restored",
                 actor=actor, target_type="workspace", target_id=tenant_id)
    return _out(row, role)
