"""Audit trail: workspace events (audit_log, under RLS) and sign-in events (account_audit_log).

Entries carry who, what, when, from where; never tokens, secrets or message content. `details` is
passed through logsafe.scrub as a last line of defence.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.logsafe import scrub

Q = queries.load(__package__)


@dataclass(frozen=True)
class Actor:
    """Who did it and from where (any part may be unknown)."""

    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    ip: str | None = None
    user_agent: str | None = None


SYSTEM = Actor()


def clean_ip(value: str | None) -> str | None:
    """A valid IP address or None (never an arbitrary header value in an inet column)."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _agent(value: str | None) -> str | None:
    return value[:512] if value else None


def record(conn: Conn, *, tenant_id: uuid.UUID, action: str, actor: Actor = SYSTEM,
           target_type: str | None = None, target_id: uuid.UUID | None = None,
           details: dict[str, Any] | None = None) -> None:
    """Append one workspace event inside the caller's tenant transaction."""
    conn.execute(
        Q["audit_record"],
        (tenant_id, actor.user_id, actor.api_key_id, action, target_type, target_id, clean_ip(actor.ip),
         _agent(actor.user_agent), Jsonb(scrub(details or {}))),
    )


def record_account(conn: Conn, *, action: str, actor: Actor = SYSTEM,
                   user_id: uuid.UUID | None = None, subject_hash: bytes | None = None,
                   details: dict[str, Any] | None = None) -> None:
    """Append one sign-in/account event (no workspace involved)."""
    conn.execute(
        Q["account_audit_record"],
        (user_id or actor.user_id, subject_hash, action, clean_ip(actor.ip), _agent(actor.user_agent),
         Jsonb(scrub(details or {}))),
    )


def entries_pending(conn: Conn, *, limit: int, before: tuple[datetime, str] | None = None
                    ) -> Callable[[], list[tuple[Any, ...]]]:
    """Queue one page of the workspace's audit entries, newest first (`limit` + 1 rows, to tell whether
    another page follows), strictly before the (occurred_at, id) of `before`; the result is read later,
    so the read travels with the authorization."""
    if before is None:
        return conn.execute(Q["audit_entries_first"], {"limit": limit + 1}).fetchall
    return conn.execute(Q["audit_entries_before"], {"limit": limit + 1, "at": before[0], "id": before[1]}).fetchall
