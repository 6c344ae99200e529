"""OpenAPI 3.1 document generated from the Chalice route table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any, Literal

from chalice.app import Chalice
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib.api import is_fallback_view
from chalicelib.auth.principal import UNSAFE_METHODS
from chalicelib.http import ENDPOINTS, EndpointDoc
from chalicelib.settings import Settings, get_settings

_PARAM = re.compile(r"{([^}]+)}")
_STATUS_TEXT = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                409: "Conflict", 412: "Precondition failed", 413: "Payload too large",
                415: "Unsupported media type", 422: "Validation failed", 429: "Too many requests",
                500: "Internal server error", 503: "Service unavailable"}
_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "message": {"type": "string"}, "code": {"type": "string"}}}},
    },
}


class UndocumentedRoute(RuntimeError):
    """A route was registered without chalicelib.http.endpoint (so it has no schema)."""


def documented_routes(app: Chalice) -> list[tuple[str, str]]:
    """(path, method) of every route the API serves, except the generated 405/preflight ones."""
    return sorted((path, method) for path, entries in app.routes.items()
                  for method, entry in entries.items() if not is_fallback_view(entry.view_name))


def build_openapi(app: Chalice, *, title: str = "Tenant-isolated CRM API", version: str = "0.1.0",
                  settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every route of `app` (servers and cookie name from `settings`)."""
    settings = settings or get_settings()
    docs: list[EndpointDoc] = []
    for path, method in documented_routes(app):
        doc = ENDPOINTS.get((path, method))
        if doc is None:
            raise UndocumentedRoute(f"{method} {path} is not registered through endpoint()")
        docs.append(doc)
    models = sorted({m for d in docs for m in (d.request_model, d.response_model, *d.also) if m is not None},
                    key=lambda m: m.__name__)
    refs, defs = _schemas(models)
    paths: dict[str, dict[str, Any]] = {}
    for doc in docs:
        paths.setdefault(doc.path, {})[doc.method.lower()] = with_access(_operation(doc, refs), doc, settings)
    components = {"schemas": {**defs.get("$defs", {}), "Problem": _PROBLEM_SCHEMA},
                  "securitySchemes": security_schemes(settings)}
    return {"openapi": "3.1.0", "info": {"title": title, "version": version, "description": API_DESCRIPTION},
            "servers": [{"url": settings.public_base_url, "description": "This deployment (PUBLIC_BASE_URL)"}],
            "paths": paths, "components": components}


def _schemas(models: list[type[BaseModel]]) -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    if not models:
        return {}, {}
    keyed, defs = models_json_schema([(m, "validation") for m in models],
                                     ref_template="#/components/schemas/{model}")
    return {m: keyed[(m, "validation")] for m in models}, defs


_IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "description": "The same key and body replay the "
                    "first response (Idempotent-Replayed: true); the same key with another body is a 409.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
_IF_MATCH = {"name": "If-Match", "in": "header", "description": "An ETag from a read: 412 when the record has "
             "changed since.", "schema": {"type": "string"}}
_ETAG = {"description": "The version of the returned record (for If-Match).", "schema": {"type": "string"}}
_LOCATION = {"description": "The address of the created record.", "schema": {"type": "string"}}
_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _operation(doc: EndpointDoc, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": doc.view_name, "summary": doc.summary}
    if doc.description:
        op["description"] = doc.description
    if doc.tags:
        op["tags"] = list(doc.tags)
    given = {(p["name"], p["in"]) for p in doc.parameters}  # a route may describe a path parameter itself
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string", "format": "uuid"} if name.endswith("_id") else {"type": "string"}}
              for name in _PARAM.findall(doc.path) if (name, "path") not in given]
    params += [dict(p) for p in doc.parameters]
    if doc.idempotent:
        params.append(_IDEMPOTENCY_KEY)
    if 412 in doc.errors:
        params.append(_IF_MATCH)
    if params:
        op["parameters"] = params
    if doc.request_model is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": refs[doc.request_model]}}}
    elif doc.body_media:
        op["requestBody"] = {"required": True, "content": {m: {"schema": {"type": "string"}} for m in doc.body_media}}
    ok: dict[str, Any] = {"description": "Success"}
    if doc.response_model is not None:
        schema = refs[doc.response_model]
        if doc.also:
            schema = {"oneOf": [schema, *(refs[m] for m in doc.also)]}
        ok["content"] = {"application/json": {"schema": schema}}
    headers = {**({"ETag": _ETAG} if doc.etag else {}), **({"Location": _LOCATION} if doc.status == 201 else {})}
    if headers:
        ok["headers"] = headers
    statuses = set(doc.errors) | {500}
    if doc.request_model is not None:
        statuses |= {400, 413, 415, 422}
    if doc.parameters or doc.idempotent:
        statuses |= {400}
    responses: dict[str, Any] = {str(doc.status): ok}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"), **_PROBLEM}
    op["responses"] = responses
    return op


# ---- who may call what: security schemes, CSRF header, rate limits ----

SESSION_SCHEME, KEY_SCHEME = "sessionCookie", "apiKey"
Access = Literal["public", "cookie", "cookie_or_key"]
API_DESCRIPTION = (
    "Browsers sign in with a magic link (POST /auth/magic-link, then POST /auth/session) and hold a session "
    "cookie; their writes also send X-CSRF-Token (the csrf_token of GET /auth/me). Integrations send a "
    "workspace API key as `Authorization: Bearer <key>`, which acts within its workspace only and needs no "
    "CSRF token. Errors are RFC 9457 problem+json documents.")
# Routes that take neither credential: sign-in, health, this document and its page, and signed download links
# (the link's token is the grant). Webhooks neither: each checks its provider's signature over the raw body.
_PUBLIC = frozenset({("/health", "GET"), ("/health/ready", "GET"), ("/openapi.json", "GET"), ("/docs", "GET"),
                     ("/docs/{asset}", "GET"), ("/auth/magic-link", "POST"), ("/auth/confirm", "GET"),
                     ("/auth/session", "POST"), ("/auth/email-change/confirm", "POST"), ("/downloads", "GET"),
                     ("/legal/sub-processors", "GET"), ("/legal/sub-processors.json", "GET"),
                     ("/webhook-event-types", "GET"), ("/payments/complete", "GET")})
_PROVIDER_SIGNED = "/webhooks/"
# Workspace routes that authenticate an API key and then refuse it: a key may not mint keys.
_COOKIE_ONLY = frozenset({("/workspaces/{workspace_id}/api-keys", "POST")})
_WORKSPACE = "/workspaces/{workspace_id}"
_RETRY_AFTER = {"description": "Seconds to wait before trying again.", "schema": {"type": "integer", "minimum": 1}}


def access(path: str, method: str) -> Access:
    """Which credentials a route takes, as chalicelib.auth.principal enforces them."""
    if (path, method) in _PUBLIC or path.startswith(_PROVIDER_SIGNED):
        return "public"
    # workspace_tx/workspace_scope take a session cookie or that workspace's API key; account_scope (every
    # other route) takes the cookie only, since a key belongs to a workspace, not to a person.
    if (path == _WORKSPACE or path.startswith(_WORKSPACE + "/")) and (path, method) not in _COOKIE_ONLY:
        return "cookie_or_key"
    return "cookie"


def security_schemes(settings: Settings) -> dict[str, Any]:
    """The session cookie (its name depends on the stage) and the bearer API key."""
    return {
        SESSION_SCHEME: {"type": "apiKey", "in": "cookie", "name": settings.session_cookie_name,
                         "description": "The session cookie set by POST /auth/session (HttpOnly: a browser "
                                        "sends it by itself). Writes also need the X-CSRF-Token header."},
        KEY_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "crm_<prefix>_<secret>",
                     "description": "A workspace API key (POST /workspaces/{workspace_id}/api-keys); valid "
                                    "only on that workspace's routes. No CSRF token needed."},
    }


def _rate_limits(settings: Settings) -> dict[tuple[str, str], str]:
    """The routes that answer 429 (chalicelib.auth.ratelimit, 15-minute windows), with their limits."""
    return {
        ("/auth/session", "POST"): f"More than {settings.sign_in_attempts_per_ip} sign-in attempts from one IP "
                                   "address in 15 minutes (SIGN_IN_ATTEMPTS_PER_IP).",
        ("/auth/email-change", "POST"): f"More than {settings.magic_link_limit_per_email} requests by one user "
                                        "in 15 minutes (MAGIC_LINK_LIMIT_PER_EMAIL).",
        (_WORKSPACE + "/invitations", "POST"): f"More than {settings.magic_link_limit_per_ip} invitations from "
                                               f"the workspace, or {settings.magic_link_limit_per_email} to one "
                                               "address, in 15 minutes.",
    }


def _silent_limit(settings: Settings) -> str:
    return (f"Limited to {settings.magic_link_limit_per_email} links per address and "
            f"{settings.magic_link_limit_per_ip} per IP address in 15 minutes (MAGIC_LINK_LIMIT_PER_EMAIL, "
            "MAGIC_LINK_LIMIT_PER_IP). A limited request still answers 202 and sends nothing, so the answer "
            "never tells whether an address is known or limited.")


_CSRF_TEXT = ("The session's CSRF token (csrf_token of POST /auth/session or GET /auth/me). Required with the "
              "session cookie, together with an Origin of this API or of CORS_ORIGINS (browsers send it); a "
              "request with an API key (Authorization: Bearer) needs none.")


def _csrf_header(required: bool) -> dict[str, Any]:
    return {"name": "X-CSRF-Token", "in": "header", "required": required, "description": _CSRF_TEXT,
            "schema": {"type": "string"}}


def _note(op: dict[str, Any], text: str) -> None:
    op["description"] = f"{op['description']}\n\n{text}" if op.get("description") else text


def _error(op: dict[str, Any], status: int, **extra: Any) -> None:
    entry = op["responses"].setdefault(str(status), {"description": _STATUS_TEXT[status], **_PROBLEM})
    entry.update(extra)


def with_access(op: dict[str, Any], doc: EndpointDoc, settings: Settings) -> dict[str, Any]:
    """Add `security`, the CSRF header, and the 401/403/429 answers that follow from them to `op`."""
    who = access(doc.path, doc.method)
    op["security"] = {"public": [], "cookie": [{SESSION_SCHEME: []}],
                      "cookie_or_key": [{SESSION_SCHEME: []}, {KEY_SCHEME: []}]}[who]
    if doc.path.startswith(_PROVIDER_SIGNED):
        _note(op, "Authenticated by the provider's signature over the raw body, not by a session or an API key.")
    if who != "public":
        _error(op, 401)
    if who != "public" and doc.method in UNSAFE_METHODS:
        # Only the cookie rides along by itself on a cross-site request, so only cookie writes need the token.
        op.setdefault("parameters", []).append(_csrf_header(required=who == "cookie"))
        _error(op, 403)
    limit = _rate_limits(settings).get((doc.path, doc.method))
    if limit is not None:
        _error(op, 429, description=f"Too many requests. {limit}", headers={"Retry-After": _RETRY_AFTER})
    if "503" in op["responses"]:
        op["responses"]["503"]["headers"] = {"Retry-After": _RETRY_AFTER}
    if (doc.path, doc.method) == ("/auth/magic-link", "POST"):
        _note(op, _silent_limit(settings))
    op["responses"] = dict(sorted(op["responses"].items()))
    return op
