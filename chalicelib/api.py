"""Builds the Chalice app: request middleware, blueprints, and problem answers for missing methods."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from chalice.app import Blueprint, Chalice, Request, Response

from chalicelib import errors
from chalicelib.db import deadline
from chalicelib.http import PROBLEM_JSON, assign_request_id, guarded, problem_response
from chalicelib.inputs import check_json_depth, is_json_media, raw_body
from chalicelib.observability import log_request
from chalicelib.outgoing import events, trigger
from chalicelib.settings import get_settings

log = logging.getLogger("crm.api")

ROUTABLE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# The root and API Gateway's greedy path, which matches whatever no other route does (chalice local
# matches it for one path segment only): an unknown path answers a 404 problem, not the gateway's own
# 403 {"message": "Missing Authentication Token"}, which tells a client nothing true.
NOT_FOUND_PATHS = ("/", "/{proxy+}")
HSTS = "max-age=31536000; includeSubDomains"
CORS_ALLOW_HEADERS = "Content-Type, Authorization, X-CSRF-Token, Idempotency-Key, If-Match"
_CHALICE_ERRORS: dict[int, type[errors.AppError]] = {
    400: errors.BadRequest, 403: errors.Forbidden, 404: errors.NotFound,
    405: errors.MethodNotAllowed, 413: errors.PayloadTooLarge, 415: errors.UnsupportedMediaType,
}


def create_app(app_name: str, blueprints: Sequence[Blueprint], *, max_body_bytes: int,
               cors_origins: Sequence[str] = ()) -> Chalice:
    """A Chalice app with our middleware, the given blueprints and 405/preflight answers."""
    # configure_logs=False: Chalice's own handler prints plain-text tracebacks; its logger must go
    # through our JSON handler (and so through logsafe) instead.
    app = Chalice(app_name=app_name, configure_logs=False)
    app.log.propagate = True
    # Multipart bodies (inbound email with attachments) arrive base64-encoded from API Gateway as binary.
    app.api.binary_types.append("multipart/form-data")
    app.api.binary_types.append("application/pdf")  # proposals' PDFs
    # Debug mode would send tracebacks to clients.
    app.debug = False
    allowed_origins = frozenset(cors_origins)
    app.register_middleware(_request_middleware(max_body_bytes, allowed_origins), "http")
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    _install_method_fallbacks(app, allowed_origins)
    _install_not_found(app)
    return app


def _request_middleware(max_body_bytes: int, allowed_origins: frozenset[str],
                        ) -> Callable[[Request, Callable[[Request], Response]], Response]:
    def middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
        started = time.perf_counter()
        request_id = assign_request_id(request)
        response = _respond(request, get_response, max_body_bytes, request_id)
        response = _as_problem(response, request_id)
        _add_headers(request, response, request_id, allowed_origins)
        # One line per request: route template (never the concrete path or query string).
        log_request(method=request.method, route=str(request.context.get("resourcePath", "unknown")),
                    status=response.status_code,
                    duration_ms=(time.perf_counter() - started) * 1000, request_id=request_id)
        return response

    return middleware


def _respond(request: Request, get_response: Callable[[Request], Response], max_body_bytes: int,
             request_id: str) -> Response:
    try:
        raw = raw_body(request)
        # Checked before any view parses anything: one limit for every route.
        if len(raw) > max_body_bytes:
            return problem_response(errors.PayloadTooLarge(
                f"the body is larger than {max_body_bytes} bytes"), request_id)
        if raw and is_json_media(request):
            # Every route, webhooks included (whose parser runs after the signature check, so a validly
            # signed deep body would still reach it): the nesting is bounded before anything parses.
            check_json_depth(raw)
    except errors.AppError as exc:
        return problem_response(exc, request_id)
    except Exception:  # noqa: BLE001 - an undecodable (bad base64) body is a bad request
        return problem_response(errors.BadRequest("the body could not be read"), request_id)
    # Every database wait of the request shares one budget, under API Gateway's 29 s: past it the
    # request ends with a 503 instead of hanging on a frozen database until the gateway gives up.
    events.discard_emitted()
    with deadline.budget(get_settings().db_request_deadline_s):
        result: Response = guarded(request, lambda: get_response(request))
    # Events stored by the request's committed transactions go out now (outgoing webhooks).
    trigger.after_commit(events.take_emitted())
    return result


def _as_problem(response: Response, request_id: str) -> Response:
    """Turn Chalice's own error bodies ({"Code", "Message"}) into problem+json."""
    status = response.status_code
    if status < 400 or response.headers.get("Content-Type") == PROBLEM_JSON:
        return response
    body = response.body
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    if not (isinstance(body, dict) and "Code" in body):
        return response
    error_cls = _CHALICE_ERRORS.get(status, errors.AppError)
    problem = problem_response(error_cls(), request_id)
    if "Allow" in response.headers:
        problem.headers["Allow"] = response.headers["Allow"]
    return problem


def _add_headers(request: Request, response: Response, request_id: str,
                 allowed_origins: frozenset[str]) -> None:
    response.headers["X-Request-Id"] = request_id
    if get_settings().stage == "prod":
        # Every answer, errors included: browsers then refuse plain http for the API's host for a year.
        response.headers["Strict-Transport-Security"] = HSTS
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    origin = request.headers.get("origin")
    # CORS is an exact allowlist with credentials; never "*", never a reflected unknown origin.
    if origin and origin in allowed_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, ETag, Location, Retry-After"
        response.headers["Vary"] = "Origin"


def _install_method_fallbacks(app: Chalice, allowed_origins: frozenset[str]) -> None:
    """Every path answers every method: missing ones with a 405 problem, OPTIONS as CORS preflight.

    Registered as real routes so API Gateway forwards them too (it would otherwise answer with its
    own non-problem 403).
    """
    for index, (path, entries) in enumerate(sorted(app.routes.items())):
        defined = [m for m in ROUTABLE_METHODS if m in entries]
        missing = [m for m in ROUTABLE_METHODS if m not in entries]
        allow = ", ".join(defined)
        if missing:
            app.route(path, methods=missing, content_types=["*/*"],
                      name=f"method_not_allowed_{index}")(_not_allowed_view(app, allow))
        if "OPTIONS" not in entries:
            app.route(path, methods=["OPTIONS"], content_types=["*/*"],
                      name=f"preflight_{index}")(_preflight_view(app, allow, allowed_origins))


def _not_allowed_view(app: Chalice, allow: str) -> Callable[..., Response]:
    return _problem_view(app, lambda: errors.MethodNotAllowed(f"allowed methods: {allow}", headers={"Allow": allow}))


def _problem_view(app: Chalice, error: Callable[[], errors.AppError]) -> Callable[..., Response]:
    """A view that answers every call with `error()` as a problem (through the same guard as routes)."""
    def fail() -> Response:
        raise error()

    def view(**_params: Any) -> Response:
        result: Response = guarded(app.current_request, fail)
        return result

    return view


def _preflight_view(app: Chalice, allow: str, allowed_origins: frozenset[str]) -> Callable[..., Response]:
    def view(**_params: Any) -> Response:
        request = app.current_request
        origin = request.headers.get("origin") if request is not None else None
        headers: dict[str, str | list[str]] = {"Allow": allow}
        if origin and origin in allowed_origins:
            headers.update({
                "Access-Control-Allow-Methods": allow,
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            })
        return Response(body="", status_code=204, headers=headers)

    return view


def _install_not_found(app: Chalice) -> None:
    """The root and every unknown path answer every method with a 404 problem (see NOT_FOUND_PATHS)."""
    view = _problem_view(app, lambda: errors.NotFound("no such path"))
    for index, path in enumerate(NOT_FOUND_PATHS):
        if path not in app.routes:
            app.route(path, methods=[*ROUTABLE_METHODS, "HEAD", "OPTIONS"], content_types=["*/*"],
                      name=f"not_found_{index}")(view)


def is_fallback_view(view_name: str) -> bool:
    """True for the generated 405/preflight/404 routes (left out of the OpenAPI document)."""
    return view_name.startswith(("method_not_allowed_", "preflight_", "not_found_"))
