"""Every bad input gets the right RFC 9457 problem; nothing internal reaches the client."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from chalice import Blueprint, Response
from chalice.test import Client
from pydantic import BaseModel, ConfigDict, Field

from chalicelib.api import create_app
from chalicelib.errors import NotFound
from chalicelib.http import endpoint, json_response, parse_body
from chalicelib.observability import configure_logging

CANARY = f"CANARY-email-{uuid.uuid4()}@example.com"
bp = Blueprint("errors_probe")


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str = Field(min_length=1)


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    size: int
    address: Address | None = None


@endpoint(bp, "/things", "POST", summary="create", request_model=Thing, response_model=Thing, status=201)
def create_thing() -> Response:
    return json_response(parse_body(bp.current_request, Thing), 201)


@endpoint(bp, "/things/{thing_id}", "GET", summary="read")
def read_thing(thing_id: str) -> Response:
    raise NotFound("no such thing")


@endpoint(bp, "/boom", "GET", summary="fails")
def boom() -> Response:
    raise psycopg.errors.UniqueViolation(
        f'duplicate key value violates unique constraint "contacts_email_key" DETAIL: Key (email)=({CANARY})')


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    yield stream
    configure_logging("INFO")


# Built once: Chalice blueprints cannot be registered on a second app (registration consumes
# the route's keyword arguments).
PROBE_APP = create_app("probe", [bp], max_body_bytes=2048, cors_origins=["https://app.example"])


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(PROBE_APP) as c:
        yield c


def _problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.body  # type: ignore[attr-defined]
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["Content-Type"] == "application/problem+json"
    body = json.loads(response.body)  # type: ignore[attr-defined]
    assert body["status"] == status
    assert body["request_id"] == headers["X-Request-Id"]
    assert {"type", "title", "detail"} <= body.keys()
    return body


def _post(client: Client, body: bytes, content_type: str = "application/json") -> object:
    return client.http.post("/things", body=body, headers={"Content-Type": content_type})


def test_valid_body_is_accepted(client: Client) -> None:
    response = _post(client, b'{"name": "a", "size": 2, "address": {"city": "Oslo"}}')
    assert response.status_code == 201  # type: ignore[attr-defined]


def test_malformed_json_is_400(client: Client) -> None:
    _problem(_post(client, b'{"name": '), 400)


def test_non_utf8_body_is_400(client: Client) -> None:
    _problem(_post(client, b'{"name": "\xff"}'), 400)


def test_wrong_content_type_is_415(client: Client) -> None:
    _problem(_post(client, b"name=a", "application/x-www-form-urlencoded"), 415)


def test_body_over_the_limit_is_413(client: Client) -> None:
    _problem(_post(client, b'{"name": "' + b"a" * 4096 + b'", "size": 1}'), 413)


def test_invalid_fields_are_422_with_field_paths(client: Client) -> None:
    body = _problem(_post(client, b'{"name": 5, "size": "big", "address": {"city": ""}}'), 422)
    fields = {e["field"] for e in body["errors"]}  # type: ignore[union-attr]
    assert fields == {"name", "size", "address.city"}


def test_unknown_field_is_422(client: Client) -> None:
    body = _problem(_post(client, b'{"name": "a", "size": 1, "tenant_id": "x"}'), 422)
    assert [e["field"] for e in body["errors"]] == ["tenant_id"]  # type: ignore[union-attr]


def test_validation_errors_never_echo_the_input(client: Client) -> None:
    response = _post(client, json.dumps({"name": "a", "size": CANARY}).encode())
    _problem(response, 422)
    assert CANARY not in response.body.decode()  # type: ignore[attr-defined]


def test_not_found_is_404_problem(client: Client) -> None:
    _problem(client.http.get(f"/things/{uuid.uuid4()}"), 404)


def test_wrong_method_is_405_with_allow(client: Client) -> None:
    response = client.http.delete("/things")
    _problem(response, 405)
    assert response.headers["Allow"] == "POST"


def test_unexpected_error_is_generic_500_without_sql_or_values(client: Client, logs: io.StringIO) -> None:
    response = client.http.get("/boom")
    body = _problem(response, 500)
    text = response.body.decode()
    assert CANARY not in text and "Traceback" not in text and "contacts_email_key" not in text
    assert body["detail"] == "an internal error occurred"
    logged = logs.getvalue()
    assert CANARY not in logged and "Traceback" not in logged
    error_lines = [json.loads(line) for line in logged.splitlines() if '"level":"ERROR"' in line]
    assert error_lines and error_lines[0]["request_id"] == body["request_id"]


def test_every_response_carries_a_request_id_and_one_log_line(client: Client, logs: io.StringIO) -> None:
    ids = set()
    for response in (client.http.get("/things/x"), _post(client, b"{}"), client.http.get("/boom")):
        ids.add(response.headers["X-Request-Id"])  # type: ignore[attr-defined]
    assert len(ids) == 3
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    request_lines = [line for line in lines if line["logger"] == "crm.request"]
    assert {line["request_id"] for line in request_lines} == ids
    assert {line["route"] for line in request_lines} == {"/things/{thing_id}", "/things", "/boom"}
    for line in request_lines:
        assert set(line) == {"ts", "level", "logger", "msg", "method", "route", "status", "duration_ms",
                             "request_id"}


def test_query_string_never_reaches_the_log(client: Client, logs: io.StringIO) -> None:
    client.http.get(f"/things/1?token={CANARY}")
    assert CANARY not in logs.getvalue()


def test_cors_allows_only_listed_origins_with_credentials(client: Client) -> None:
    allowed = client.http.get("/things/1", headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    other = client.http.get("/things/1", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.http.request("OPTIONS", "/things", headers={"Origin": "https://app.example"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST"
