"""Memberships of a workspace: roles owner/admin/member; a workspace always keeps an owner.

Joining and leaving emit member.added / member.removed (data: user_id and role) in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from chalicelib import audit, errors
from chalicelib.accounts.models import MemberOut
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.outgoing import events

Q = queries.load(__package__)


def list_members_pending(conn: Conn) -> Callable[[], list[MemberOut]]:
    """Queue the read of the current workspace's members, owners first; call the result for them."""
    cursor = conn.execute(Q["members_list"])

    def members() -> list[MemberOut]:
        return [MemberOut(user_id=r[0], email=r[1], display_name=r[2], role=r[3], created_at=r[4])
                for r in cursor.fetchall()]
    return members


def _lock_owners(conn: Conn) -> set[uuid.UUID]:
    # Locking every owner row serialises concurrent demotions/removals, so two owners cannot each
    # remove the other and leave the workspace ownerless (write skew).
    rows = conn.execute(Q["owners_lock"]).fetchall()
    return {r[0] for r in rows}


def _current_role(conn: Conn, user_id: uuid.UUID) -> str:
    row = conn.execute(Q["member_role_lock"], (user_id,)).fetchone()
    if row is None:
        raise errors.NotFound("no such member")
    return str(row[0])


def set_role(conn: Conn, *, tenant_id: uuid.UUID, user_id: uuid.UUID, role: str,
             actor: audit.Actor, actor_role: str, now: datetime) -> None:
    """Change a member's role; only owners grant or take away ownership."""
    owners = _lock_owners(conn)
    current = _current_role(conn, user_id)
    if "owner" in (role, current) and actor_role != "owner":
        raise errors.Forbidden("only an owner can grant or take away ownership")
    if current == "owner" and role != "owner" and owners == {user_id}:
        raise errors.Conflict("a workspace needs at least one owner")
    conn.execute(Q["member_set_role"], (role, now, user_id)).fetchall()
    audit.record(conn, tenant_id=tenant_id, action="member.role_changed", actor=actor, target_type="user",
                 target_id=user_id, details={"from": current, "to": role})


def remove(conn: Conn, *, tenant_id: uuid.UUID, user_id: uuid.UUID, actor: audit.Actor,
           actor_role: str) -> None:
    """Remove a member (or leave); the last owner cannot go."""
    owners = _lock_owners(conn)
    current = _current_role(conn, user_id)
    leaving = user_id == actor.user_id
    if not leaving and actor_role not in ("owner", "admin"):
        raise errors.Forbidden("this needs the admin role")
    if current == "owner" and not leaving and actor_role != "owner":
        raise errors.Forbidden("only an owner can remove an owner")
    if current == "owner" and owners == {user_id}:
        raise errors.Conflict("a workspace needs at least one owner")
    conn.execute(Q["member_remove"], (user_id,)).fetchall()
    audit.record(conn, tenant_id=tenant_id, action="member.removed", actor=actor, target_type="user",
                 target_id=user_id)
    _emit(conn, tenant_id, "member.removed", user_id, current)


def add(conn: Conn, *, tenant_id: uuid.UUID, user_id: uuid.UUID, role: str,
        actor: audit.Actor, now: datetime) -> None:
    """Add a member from an accepted invitation (an existing membership keeps its role)."""
    added = conn.execute(Q["member_add"], (tenant_id, user_id, role, now, now)).fetchall()
    if added:
        audit.record(conn, tenant_id=tenant_id, action="member.added", actor=actor, target_type="user",
                     target_id=user_id, details={"role": role})
        _emit(conn, tenant_id, "member.added", user_id, role)


def _emit(conn: Conn, tenant_id: uuid.UUID, event_type: str, user_id: uuid.UUID, role: str) -> None:
    # The user's id and role only: the member's email and name are account data, never an event's.
    events.emit(conn, tenant_id=tenant_id, event_type=event_type, data={"user_id": str(user_id), "role": role})
