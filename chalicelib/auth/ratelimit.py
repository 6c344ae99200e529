"""Fixed-window rate limits kept in Postgres (no extra server), keyed by an HMAC of the subject."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from chalicelib.auth.crypto import keyed_hash
from chalicelib.db import queries
from chalicelib.db.types import Conn

Q = queries.load(__package__)
WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class Verdict:
    """Whether this hit is within the limit, and how long until the window resets."""

    allowed: bool
    retry_after_s: int


def hit(conn: Conn, *, kind: str, subject: str, limit: int, now: datetime,
        window: timedelta = WINDOW) -> Verdict:
    """Count one hit for (kind, subject) in the current window and judge it against `limit`."""
    # The bucket is keyed, so the table holds no addresses or IPs, only unlinkable digests.
    bucket = keyed_hash("rate-limit", f"{kind}:{subject}")
    seconds = int(window.total_seconds())
    start = datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, tz=now.tzinfo)
    row = conn.execute(Q["rate_limit_hit"], (bucket, start)).fetchone()
    hits = int(row[0]) if row else 1
    retry = max(1, int((start + window - now).total_seconds()))
    return Verdict(allowed=hits <= limit, retry_after_s=retry)
