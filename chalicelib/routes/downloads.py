"""GET /downloads: the local blob store's signed, expiring download links (S3 presigned GETs in prod).

No session: the link itself is the grant, issued only to a member of the workspace by a route that
checked the membership first (e.g. GET /workspaces/{id}/attachments/{id}). It names one blob of one
workspace, expires within minutes, and is an HMAC under the app secret, so it cannot be altered or
re-signed for another workspace's file.
"""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib import errors
from chalicelib.blobs import LinkRefused, attachment_disposition, get_blobs, open_link
from chalicelib.http import endpoint
from chalicelib.inputs import query_params
from chalicelib.settings import get_settings

bp = Blueprint(__name__)
TOKEN_PARAMETER = {"name": "token", "in": "query", "required": True, "schema": {"type": "string"},
                   "description": "The signed grant from a download link's `url` (expires within minutes)."}
# Whatever the file holds (HTML, SVG, a script), it is never rendered, sniffed or run from this origin.
DOWNLOAD_HEADERS = {
    "Content-Type": "application/octet-stream",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
}


@endpoint(bp, "/downloads", "GET", summary="The file behind a signed download link (local blob store only)",
          description="Always a download (`Content-Disposition: attachment`, `application/octet-stream`); send an "
                      "`Accept` header that admits it (browsers and curl send `*/*`). An altered or expired link "
                      "is a 403. In production links are S3 presigned GETs and this route answers 404.",
          errors_=(403, 404), tags=("downloads",), parameters=(TOKEN_PARAMETER,))
def download() -> Response:
    """Verify the link (HMAC, expiry, workspace prefix), then send the blob's bytes as a download."""
    settings = get_settings()
    # Only the local store signs these links. With S3 the presigned URL is the download: this route must
    # not become a way to stream bucket objects through the Lambda (and its 6 MB response limit).
    if settings.blob_backend != "local":
        raise errors.NotFound("not found")
    try:
        grant = open_link(query_params(bp.current_request).get("token", ""), settings=settings)
    except LinkRefused:
        # One answer for altered, expired and out-of-bounds links: which check failed is no one's business.
        raise errors.Forbidden("the download link is invalid or has expired") from None
    try:
        with get_blobs(settings).open(grant.key) as handle:
            data = handle.read()
    except FileNotFoundError:
        raise errors.NotFound("the file no longer exists") from None
    return Response(body=data, status_code=200,
                    headers={**DOWNLOAD_HEADERS, "Content-Disposition": attachment_disposition(grant.filename)})
