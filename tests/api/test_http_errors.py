"""Every bad input gets the right RFC 9457 problem; nothing internal reaches the client."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from chalice import Blueprint, Response
from chalice.test import Client
from pydantic import BaseModel, ConfigDict, Field

import app as app_module
from chalicelib.api import NOT_FOUND_PATHS, create_app
from chalicelib.errors import BadRequest, NotFound
from chalicelib.http import endpoint, json_response
from chalicelib.inputs import check_json_depth, parse_body
from chalicelib.observability import configure_logging
from tests.api.auth_helpers import ORIGIN, Outbox, body_of, call, create_workspace, fresh_address, sign_in

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


# ---- JSON nesting: bounded before any parser runs ----

DEPTHS = (100, 1000, 100_000)


DOCUMENTED_DEPTH = 64  # README, "HTTP conventions": written out here, not read from the code it checks


def _nested(depth: int, key: str = "email", inner: bytes = b"") -> bytes:
    return f'{{"{key}": '.encode() + b"[" * depth + inner + b"]" * depth + b"}"


def _depth_refused(response: object) -> None:
    body = _problem(response, 400)
    assert f"deeper than {DOCUMENTED_DEPTH} levels" in str(body["detail"])


def test_body_nested_just_within_the_limit_is_parsed(client: Client) -> None:
    # One object around 63 arrays: 64 levels, parsed and then refused as a wrong field (422, not 400).
    _problem(_post(client, _nested(DOCUMENTED_DEPTH - 1, "name")), 422)


def test_body_nested_one_level_deeper_than_the_limit_is_400(client: Client) -> None:
    _depth_refused(_post(client, _nested(DOCUMENTED_DEPTH, "name")))
    _depth_refused(_post(client, _nested(100, "name")))


def test_brackets_inside_strings_do_not_count() -> None:
    check_json_depth(b'{"name": "' + b"[{" * 500 + b'", "size": 1}')
    # An escaped quote does not end the string, an escaped backslash before a quote does.
    check_json_depth(b'{"name": "\\"' + b"[" * 500 + b'", "size": 1}')
    with pytest.raises(BadRequest):
        check_json_depth(b'{"name": "\\\\", "x": ' + b"[" * 500 + b"]" * 500 + b"}")


def test_depth_scan_of_a_crafted_unterminated_string_is_linear() -> None:
    # Quadratic for a backtracking string regex; this scan takes milliseconds (no timing asserted: it
    # returns, and refuses the brackets that follow the unterminated string as nesting).
    with pytest.raises(BadRequest):
        check_json_depth(b"[" * 100 + b'"' + b'\\"' * 400_000)


def test_utf16_json_is_refused_before_the_depth_scan() -> None:
    with pytest.raises(BadRequest, match="UTF-8"):
        check_json_depth(("[" * 100 + "]" * 100).encode("utf-16-le"))


@pytest.mark.parametrize("depth", DEPTHS)
def test_deeply_nested_sign_in_body_is_400_not_500(api: Client, depth: int) -> None:
    _depth_refused(api.http.post("/auth/magic-link", body=_nested(depth),
                                 headers={"Content-Type": "application/json"}))


@pytest.mark.parametrize("depth", DEPTHS)
def test_deeply_nested_body_of_a_signed_in_write_is_400(api: Client, outbox: Outbox, depth: int) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    response = api.http.post("/workspaces", body=_nested(depth, "name"), headers={
        "Content-Type": "application/json", "Cookie": owner.cookie, "X-CSRF-Token": owner.csrf, "Origin": ORIGIN})
    _depth_refused(response)


@pytest.mark.parametrize("depth", DEPTHS)
def test_deeply_nested_webhook_with_a_valid_signature_is_400_not_500(
        api: Client, outbox: Outbox, depth: int) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    secret = "app-secret-" + uuid.uuid4().hex
    channel = call(api, "POST", f"/workspaces/{workspace}/channels", owner, {
        "type": "whatsapp", "phone_number_id": "106540352242922", "access_token": "EAAG" + "x" * 20,
        "app_secret": secret, "verify_token": "verify-me-please"})
    assert channel.status_code == 201, channel.body
    raw = b'{"object": "whatsapp_business_account", "entry": ' + b"[" * depth + b"]" * depth + b"}"
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    _depth_refused(api.http.post(f"/webhooks/whatsapp/{body_of(channel)['id']}", body=raw, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature}))


# ---- unknown paths: a 404 problem, never the gateway's 403 ----

UNKNOWN = ("/", "/favicon.ico", "/nope")
EVERY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@pytest.mark.parametrize("path", UNKNOWN)
def test_unknown_path_is_404_problem_for_every_method(client: Client, path: str) -> None:
    for method in EVERY_METHOD:
        _problem(client.http.request(method, path, body=b"{}", headers={"Content-Type": "application/json"}), 404)
    head = client.http.request("HEAD", path)
    assert head.status_code == 404


@pytest.mark.parametrize("path", UNKNOWN)
def test_unknown_path_of_the_real_app_is_404_problem(path: str) -> None:
    with Client(app_module.app) as real:
        for method in EVERY_METHOD:
            _problem(real.http.request(method, path), 404)


def test_deep_unknown_path_behind_api_gateway_is_404_problem() -> None:
    # API Gateway's greedy /{proxy+} takes any depth (chalice local's matcher, one segment only): the
    # event it sends for /workspaces/x/nothing/here names that resource.
    from chalice.local import LambdaContext, LambdaEventConverter, RouteMatcher

    app = app_module.app
    event = LambdaEventConverter(RouteMatcher(list(app.routes)), app.api.binary_types).create_lambda_event(
        method="GET", path="/nope", headers={"Accept": "application/json"})
    event["requestContext"].update({"path": "/workspaces/x/nothing/here", "requestId": str(uuid.uuid4())})
    event["pathParameters"] = {"proxy": "workspaces/x/nothing/here"}
    answer = app(event, LambdaContext("api_handler", 1024))
    assert answer["statusCode"] == 404
    assert answer["headers"]["Content-Type"] == "application/problem+json"
    assert json.loads(answer["body"])["status"] == 404


def test_catch_all_routes_stay_out_of_the_openapi_document() -> None:
    from chalicelib.openapi import build_openapi, documented_routes

    paths = {path for path, _method in documented_routes(app_module.app)}
    assert not paths & set(NOT_FOUND_PATHS)
    assert not set(build_openapi(app_module.app)["paths"]) & set(NOT_FOUND_PATHS)
