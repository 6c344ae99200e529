"""HTTP plumbing shared by every route: body parsing, problem+json responses, endpoint registry."""

from __future__ import annotations

import itertools
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chalice.app import Blueprint, Request, Response
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from chalicelib import errors
from chalicelib.crm import idempotency
from chalicelib.db.faults import unavailable_kind
from chalicelib.db.types import Conn
from chalicelib.inbox import refusals
from chalicelib.observability import capture_exception

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("crm.http")

PROBLEM_JSON = "application/problem+json"
JSON_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9-]{8,64}$")
# Arrays and objects nest at most this deep in a JSON body. The parser recurses once per level, and
# about a thousand levels (a few KB of brackets) exhaust Python's stack: a 500 on every JSON route,
# sign-in included, for anyone. No document of this API comes near 64 levels.
MAX_JSON_DEPTH = 64
_JSON_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
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


def _media_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def is_json_media(request: Request) -> bool:
    """Whether the request says its body is JSON (application/json or a +json type)."""
    media = _media_type(request)
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def check_json_depth(raw: bytes) -> None:
    """400 when the JSON text nests arrays and objects deeper than MAX_JSON_DEPTH, before any parser sees it.

    Linear, at C speed: escapes are dropped (so \\" neither hides nor fakes a quote), the text inside
    strings is cut out (its brackets are text), the brackets left are summed as +1/-1, and the running
    maximum is the depth. A body with few brackets skips all of it. No backtracking regex: a body
    crafted against one (unterminated strings full of escapes) would take quadratic time. A NUL byte
    is refused too: UTF-8 JSON never holds one, UTF-16 and UTF-32 text (which json.loads would decode)
    always does, and its bytes would fool the scan.
    """
    if b"\x00" in raw:
        raise errors.BadRequest("the body is not valid UTF-8 JSON")
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    outside_strings = b"".join(_JSON_ESCAPE.sub(b"", raw).split(b'"')[::2])
    brackets = outside_strings.translate(None, _NOT_A_BRACKET)
    if brackets and max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > MAX_JSON_DEPTH:
        raise errors.BadRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(body)"


def raw_body(request: Request) -> bytes:
    """The request's body as bytes (what a parser reads and an Idempotency-Key's request hash covers)."""
    raw = request.raw_body or b""
    return raw.encode() if isinstance(raw, str) else raw


def parse_body(request: Request, model: type[M]) -> M:
    """Parse and validate a JSON body into `model` (415, 400, 422 as problems).

    The size limit (413) is enforced earlier, for every route, by the request middleware.
    """
    raw = raw_body(request)
    if _media_type(request) != "application/json":
        raise errors.UnsupportedMediaType("send the body as application/json")
    # Its nesting was bounded by the request middleware (chalicelib.api), before any view ran.
    try:
        document = json.loads(raw.decode("utf-8"))
    except ValueError:
        # UnicodeDecodeError, JSONDecodeError and an integer beyond Python's digit limit are all
        # ValueErrors. No parser message: it quotes the offending input.
        raise errors.BadRequest("the body is not valid UTF-8 JSON") from None
    try:
        parsed = model.model_validate(document)
    except ValidationError as exc:
        # Field paths and messages only; pydantic's `input` would echo (possibly personal) values.
        fields = [errors.FieldError(_field_path(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
        if any(f.code == "email_address" for f in fields):
            # An address that is not one plain recipient is a malformed request, not a field value.
            raise errors.BadRequest("an email address is not one plain address", errors=fields) from None
        raise errors.ValidationFailed("some fields are missing or invalid", errors=fields) from None
    # PostgreSQL text cannot hold NUL, and UTF-8 cannot carry a lone surrogate (JSON's "\ud800"): one
    # check for every route, a 422 naming the field, never a 500 from the driver refusing the value.
    bad = [errors.FieldError(_field_path(loc), "may not contain NUL characters or lone surrogates", "unstorable")
           for loc in _unstorable_at(document)]
    if bad:
        raise errors.ValidationFailed("text may not contain NUL characters or lone surrogates", errors=bad)
    return parsed


def storable(text: str) -> bool:
    """Whether PostgreSQL can store `text` (no NUL, valid UTF-8: no lone surrogate)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unstorable_at(value: Any, loc: tuple[int | str, ...] = ()) -> Iterator[tuple[int | str, ...]]:
    if isinstance(value, str):
        if not storable(value):
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if not storable(key):
                yield (*loc, "(a key)")  # not the key itself: the path must not carry it back
            else:
                yield from _unstorable_at(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable_at(item, (*loc, index))


def query_params(request: Request) -> dict[str, str]:
    """The query string as {name: value}. A name given twice is a 400: which of its values counts would be
    a guess (a filter or a limit quietly not being the one the client meant)."""
    params = request.query_params
    if not params:
        return {}
    repeated = sorted(name for name in params if len(params.getlist(name)) > 1)
    if repeated:
        raise errors.BadRequest(f"{repeated[0]} is given more than once")
    found = dict(params)
    if not all(storable(name) and storable(value) for name, value in found.items()):
        raise errors.BadRequest("a query parameter holds a NUL character or invalid UTF-8")
    return found


def if_match(request: Request) -> frozenset[str] | None:
    """The ETags the If-Match header names; None when it is absent or "*" (no precondition on the version).

    Parsed here, once: domain code compares row versions with the result and never sees header text.
    """
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    return frozenset(tag.strip() for tag in header.split(","))


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
