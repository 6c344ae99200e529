"""The real app: liveness, readiness against the app role, and a complete OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from chalice.test import Client

import app as app_module
from chalicelib.api import NOT_FOUND_PATHS, is_fallback_view
from chalicelib.db.pool import Database, use_database
from chalicelib.openapi import UndocumentedRoute, build_openapi, documented_routes


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(app_module.app) as c:
        yield c


def test_health_needs_no_database(client: Client) -> None:
    use_database(Database("host=/nonexistent dbname=none", timeout=0.5), "app")
    try:
        response = client.http.get("/health")
    finally:
        use_database(None, "app")
    assert response.status_code == 200
    assert json.loads(response.body) == {"status": "ok"}


def test_ready_makes_a_round_trip_as_the_app_role(client: Client, app_db: Database) -> None:
    response = client.http.get("/health/ready")
    assert response.status_code == 200, response.body
    with app_db.pool.connection() as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("crm_app",)


def test_ready_is_503_with_retry_after_when_the_database_is_down(client: Client) -> None:
    use_database(Database("host=/nonexistent dbname=none", timeout=0.5), "app")
    try:
        response = client.http.get("/health/ready")
    finally:
        use_database(None, "app")
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Retry-After"]
    assert "nonexistent" not in response.body.decode()


def test_openapi_describes_every_route(client: Client) -> None:
    response = client.http.get("/openapi.json")
    assert response.status_code == 200
    spec = json.loads(response.body)
    assert spec["openapi"].startswith("3.1")
    served = documented_routes(app_module.app)
    assert served, "the app serves no routes?"
    for path, method in served:
        assert method.lower() in spec["paths"].get(path, {}), f"{method} {path} missing from openapi.json"
    assert spec["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Health"}
    assert "Health" in spec["components"]["schemas"]
    assert "Problem" in spec["components"]["schemas"]


def test_every_path_answers_every_method() -> None:
    for path, entries in app_module.app.routes.items():
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            assert method in entries, f"{method} {path} would fall through to the gateway"
        assert path in NOT_FOUND_PATHS or any(not is_fallback_view(e.view_name) for e in entries.values())


def test_a_route_registered_without_endpoint_fails_openapi_generation() -> None:
    from chalice import Blueprint

    from chalicelib.api import create_app

    rogue = Blueprint("rogue")

    @rogue.route("/rogue")
    def rogue_view() -> dict[str, str]:
        return {}

    with pytest.raises(UndocumentedRoute, match="GET /rogue"):
        build_openapi(create_app("rogue", [rogue], max_body_bytes=1024))
