"""R01 IDOR matrix: b1 (owner of B only) calls every /workspaces/{workspace_id}/... route of the app with A's
ids, by cookie and by B's API key; every answer is 404 and no row of the database changes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from chalice.test import Client
from pydantic import BaseModel, ValidationError

import app as app_module
from chalicelib.api import is_fallback_view
from chalicelib.http import ENDPOINTS
from tests.api.auth_helpers import (
    Browser,
    body_of,
    call,
    create_key,
    create_workspace,
    invite_and_join,
    sign_in,
)
from tests.conftest import TestDatabase
from tests.fix_crm import shared_app, table_rows

# Bodies that would hurt if they got through. Other routes get a body generated from their model, or one of
# EXTRA_BODIES where the model has cross-field rules; "{name}" stands for A's row of that path parameter.
ACCOUNT_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/workspaces/{workspace_id}"): {"name": "pwned"},
    ("PATCH", "/workspaces/{workspace_id}/members/{user_id}"): {"role": "owner"},
    ("POST", "/workspaces/{workspace_id}/invitations"): {"email": "b1-friend@example.test", "role": "owner"},
    ("POST", "/workspaces/{workspace_id}/api-keys"): {"name": "backdoor", "role": "admin"},
}
EXTRA_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/workspaces/{workspace_id}/contacts"): {"first_name": "Idor", "email": "idor@example.test"},
    ("POST", "/workspaces/{workspace_id}/notes"): {"body": "idor", "contact_id": "{contact_id}"},
    ("PUT", "/workspaces/{workspace_id}/integrations/{provider}"): {"account_sid": "AC" + "0" * 32,
                                                                    "auth_token": "f" * 32},
    ("POST", "/workspaces/{workspace_id}/webhook-endpoints"): {"url": "https://hooks.example.com/idor",
                                                               "event_types": ["*"]},
    # An ISO 4217 code (a generated string is none).
    ("POST", "/workspaces/{workspace_id}/products"): {"name": "Idor", "sku": "IDOR-1", "unit_amount_minor": 1,
                                                      "currency": "EUR"},
    ("POST", "/workspaces/{workspace_id}/leads/{lead_id}/proposals"): {"title": "idor", "valid_until": "2027-01-01",
                                                                      "currency": "EUR"},
}
PARAM_SAMPLES = {"provider": "twilio"}
_STRING_CANDIDATES = ("idor", "Idor", "idor.example.test", "idor@example.test", "+14155550123", "123456789012",
                      "EUR", "x")


def _sample(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A minimal valid value for a JSON schema (required properties only)."""
    if "$ref" in schema:
        return _sample(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            return _sample(options[0], defs)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _sample(props[name], defs) for name in schema.get("required", [])}
    if kind == "array":
        return [_sample(schema.get("items", {}), defs) for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        return schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
    if kind == "boolean":
        return False
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "uuid":
            return str(uuid.uuid4())
        if fmt == "date-time":
            return "2031-01-01T00:00:00Z"
        if fmt == "date":
            return "2031-01-01"
        if fmt == "email":
            return "idor@example.test"
        pattern = schema.get("pattern")
        for candidate in _STRING_CANDIDATES:
            value = candidate * max(1, -(-schema.get("minLength", 0) // len(candidate)))
            if pattern is None or re.search(pattern, value):
                return value
    return None


def _fill(value: Any, params: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, params) for k, v in value.items()}
    if isinstance(value, str) and (match := re.fullmatch(r"\{([a-z_]+)\}", value)):
        return params.get(match.group(1), str(uuid.uuid4()))
    return value


def _try_body(method: str, path: str, params: dict[str, str]) -> tuple[bool, dict[str, Any] | None]:
    """(valid, body) for the route: None when it takes no body."""
    doc = ENDPOINTS.get((path, method))
    model: type[BaseModel] | None = doc.request_model if doc else None
    if model is None:
        return True, None
    body = ACCOUNT_BODIES.get((method, path)) or EXTRA_BODIES.get((method, path))
    if body is None:
        schema = model.model_json_schema()
        body = _sample(schema, schema.get("$defs", {}))
    body = _fill(body, params)
    try:
        model.model_validate(body)
    except ValidationError:
        return False, body
    return True, dict(body)


def _body_for(method: str, path: str, params: dict[str, str]) -> dict[str, Any] | None:
    valid, body = _try_body(method, path, params)
    if not valid:
        pytest.fail(f"cannot build a valid body for {method} {path}: add one to EXTRA_BODIES")
    return body


def _workspace_routes() -> list[tuple[str, str]]:
    found = []
    for path, entries in app_module.app.routes.items():
        if "{workspace_id}" not in path:
            continue
        for method, entry in entries.items():
            if not is_fallback_view(entry.view_name):
                found.append((method, path))
    return sorted(found, key=lambda r: (r[1], r[0]))


ROUTES = _workspace_routes()
PARAM_RE = re.compile(r"\{([a-z_]+)\}")


@dataclass
class World:
    """Tenants A (a1 owner, a2 member, rows of every resource) and B (b1 owner, b1's key); nothing shared."""

    db: TestDatabase
    client: Client
    a: str
    b: str
    b1: Browser
    b1_key: str
    params: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)


def _seed_rows(client: Client, owner: Browser, workspace: str, params: dict[str, str]) -> None:
    """One row of every resource of A that has a create route, so item routes get A's real ids.

    Repeated while it finds more: a note needs a contact, a stage needs a pipeline. A resource that cannot
    be created this way is probed with a random id (still an id of nothing b1 may see).
    """
    for _ in range(4):
        found = False
        for path in sorted({p for _, p in ROUTES}):
            last = PARAM_RE.findall(path)[-1]
            if last in params or last == "workspace_id" or not path.endswith("{" + last + "}"):
                continue
            collection = path[: -len("/{" + last + "}")]
            outer = [n for n in PARAM_RE.findall(collection) if n != "workspace_id"]
            if (collection, "POST") not in ENDPOINTS or any(n not in params for n in outer):
                continue
            valid, body = _try_body("POST", collection, params)
            if not valid:
                continue
            url = collection.replace("{workspace_id}", workspace)
            for name in outer:
                url = url.replace("{" + name + "}", params[name])
            response = call(client, "POST", url, owner, body)
            created = str((body_of(response) or {}).get("id", "")) if response.status_code == 201 else ""
            if created and created not in params.values():  # (a new stage answers with its pipeline)
                params[last] = created
                found = True
        if not found:
            return


@pytest.fixture(scope="module")
def world(pg_admin_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Built once for the matrix: no call of the matrix may change anything (which each test checks)."""
    with shared_app(pg_admin_url, template_db, tmp_path_factory.mktemp("idor")) as shared:
        client, box = shared.client, shared.outbox
        a1 = sign_in(client, "a1@example.test", box)
        a = create_workspace(client, a1, "Alpha secret workspace")["id"]
        a2 = invite_and_join(client, box, a1, a, "a2@example.test", "member")
        key = create_key(client, a1, a, role="admin")
        b1 = sign_in(client, "b1@example.test", box)
        b = create_workspace(client, b1, "Beta")["id"]
        b1_key = create_key(client, b1, b, role="admin")["key"]
        params = {"user_id": a2.user_id, "key_id": str(key["id"]), **PARAM_SAMPLES}
        _seed_rows(client, a1, a, params)
        yield World(shared.db, client, a, b, b1, b1_key, params, [key["key"], a1.cookie_value, a1.csrf])


def _snapshot(db: TestDatabase) -> dict[str, list[str]]:
    """Every row of every table (as text), except the last-use times of credentials."""
    # Bookkeeping of b1's own credentials: when its session or key was last used.
    return table_rows(db, skip=("rate_limits", "schema_migrations"),
                      leave_out={"sessions": "last_seen_at", "api_keys": "last_used_at"})


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_idor_matrix_b1_gets_404_for_every_workspace_route_of_a(world: World, method: str, path: str) -> None:
    url = path
    for name in PARAM_RE.findall(path):
        value = world.a if name == "workspace_id" else world.params.get(name, str(uuid.uuid4()))
        url = url.replace("{" + name + "}", value)
    body = _body_for(method, path, world.params)
    before = _snapshot(world.db)
    spoof = {"X-Tenant-Id": world.a}
    by_cookie = call(world.client, method, url, world.b1, body, headers=spoof)
    by_key = call(world.client, method, url, body=body, bearer=world.b1_key, headers=spoof)
    for response in (by_cookie, by_key):
        assert response.status_code == 404, (method, url, response.status_code, response.body)
        text = response.body.decode()
        assert "Alpha secret" not in text and "a1@example.test" not in text
        assert not any(secret in text for secret in world.secrets)
    assert _snapshot(world.db) == before


def test_idor_matrix_covers_the_account_routes() -> None:
    covered = set(ROUTES)
    for route in (("GET", "/workspaces/{workspace_id}"), ("DELETE", "/workspaces/{workspace_id}"),
                  ("POST", "/workspaces/{workspace_id}/restore"),
                  ("DELETE", "/workspaces/{workspace_id}/members/{user_id}"),
                  ("DELETE", "/workspaces/{workspace_id}/api-keys/{key_id}"),
                  ("GET", "/workspaces/{workspace_id}/audit-log"), *ACCOUNT_BODIES):
        assert route in covered, route


OBJECT_ROUTES = [(m, p) for m, p in ROUTES
                 if any(n.endswith("_id") and n != "workspace_id" for n in PARAM_RE.findall(p))]


@pytest.mark.parametrize(("method", "path"), OBJECT_ROUTES, ids=[f"{m} {p}" for m, p in OBJECT_ROUTES])
def test_idor_matrix_b1_gets_404_for_a_rows_through_its_own_workspace(world: World, method: str, path: str) -> None:
    """B's owner, in B, names A's member, key or record: RLS keeps it out of reach (as a random id)."""
    url = path
    for name in PARAM_RE.findall(path):
        value = world.b if name == "workspace_id" else world.params.get(name, str(uuid.uuid4()))
        url = url.replace("{" + name + "}", value)
    body = _body_for(method, path, world.params)
    before = _snapshot(world.db)
    for response in (call(world.client, method, url, world.b1, body),
                     call(world.client, method, url, body=body, bearer=world.b1_key)):
        assert response.status_code == 404, (method, url, response.status_code, response.body)
        assert "Alpha secret" not in response.body.decode()
    assert _snapshot(world.db) == before
