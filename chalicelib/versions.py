"""Strong ETags of one record version (its id and updated_at) and the If-Match check."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from chalicelib import errors


def etag(record_id: uuid.UUID | str, updated_at: datetime) -> str:
    """A strong validator of one version of a record."""
    # In UTC: the same instant gives the same ETag whatever time zone the database session answered in.
    instant = updated_at.astimezone(UTC) if updated_at.tzinfo is not None else updated_at
    digest = hashlib.sha256(f"{record_id}:{instant.isoformat()}".encode()).hexdigest()[:20]
    return f'"{digest}"'


def check(expected: frozenset[str] | None, current: str, what: str = "record") -> None:
    """PreconditionFailed unless `current` is among the If-Match ETags (None: any version)."""
    if expected is not None and current not in expected:
        raise errors.PreconditionFailed(f"the {what} changed since you read it")
