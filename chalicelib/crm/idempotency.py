"""Idempotency-Key on POST: the same key and body replay the first response; another body is a 409."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

from chalice.app import Response
from psycopg import Connection
from psycopg.rows import TupleRow

from chalicelib import errors

MAX_KEY_LENGTH = 200


def run(conn: Connection[TupleRow], *, tenant_id: uuid.UUID, key: str | None, route: str, body: bytes,
        produce: Callable[[], Response]) -> Response:
    """Call `produce` once per (workspace, key, route); replay its stored response afterwards.

    The key row is claimed in the same transaction as the work: if the work fails, the claim rolls
    back with it; a concurrent request with the same key waits on the claim and then replays.
    """
    if key is None:
        return produce()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise errors.BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    digest = hashlib.sha256(body).digest()
    claimed = conn.execute(
        "INSERT INTO idempotency_keys (tenant_id, key, route, request_hash) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING 1", (tenant_id, key, route, digest)).fetchall()
    if not claimed:
        row = conn.execute("SELECT request_hash, status, response_body, location, etag FROM idempotency_keys"
                           " WHERE key = %s AND route = %s", (key, route)).fetchone()
        if row is None or bytes(row[0]) != digest:
            raise errors.Conflict("this Idempotency-Key was used with a different request")
        headers: dict[str, str | list[str]] = {"Content-Type": "application/json", "Idempotent-Replayed": "true"}
        for name, value in (("Location", row[3]), ("ETag", row[4])):
            if value:
                headers[name] = str(value)
        return Response(body=str(row[2] or ""), status_code=int(row[1] or 200), headers=headers)
    response = produce()
    body_text = response.body if isinstance(response.body, str) else ""
    location, etag = (value if isinstance(value, str) else None
                      for value in (response.headers.get("Location"), response.headers.get("ETag")))
    conn.execute("UPDATE idempotency_keys SET status = %s, response_body = %s, location = %s, etag = %s"
                 " WHERE key = %s AND route = %s RETURNING 1",
                 (response.status_code, body_text, location, etag, key, route)).fetchall()
    return response
