"""The delivery log of an endpoint (every attempt), replays and test pings."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from chalicelib import audit, errors
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.outgoing import signing

Q = queries.load(__package__)


class AttemptOut(BaseModel):
    """One attempt: never the request's headers; at most the first 1 KB of the response."""

    id: uuid.UUID
    delivery_id: uuid.UUID = Field(description="Replay it with POST …/deliveries/{delivery_id}/replay")
    webhook_id: str = Field(description="The webhook-id header: the same on every attempt and replay")
    event_type: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    error_class: str | None = Field(description="Why no answer came (refused, a timeout class, …); null if one did")
    response_excerpt: str | None
    delivery_status: str = Field(description="pending, succeeded or failed")


class AttemptPage(BaseModel):
    """One page of attempts, newest first."""

    data: list[AttemptOut]
    next_cursor: str | None


class Queued(BaseModel):
    """A delivery queued for an attempt now."""

    delivery_id: uuid.UUID
    webhook_id: str


def attempts_pending(conn: Conn, endpoint_id: uuid.UUID, *, limit: int,
                     before: tuple[datetime, str] | None) -> Callable[[], list[AttemptOut]]:
    """Queue one page (`limit` + 1 rows, to tell whether another follows); the result gives the attempts."""
    params: dict[str, Any] = {"endpoint": endpoint_id, "limit": limit + 1}
    if before is None:
        cursor = conn.execute(Q["attempts_first"], params)
    else:
        cursor = conn.execute(Q["attempts_before"], {**params, "at": before[0], "id": before[1]})
    return lambda: [AttemptOut(id=r[0], delivery_id=r[1], webhook_id=signing.webhook_id(r[2]), event_type=r[3],
                               attempt=r[4], attempted_at=r[5], status_code=r[6], duration_ms=r[7], error_class=r[8],
                               response_excerpt=r[9], delivery_status=r[10]) for r in cursor.fetchall()]


def replay(conn: Conn, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID,
           actor: audit.Actor, now: datetime) -> Queued:
    """Send a delivery of this endpoint again, now, with its webhook-id; audited."""
    row = conn.execute(Q["delivery_replay"], (now, now, delivery_id, endpoint_id)).fetchone()
    if row is None:
        raise errors.NotFound("no such delivery")
    audit.record(conn, tenant_id=tenant_id, action="webhook_delivery.replayed", actor=actor,
                 target_type="webhook_delivery", target_id=delivery_id)
    return Queued(delivery_id=row[0], webhook_id=signing.webhook_id(row[1]))


def ping(conn: Conn, *, endpoint_id: uuid.UUID, now: datetime) -> Queued:
    """Queue a `ping` event for one endpoint (404 when it is not this workspace's)."""
    row = conn.execute(Q["endpoint_ping"], {"endpoint": endpoint_id, "now": now}).fetchone()
    if row is None:
        raise errors.NotFound("no such webhook endpoint")
    return Queued(delivery_id=row[1], webhook_id=signing.webhook_id(row[0]))
