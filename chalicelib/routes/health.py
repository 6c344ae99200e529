"""Liveness, readiness and the API description."""

from __future__ import annotations

import json
from typing import Literal

from chalice.app import Blueprint, Chalice, Response
from pydantic import BaseModel

from chalicelib.db import deadline
from chalicelib.db.pool import DatabaseNotConfigured, get_database
from chalicelib.errors import DatabaseUnavailable
from chalicelib.http import endpoint, json_response
from chalicelib.settings import Settings, get_settings

bp = Blueprint(__name__)
# The whole answer, checkout and query included: a load balancer or an operator asking "is it up?"
# must hear "no" quickly, never wait with the requests that are stuck.
READY_TIMEOUT_S = 2.0


class Health(BaseModel):
    """Process liveness."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Database reachability."""

    status: Literal["ready"]


@endpoint(bp, "/health", "GET", summary="Liveness (no database)", response_model=Health, tags=("meta",))
def health() -> Response:
    """The process is up; touches nothing else."""
    return json_response(Health(status="ok"))


@endpoint(bp, "/health/ready", "GET", summary="Readiness: one database round trip",
          response_model=Readiness, tags=("meta",), errors_=(503,))
def ready() -> Response:
    """The database answers a query through the app role's pool, within READY_TIMEOUT_S in all."""
    try:
        database = get_database("app")
    except DatabaseNotConfigured:
        raise DatabaseUnavailable("not-configured") from None
    with deadline.budget(READY_TIMEOUT_S):
        database.ping()
    return json_response(Readiness(status="ready"))


@endpoint(bp, "/openapi.json", "GET", summary="This API's OpenAPI 3.1 document", tags=("meta",))
def openapi() -> Response:
    """Generated from the route table and the pydantic models."""
    return Response(body=_openapi_body(bp.current_app, get_settings()),
                    headers={"Content-Type": "application/json", "Cache-Control": "public, max-age=300"})


_built: dict[int, tuple[Chalice, Settings, str]] = {}


def _openapi_body(app: Chalice, settings: Settings) -> str:
    """The document, built once per app and settings (both fixed for a process; /docs fetches it per load)."""
    cached = _built.get(id(app))
    if cached is None or cached[0] is not app or cached[1] is not settings:
        from chalicelib.openapi import build_openapi

        cached = _built[id(app)] = (app, settings, json.dumps(build_openapi(app, settings=settings)))
    return cached[2]
