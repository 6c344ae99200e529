"""What a client generator reads from /openapi.json: servers, security schemes, the CSRF header, 429s."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice.test import Client

import app as app_module
from chalicelib import openapi
from chalicelib.openapi import KEY_SCHEME, SESSION_SCHEME, build_openapi, documented_routes
from chalicelib.settings import Settings

UNSAFE = ("post", "put", "patch", "delete")


def _spec() -> dict[str, Any]:
    with Client(app_module.app) as client:
        response = client.http.get("/openapi.json")
    assert response.status_code == 200
    return dict(json.loads(response.body))


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def _schemes(op: dict[str, Any]) -> set[str]:
    return {name for requirement in op["security"] for name in requirement}


def _csrf(op: dict[str, Any]) -> dict[str, Any] | None:
    return next((p for p in op.get("parameters", []) if p["name"] == "X-CSRF-Token"), None)


def test_servers_come_from_public_base_url(env: Any) -> None:
    env(public_base_url="https://crm.example.com/api")
    assert _spec()["servers"] == [{"url": "https://crm.example.com/api",
                                   "description": "This deployment (PUBLIC_BASE_URL)"}]


def test_security_schemes_are_the_session_cookie_and_a_bearer_api_key() -> None:
    schemes = _spec()["components"]["securitySchemes"]
    assert schemes[SESSION_SCHEME]["type"] == "apiKey" and schemes[SESSION_SCHEME]["in"] == "cookie"
    assert schemes[SESSION_SCHEME]["name"] == "crm_session"
    assert schemes[KEY_SCHEME]["type"] == "http" and schemes[KEY_SCHEME]["scheme"] == "bearer"


def test_the_cookie_scheme_names_the_host_prefixed_cookie_in_prod() -> None:
    prod = Settings.model_construct(stage="prod", public_base_url="https://crm.example.com")
    spec = build_openapi(app_module.app, settings=prod)
    assert spec["components"]["securitySchemes"][SESSION_SCHEME]["name"] == "__Host-crm_session"
    assert spec["servers"][0]["url"] == "https://crm.example.com"


def test_every_operation_states_its_security_and_signed_in_ones_list_401() -> None:
    for path, method, op in _operations(_spec()):
        assert "security" in op, f"{method} {path}"
        if op["security"]:
            assert "401" in op["responses"], f"{method} {path}"


@pytest.mark.parametrize(("path", "method", "schemes"), [
    ("/health", "get", set()), ("/openapi.json", "get", set()), ("/docs", "get", set()),
    ("/docs/{asset}", "get", set()), ("/auth/magic-link", "post", set()), ("/auth/session", "post", set()),
    ("/webhooks/whatsapp/{channel_id}", "post", set()),
    ("/auth/me", "get", {SESSION_SCHEME}), ("/auth/logout", "post", {SESSION_SCHEME}),
    ("/workspaces", "post", {SESSION_SCHEME}), ("/workspaces/{workspace_id}/api-keys", "post", {SESSION_SCHEME}),
    ("/workspaces/{workspace_id}", "get", {SESSION_SCHEME, KEY_SCHEME}),
    ("/workspaces/{workspace_id}/contacts", "post", {SESSION_SCHEME, KEY_SCHEME}),
])
def test_known_routes_list_the_credentials_they_take(path: str, method: str, schemes: set[str]) -> None:
    op = _spec()["paths"][path][method]
    assert _schemes(op) == schemes
    # Either scheme alone suffices: one requirement object per scheme, never both in one.
    assert all(len(requirement) == 1 for requirement in op["security"])


def test_x_csrf_token_is_a_header_of_every_signed_in_write_required_where_only_the_cookie_works() -> None:
    for path, method, op in _operations(_spec()):
        header = _csrf(op)
        if method not in UNSAFE or not op["security"]:
            assert header is None, f"{method} {path}"
            continue
        assert header is not None, f"{method} {path}"
        assert header["in"] == "header" and "bearer" in header["description"].lower()
        assert header["required"] is (KEY_SCHEME not in _schemes(op)), f"{method} {path}"
        assert "403" in op["responses"]


def test_rate_limited_routes_document_429_with_retry_after(env: Any) -> None:
    env(sign_in_attempts_per_ip=7)
    spec = _spec()
    limited = {(path, method) for path, method, op in _operations(spec) if "429" in op["responses"]}
    assert limited == {("/auth/session", "post"), ("/auth/email-change", "post"),
                       ("/workspaces/{workspace_id}/invitations", "post")}
    for path, method in limited:
        answer = spec["paths"][path][method]["responses"]["429"]
        assert "Retry-After" in answer["headers"]
        assert answer["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "More than 7 sign-in attempts" in spec["paths"]["/auth/session"]["post"]["responses"]["429"]["description"]


def test_magic_link_says_a_limited_request_still_answers_202() -> None:
    op = _spec()["paths"]["/auth/magic-link"]["post"]
    assert "429" not in op["responses"] and "202" in op["responses"]
    assert "still answers 202 and sends nothing" in op["description"]


def test_503_answers_document_retry_after() -> None:
    answer = _spec()["paths"]["/health/ready"]["get"]["responses"]["503"]
    assert "Retry-After" in answer["headers"]


def test_every_route_named_by_the_access_tables_exists() -> None:
    served = set(documented_routes(app_module.app))
    named = {*openapi._PUBLIC, *openapi._COOKIE_ONLY,
             *openapi._rate_limits(Settings.model_construct())}
    assert named <= served, sorted(named - served)
