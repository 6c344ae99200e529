"""What the webhook side records besides events: refusals counted per day, one-time tokens seen, the routes of
webhook URLs to their workspaces, and the check that a URL's workspace is live.

A refused delivery leaves only a counter (day, provider, reason): nothing of its body is stored.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import UTC, datetime

from chalicelib.db import queries
from chalicelib.db.tenancy import user_tx
from chalicelib.db.types import Conn
from chalicelib.inbox.refusals import UnknownSource
from chalicelib.observability import log_event

log = logging.getLogger("crm.inbox")
Q = queries.load(__package__)


def count_rejection(provider: str, reason: str) -> None:
    """Count a refused delivery (its own transaction: the request itself is refused)."""
    with user_tx() as conn:
        conn.execute(Q["webhook_rejection_count"], (datetime.now(UTC).date(), provider, reason))
    log_event(log, "webhook rejected", provider=provider, reason=reason)


def first_use(conn: Conn, provider: str, token: str) -> bool:
    """Record a delivery's one-time token; False when it was seen before (a replay). Only its hash is kept."""
    row = conn.execute(Q["webhook_replay_token_first_use"],
                       (provider, hashlib.sha256(token.encode()).digest())).fetchone()
    return bool(row and row[0])


def route(conn: Conn, url_id: uuid.UUID, tenant_id: uuid.UUID) -> None:
    """Route a webhook URL's id (a channel's, a sent proposal's SignNow hook) to its workspace."""
    conn.execute(Q["webhook_route_insert"], (url_id, tenant_id))


def require_live_workspace(conn: Conn, tenant_id: uuid.UUID) -> None:
    """UnknownSource unless the workspace a webhook URL names exists and is not deleted."""
    workspace = conn.execute(Q["workspace_deleted_at"], (tenant_id,)).fetchone()
    if workspace is None or workspace[0] is not None:
        raise UnknownSource(reason="unknown_workspace")
