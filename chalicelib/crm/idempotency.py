"""Idempotency-Key on POST: the same key and body replay the first answer; another body is a 409.

The store only: claiming a key, the stored answer, remembering it. Turning it into an HTTP response (and
the replay header) is the HTTP edge's job (chalicelib.http.idempotent).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from chalicelib import errors
from chalicelib.db import queries
from chalicelib.db.types import Conn

MAX_KEY_LENGTH = 200
Q = queries.load(__package__)


@dataclass(frozen=True)
class Stored:
    """The first answer to a key: its status, JSON body text and the Location and ETag it carried."""

    status: int
    body: str
    location: str | None = None
    etag: str | None = None


def claim(conn: Conn, *, tenant_id: uuid.UUID, key: str, route: str, body: bytes) -> Stored | None:
    """Claim (workspace, key, route) for this request: None when it is ours to do (then remember() its
    answer), the stored answer when a request with the same key and body came first, 409 for another body.

    The key row is claimed in the same transaction as the work: if the work fails, the claim rolls
    back with it; a concurrent request with the same key waits on the claim and then replays.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise errors.BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    digest = hashlib.sha256(body).digest()
    claimed = conn.execute(Q["idempotency_key_claim"], (tenant_id, key, route, digest)).fetchall()
    if claimed:
        return None
    row = conn.execute(Q["idempotency_key_stored"], (key, route)).fetchone()
    if row is None or bytes(row[0]) != digest:
        raise errors.Conflict("this Idempotency-Key was used with a different request")
    return Stored(status=int(row[1] or 200), body=str(row[2] or ""), location=str(row[3]) if row[3] else None,
                  etag=str(row[4]) if row[4] else None)


def remember(conn: Conn, *, key: str, route: str, answer: Stored) -> None:
    """Store the answer of a claimed key (replayed to later requests with the same key and body)."""
    conn.execute(Q["idempotency_key_remember"],
                 (answer.status, answer.body, answer.location, answer.etag, key, route)).fetchall()
