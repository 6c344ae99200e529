"""Stored files of the inbox (email and WhatsApp attachments, call recordings) and their download links."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel

from chalicelib.blobs import BlobStore
from chalicelib.crm.store import Row
from chalicelib.db import queries
from chalicelib.db.types import Conn

Q = queries.load(__package__)


class DownloadOut(BaseModel):
    """Where to fetch a file until `expires_at` (no other credentials needed), and what the file is."""

    url: str
    expires_at: datetime
    sha256: str
    size: int
    content_type: str
    filename: str | None


def stored_pending(conn: Conn, *, attachment_id: uuid.UUID) -> Callable[[], Row | None]:
    """Queue the read of one attachment's file (name, type, size, digest, blob key); call the result for it."""
    cursor = conn.execute(Q["attachment_file"], (attachment_id,))
    return cursor.fetchone


def download(blobs: BlobStore, *, tenant_id: uuid.UUID, stored: Row) -> DownloadOut:
    """A short-lived link to a stored file (call only once the caller's authorization has arrived)."""
    filename, content_type, size, sha256, key = stored
    link = blobs.download_url(str(key), tenant_id=tenant_id, filename=filename, content_type=str(content_type))
    return DownloadOut(url=link.url, expires_at=link.expires_at, sha256=str(sha256), size=int(size),
                       content_type=str(content_type), filename=filename)
