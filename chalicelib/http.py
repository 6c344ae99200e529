"""HTTP plumbing shared by every route: problem+json responses, idempotent replay, the endpoint registry.

What a request brings in (bodies, query parameters, If-Match) is read by chalicelib.inputs.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalice.app import Blueprint, Request, Response
from pydantic import BaseModel
from pydantic_core import to_json

from chalicelib import errors
from chalicelib.crm import idempotency
from chalicelib.db.faults import unavailable_kind
from chalicelib.db.types import Conn
from chalicelib.inbox import refusals
from chalicelib.inputs import raw_body
from chalicelib.observability import capture_exception

log = logging.getLogger("crm.http")

PROBLEM_JSON = "application/problem+json"
JSON_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9-]{8,64}$")
# Seconds a client should wait before retrying when the database is unavailable.
DB_RETRY_AFTER_S = 5


def request_id_of(request: Request | None) -> str:
    """The request id of this request (set by the request middleware)."""
    if request is None:
        return "unknown"
    return str(request.context.get("crm_request_id", "unknown"))


def assign_request_id(request: Request) -> str:
    """Give the request an id: API Gateway's when it has a safe shape, else a new UUID."""
    candidate = request.context.get("requestId")
    # Only a strict shape is accepted, because the id is echoed in headers and logs.
    rid = candidate if isinstance(candidate, str) and _REQUEST_ID_OK.match(candidate) else str(uuid.uuid4())
    request.context["crm_request_id"] = rid
    return rid


def problem_response(error: errors.AppError, request_id: str) -> Response:
    """An RFC 9457 problem+json response for a domain error."""
    body: dict[str, Any] = {
        "type": f"/problems/{error.slug}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "request_id": request_id,
    }
    if error.errors:
        body["errors"] = [{"field": e.field, "message": e.message, "code": e.code} for e in error.errors]
    headers: dict[str, str | list[str]] = {"Content-Type": PROBLEM_JSON, "Cache-Control": "no-store",
                                           **error.headers}
    return Response(body=json.dumps(body), status_code=error.status, headers=headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response of a model or plain values, serialized by pydantic-core in one pass.

    Models and plain values come out alike: UUIDs as strings, RFC 3339 timestamps, ISO dates.
    """
    return Response(body=to_json(body).decode(), status_code=status,
                    headers={"Content-Type": "application/json", **(headers or {})})


def idempotent(conn: Conn, request: Request, *, tenant_id: uuid.UUID, route: str,
               produce: Callable[[], Response]) -> Response:
    """Honour Idempotency-Key on a POST: call `produce` once per (workspace, key, route) and replay its
    stored answer (marked Idempotent-Replayed) to later requests with the same key and body."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return produce()
    stored = idempotency.claim(conn, tenant_id=tenant_id, key=key, route=route, body=raw_body(request))
    if stored is not None:
        headers: dict[str, str | list[str]] = {"Content-Type": "application/json", "Idempotent-Replayed": "true"}
        for name, value in (("Location", stored.location), ("ETag", stored.etag)):
            if value:
                headers[name] = value
        return Response(body=stored.body, status_code=stored.status, headers=headers)
    response = produce()
    location, etag = (value if isinstance(value, str) else None
                      for value in (response.headers.get("Location"), response.headers.get("ETag")))
    body = response.body if isinstance(response.body, str) else ""
    idempotency.remember(conn, key=key, route=route,
                         answer=idempotency.Stored(response.status_code, body, location, etag))
    return response


@dataclass(frozen=True)
class EndpointDoc:
    """What the OpenAPI document says about one route."""

    path: str
    method: str
    summary: str
    view_name: str
    request_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    status: int = 200
    tags: tuple[str, ...] = ()
    errors: tuple[int, ...] = field(default=())
    # Query parameters (OpenAPI parameter objects), e.g. crm.listing.list_parameters(spec).
    parameters: tuple[Mapping[str, Any], ...] = ()
    description: str | None = None
    idempotent: bool = False  # honours Idempotency-Key
    etag: bool = False  # its success response carries ETag
    body_media: tuple[str, ...] = ()  # a body the view parses itself (e.g. text/csv)
    also: tuple[type[BaseModel], ...] = ()  # other shapes of the success body (oneOf)


ENDPOINTS: dict[tuple[str, str], EndpointDoc] = {}


def endpoint(bp: Blueprint, path: str, method: str, *, summary: str,
             request_model: type[BaseModel] | None = None, response_model: type[BaseModel] | None = None,
             status: int = 200, tags: tuple[str, ...] = (), errors_: tuple[int, ...] = (),
             content_types: tuple[str, ...] | None = None, parameters: Sequence[Mapping[str, Any]] = (),
             description: str | None = None, idempotent: bool = False, etag: bool = False,
             body_media: tuple[str, ...] = (), also: tuple[type[BaseModel], ...] = (),
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a Chalice route that maps domain errors to problems and is described in OpenAPI.

    `content_types` replaces the default body types (JSON for body routes) for a non-JSON body route,
    such as a text/csv import; the view parses that body itself.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        doc = EndpointDoc(path, method, summary, view.__name__, request_model, response_model,
                          status, tags, errors_, tuple(parameters), description, idempotent, etag, body_media, also)
        ENDPOINTS[(path, method)] = doc

        def wrapped(**kwargs: Any) -> Any:
            return guarded(bp.current_request, lambda: view(**kwargs))

        wrapped.__name__ = view.__name__
        wrapped.__doc__ = view.__doc__
        # Body routes accept only JSON; Chalice answers other types with 415 (made a problem by the
        # middleware). Routes without a body accept any content type.
        accepted = (list(content_types) if content_types is not None
                    else ["application/json"] if method in JSON_BODY_METHODS and request_model else ["*/*"])
        bp.route(path, methods=[method], content_types=accepted, name=view.__name__)(wrapped)
        return view

    return decorate


# Webhook refusals (domain exceptions without HTTP) and their answers, in this one place.
_REFUSALS: dict[type[refusals.Refused], type[errors.AppError]] = {
    refusals.UnknownSource: errors.NotFound, refusals.BadSignature: errors.Unauthorized,
    refusals.Replayed: errors.Unauthorized, refusals.ForeignSender: errors.Unauthorized,
    refusals.Malformed: errors.BadRequest, refusals.UnsupportedContent: errors.UnsupportedMediaType,
}


def _refusal_problem(exc: refusals.Refused) -> errors.AppError:
    problem = next((found for cls in type(exc).__mro__ if (found := _REFUSALS.get(cls)) is not None), errors.BadRequest)
    return problem("the delivery was refused")


def guarded(request: Request | None, call: Callable[[], Any]) -> Any:
    """Run a view: domain errors become problems, an unavailable database a 503, anything else a
    generic 500 with a request id."""
    try:
        return call()
    except errors.AppError as exc:
        return problem_response(exc, request_id_of(request))
    except refusals.Refused as exc:
        # A webhook delivery we do not accept (already counted by ingest); the answer names no reason.
        return problem_response(_refusal_problem(exc), request_id_of(request))
    except errors.DatabaseUnavailable as exc:
        return _unavailable(exc, exc.kind, request)
    except Exception as exc:
        kind = unavailable_kind(exc)  # a driver error that never went through Database.connection()
        if kind is not None:
            return _unavailable(exc, kind, request)
        # The traceback and message stay out of the response; the log line and Sentry get a
        # scrubbed version (logsafe) so no SQL, row value or secret leaves the process.
        log.error("unhandled error", exc_info=exc,
                  extra={"fields": {"request_id": request_id_of(request)}})
        capture_exception(exc)
        return problem_response(errors.AppError("an internal error occurred"), request_id_of(request))


def _unavailable(exc: Exception, kind: str, request: Request | None) -> Response:
    # Expected during an outage, a restart or a failover: a warning without traceback (nothing in this
    # process to debug) and an answer that tells the client to retry. Sentry still hears of it (through
    # the same scrubber as every event): an outage is something to be told about.
    log.warning("database unavailable", extra={"fields": {"kind": kind, "request_id": request_id_of(request)}})
    capture_exception(exc)
    return problem_response(errors.ServiceUnavailable("the database is unavailable; retry shortly",
                                                      retry_after=DB_RETRY_AFTER_S), request_id_of(request))
