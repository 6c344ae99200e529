"""GET /legal/sub-processors (HTML) and /legal/sub-processors.json: the parties that receive data."""

from __future__ import annotations

import functools

from chalice.app import Blueprint, Response

from chalicelib import legal
from chalicelib.http import endpoint, json_response
from chalicelib.web import legal as page

bp = Blueprint(__name__)
TAGS = ("legal",)


@endpoint(bp, "/legal/sub-processors", "GET", summary="The sub-processors, as a page", tags=TAGS,
          description="Public. HTML for people; the same list is at /legal/sub-processors.json.")
def sub_processors_page() -> Response:
    """Every party that receives data: purpose, data categories, region, hosts (a page without script)."""
    return Response(body=_page(legal.aws_region()), status_code=200, headers=page.page_headers())


@endpoint(bp, "/legal/sub-processors.json", "GET", summary="The sub-processors, as JSON", tags=TAGS,
          response_model=legal.SubProcessors, description="Public. The same list as /legal/sub-processors.")
def sub_processors_json() -> Response:
    """The registry of chalicelib.legal, AWS's region filled in from this deployment."""
    return json_response(legal.published(), headers=page.CACHE)


@functools.cache
def _page(region: str | None) -> str:
    # Rendered once per region (the list is a constant of the deployment), not on every request.
    return page.render(legal.published())
