"""GET /docs: a human page for /openapi.json, and the pinned files it loads from this API."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib import errors
from chalicelib.http import endpoint
from chalicelib.web import docs

bp = Blueprint(__name__)
TAGS = ("meta",)


def _answer(asset: docs.Asset, headers: dict[str, str]) -> Response:
    """The asset, or 304 when the client's If-None-Match names its current ETag."""
    request = bp.current_request
    wanted = str(request.headers.get("if-none-match") or "") if request is not None else ""
    if asset.etag in (tag.strip().removeprefix("W/") for tag in wanted.split(",")):
        # The same headers as the 200 (its Content-Type too): a cache may update its stored copy from them.
        return Response(body="", status_code=304, headers=dict(headers))
    return Response(body=asset.body, status_code=200, headers=dict(headers))


@endpoint(bp, "/docs", "GET", summary="This API's documentation as a page (Swagger UI)", tags=TAGS)
def docs_page() -> Response:
    """HTML that loads only files served by this API, under a strict Content-Security-Policy."""
    page = docs.docs_page()
    return _answer(page, docs.page_headers(page))


@endpoint(bp, "/docs/{asset}", "GET", summary="A script or stylesheet of the documentation page",
          errors_=(404,), tags=TAGS,
          description="Named with a hash of its content and cached for a year; an outdated name is a 404.")
def docs_asset(asset: str) -> Response:
    """A file of the page under its hashed name (the names come from GET /docs)."""
    found = docs.asset(asset)
    if found is None:
        raise errors.NotFound("no such file")
    return _answer(found, found.headers())
