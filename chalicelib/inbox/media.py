"""WhatsApp media: look the media id up at the Graph API, fetch the short-lived URL, store the bytes.

Only Meta's media hosts are fetched (plus hosts explicitly allowed for local fakes), over the SSRF-safe
client: no private addresses, no redirects, a size cap, and the SHA-256 Meta announces must match.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from psycopg import Connection
from psycopg.rows import TupleRow

from chalicelib.blobs import get_blobs
from chalicelib.inbox.channels import ChannelSecrets
from chalicelib.outbound import OutboundRefused, request
from chalicelib.settings import get_settings

Conn = Connection[TupleRow]
MEDIA_HOSTS = (".fbcdn.net", ".fbsbx.com", ".whatsapp.net", ".facebook.com")


def _digest_matches(data: bytes, announced: str | None) -> bool:
    if not announced:
        return True
    digest = hashlib.sha256(data).digest()
    return announced.lower() == digest.hex() or announced == base64.b64encode(digest).decode()


def fetch_and_store(conn: Conn, *, tenant: uuid.UUID, message_id: uuid.UUID, secrets: ChannelSecrets,
                    media: dict[str, Any]) -> uuid.UUID:
    """Download one media object into the blob store and record it as an attachment of the message."""
    settings = get_settings()
    allow = frozenset(settings.outbound_allow_hosts)
    assert secrets.access_token is not None
    bearer = {"Authorization": f"Bearer {secrets.access_token.get_secret_value()}"}
    lookup = request("GET", f"{settings.graph_base_url}/{media['id']}", headers=bearer, allow=allow, max_bytes=65536)
    if lookup.status != 200:
        raise OutboundRefused(f"media lookup answered {lookup.status}")
    info = json.loads(lookup.body)
    url = str(info.get("url", ""))
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host.endswith(MEDIA_HOSTS) and f"{host}:{parts.port}" not in allow:
        raise OutboundRefused("media is not on a Meta host")
    # The bearer token goes to the Meta host only; request() never follows a redirect elsewhere.
    download = request("GET", url, headers=bearer, allow=allow, max_bytes=settings.max_media_bytes)
    if download.status != 200:
        raise OutboundRefused(f"media download answered {download.status}")
    if not _digest_matches(download.body, info.get("sha256") or media.get("sha256")):
        raise OutboundRefused("media checksum mismatch")
    attachment = uuid.uuid4()
    key = f"tenants/{tenant}/attachments/{message_id}/{attachment}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "media"
        path.write_bytes(download.body)
        get_blobs().put_file(key, path)
    conn.execute("INSERT INTO attachments (tenant_id, id, message_id, filename, content_type, size_bytes, sha256,"
                 " blob_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                 (tenant, attachment, message_id, media.get("filename"),
                  str(info.get("mime_type") or media.get("mime_type") or "application/octet-stream"),
                  len(download.body), hashlib.sha256(download.body).hexdigest(), key))
    return attachment
