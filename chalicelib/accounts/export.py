"""The signed-in operator's own data as one JSON document (GET /auth/me/export): the controller data we hold.

Everything is read in the caller's transaction as the user bound to it (bind_user), so the statements
name no user id of their own: without a verified session there is no bound user and no row comes back.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chalicelib import audit, errors
from chalicelib.accounts.models import (
    AccountExport,
    ExportedAccount,
    ExportedAccountEvent,
    ExportedMembership,
    ExportedSession,
)
from chalicelib.audit import Actor
from chalicelib.db import queries
from chalicelib.db.types import Conn

Q = queries.load(__package__)
EXPORTED = "account.exported"


def export(conn: Conn, *, actor: Actor, session_id: uuid.UUID, now: datetime) -> AccountExport:
    """Account, memberships, sessions (no secrets) and account audit entries of the bound user; audited."""
    # The four reads are queued together (one round trip) and ahead of the audit entry, so the file shows
    # the account as it was when asked for, and the entry records that an export happened, not its content.
    pending = [conn.execute(query).fetchall for query in
               (Q["export_account"], Q["export_memberships"], Q["export_sessions"], Q["export_account_events"])]
    audit.record_account(conn, action=EXPORTED, actor=actor)
    accounts, memberships, sessions, events = (read() for read in pending)
    if not accounts:
        raise errors.NotFound("no such user")
    (user,) = accounts
    return AccountExport(
        exported_at=now,
        account=ExportedAccount(id=user[0], email=user[1], display_name=user[2], created_at=user[3],
                                updated_at=user[4]),
        memberships=[ExportedMembership(workspace_id=r[0], workspace_name=r[1], role=r[2], since=r[3],
                                        workspace_deleted_at=r[4]) for r in memberships],
        sessions=[ExportedSession(id=r[0], created_at=r[1], last_seen_at=r[2], expires_at=r[3], revoked_at=r[4],
                                  ip=r[5], user_agent=r[6], current=r[0] == session_id) for r in sessions],
        account_audit_log=[ExportedAccountEvent(id=r[0], occurred_at=r[1], action=r[2], ip=r[3], user_agent=r[4],
                                                details=r[5]) for r in events],
    )


def filename(now: datetime) -> str:
    """The download's file name: the time only (no address or id in a header that proxies may log)."""
    return f"account-export-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
