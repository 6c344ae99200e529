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
    models = sorted({m for d in docs for m in (d.request_model, d.response_model) if m is not None},
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


def _operation(doc: EndpointDoc, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": doc.view_name, "summary": doc.summary}
    if doc.tags:
        op["tags"] = list(doc.tags)
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string", "format": "uuid"} if name.endswith("_id") else {"type": "string"}}
              for name in _PARAM.findall(doc.path)]
    if params:
        op["parameters"] = params
    if doc.request_model is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": refs[doc.request_model]}}}
    ok: dict[str, Any] = {"description": "Success"}
    if doc.response_model is not None:
        ok["content"] = {"application/json": {"schema": refs[doc.response_model]}}
    problem = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    statuses = set(doc.errors) | {500}
    if doc.request_model is not None:
        statuses |= {400, 413, 415, 422}
    responses: dict[str, Any] = {str(doc.status): ok}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"), **problem}
    op["responses"] = responses
    return op
