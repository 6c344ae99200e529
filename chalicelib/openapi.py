"""OpenAPI 3.1 document generated from the Chalice route table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from chalice.app import Chalice
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib.api import is_fallback_view
from chalicelib.http import ENDPOINTS, EndpointDoc

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
                  ) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every route of `app`."""
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
        paths.setdefault(doc.path, {})[doc.method.lower()] = _operation(doc, refs)
    components = {"schemas": {**defs.get("$defs", {}), "Problem": _PROBLEM_SCHEMA}}
    return {"openapi": "3.1.0", "info": {"title": title, "version": version},
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
    problem = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    statuses = set(doc.errors) | {500}
    if doc.request_model is not None:
        statuses |= {400, 413, 415, 422}
    if doc.parameters or doc.idempotent:
        statuses |= {400}
    responses: dict[str, Any] = {str(doc.status): ok}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"), **problem}
    op["responses"] = responses
    return op
