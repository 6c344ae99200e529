"""logsafe: the one scrubber behind log lines and Sentry events (redaction by key and by value shape)."""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import psycopg.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import logsafe
from chalicelib.logsafe import REDACTED, is_sensitive_key, scrub, scrub_exception, scrub_text

ROOT = Path(__file__).resolve().parents[2]

REQUEST_ID = "0b1f6d2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b"


def canary(kind: str) -> str:
    return f"CANARY-{kind}-{uuid4()}"


def plain_canary(kind: str) -> str:
    """A value no value pattern recognises: only the key can get it redacted."""
    return f"canary {kind} {uuid4().hex[:8]}"


# --- keys -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [
    "first_name", "display_name", "email_address", "x-api-key", "X-Api-Key", "set-cookie", "Set-Cookie",
    "auth_token", "authToken", "session_id", "message_text", "password", "passwd", "secret", "client_secret",
    "token", "api_key", "apiKey", "APIKey", "Authorization", "Cookie", "csrf_token", "X-CSRF-Token", "email",
    "phone", "mobile", "body", "raw_body", "message", "text", "content", "plaintext", "ciphertext",
    "credentials", "private_key", "signature", "X-Twilio-Signature", "dsn", "otp", "code", "magic_token",
    "address", "name", "username", "ip", "client_ip", "ip_address", "AccountSid", "__Host-sid",
])
def test_sensitive_key_is_recognised(key: str) -> None:
    assert is_sensitive_key(key)


@pytest.mark.parametrize("key", [
    "ts", "level", "logger", "msg", "event", "method", "route", "status", "duration_ms", "request_id",
    "exc_type", "count", "table", "tenant_id", "workspace_id", "job", "version", "stage", "tenantId",
])
def test_structured_log_keys_are_never_sensitive(key: str) -> None:
    assert not is_sensitive_key(key)


@pytest.mark.parametrize("key", ["membership_id", "pipeline", "lead_id", "attempt", "batch_size", "inside"])
def test_ordinary_keys_containing_short_fragments_are_not_sensitive(key: str) -> None:
    # "ip" and "sid" only count as whole segments, so "membership", "pipeline" and "inside" survive.
    assert not is_sensitive_key(key)


# --- scrub() on structures --------------------------------------------------------------------------------

def test_sensitive_keys_are_redacted_whatever_the_value_type() -> None:
    out = scrub({"password": 12345, "token": None, "cookie": ["a", "b"], "route": "/x"})
    assert out == {"password": REDACTED, "token": REDACTED, "cookie": REDACTED, "route": "/x"}


def test_nested_dict_under_sensitive_key_is_redacted() -> None:
    secret = plain_canary("session")
    out = scrub({"session": {"id": secret, "nested": {"deeper": secret}}})
    assert out == {"session": REDACTED}


def test_sensitive_keys_deep_inside_nested_dicts_and_lists_are_redacted() -> None:
    email, phone, note = plain_canary("email"), plain_canary("phone"), plain_canary("body")
    value = {"lead": {"id": 7, "contacts": [{"email": email, "role": "buyer"}, {"phone": phone}],
                      "history": ({"body": note},)}}
    out = scrub(value)
    assert out == {"lead": {"id": 7, "contacts": [{"email": REDACTED, "role": "buyer"}, {"phone": REDACTED}],
                            "history": [{"body": REDACTED}]}}


def test_tuples_and_sets_become_lists_with_scrubbed_items() -> None:
    email = f"{uuid4().hex[:8]}@example.com"
    assert scrub((email, 1)) == [REDACTED, 1]
    assert scrub({email}) == [REDACTED]


def test_numbers_booleans_and_none_pass_through_unchanged() -> None:
    assert scrub([0, 12.5, True, None, -3]) == [0, 12.5, True, None, -3]


def test_bytes_are_always_redacted() -> None:
    out = scrub({"payload": b"anything", "other": bytearray(b"x")})
    assert out == {"payload": REDACTED, "other": REDACTED}


def test_strings_inside_structures_are_pattern_scrubbed() -> None:
    email = f"{uuid4().hex[:8]}@example.com"
    out = scrub({"lead_id": 1, "detail": f"sent to {email}"})
    assert out == {"lead_id": 1, "detail": f"sent to {REDACTED}"}


def test_scrub_does_not_mutate_its_input() -> None:
    value: dict[str, Any] = {"email": "a@example.com", "items": [{"token": "t"}, ("x@example.com",)],
                             "ok": {"route": "/r"}}
    before = copy.deepcopy(value)
    scrub(value)
    assert value == before


def test_values_nested_beyond_the_depth_cap_are_redacted() -> None:
    deep: dict[str, Any] = {"leaf": "visible"}
    for _ in range(20):
        deep = {"level_down": deep}
    out = scrub(deep)
    for _ in range(13):
        out = out["level_down"]
    assert out == REDACTED


def test_values_within_the_depth_cap_are_kept() -> None:
    assert scrub({"a": {"b": {"c": {"d": "visible"}}}}) == {"a": {"b": {"c": {"d": "visible"}}}}


def test_keys_holding_personal_data_are_scrubbed_and_non_json_keys_become_strings() -> None:
    email = f"{uuid4().hex[:8]}@example.com"
    out = scrub({email: 1, ("a", 1): 2})
    assert out == {REDACTED: 1, "('a', 1)": 2}


def test_arbitrary_objects_are_rendered_and_scrubbed_by_key_and_pattern() -> None:
    @dataclass
    class Contact:
        name: str
        email: str
        stage: str

    secret_name = plain_canary("name")
    out = scrub(Contact(name=secret_name, email="x@example.com", stage="won"))
    assert secret_name not in out
    assert "x@example.com" not in out
    assert "stage='won'" in out


def test_object_whose_str_raises_is_redacted_instead_of_raising() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert scrub({"thing": Broken()}) == {"thing": REDACTED}


def test_exceptions_inside_structures_are_described_by_scrub_exception() -> None:
    email = f"{uuid4().hex[:8]}@example.com"
    assert scrub({"error": ValueError(f"unknown {email}")}) == {"error": f"ValueError: unknown {REDACTED}"}


def test_counts_under_counts_are_visible_even_keyed_by_sensitive_table_names() -> None:
    counts = {"login_tokens": 2, "sessions": 3, "rate_limits": 1, "failed": False}
    assert scrub({"job": "purge_auth", "counts": counts}) == {"job": "purge_auth", "counts": counts}


def test_a_string_under_a_sensitive_key_of_counts_is_still_redacted() -> None:
    token, other = plain_canary("session"), plain_canary("note")
    out = scrub({"counts": {"sessions": token, "login_tokens": [token], "rows": other, "n": 1}})
    assert out == {"counts": {"sessions": REDACTED, "login_tokens": REDACTED, "rows": other, "n": 1}}


def test_a_count_outside_counts_under_a_sensitive_key_is_still_redacted() -> None:
    # Only `counts` vouches for numbers: elsewhere a number under "code" or "pin" may be the secret itself.
    assert scrub({"sessions": 3, "code": 123456, "nested": {"counts": {"sessions": 3}}}) == {
        "sessions": REDACTED, "code": REDACTED, "nested": {"counts": {"sessions": 3}}}


# --- scrub_text(): value patterns ---------------------------------------------------------------------------

def _hex(n: int) -> str:
    return (uuid4().hex * 3)[:n]


@pytest.mark.parametrize(("template", "secret"), [
    ("contact {} replied", f"{uuid4().hex[:10]}.smith+crm@mail.example.co.uk"),
    ("sms to {} queued", "+14155550123"),
    ("call {} later", "(415) 555-0123"),
    ("call {}.", "415-555-0123"),
    ("office {}", "+44 20 7946 0958"),
    ("dial {}", "415.555.0123"),
    ("jwt {}", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXBhcnQ"),
    ("header Authorization: Bearer {}", "abc.DEF-123_~+/="),
    ("header Authorization: Basic {}", "dXNlcjpwYXNzd29yZA=="),
    ("signing secret {}", f"whsec_{uuid4().hex[:20]}"),
    ("stripe {}", f"sk_live_{uuid4().hex[:24]}"),
    ("stripe {}", f"sk_test_{uuid4().hex[:24]}"),
    ("stripe {}", f"rk_live_{uuid4().hex[:24]}"),
    ("twilio account {}", f"AC{_hex(32)}"),
    ("twilio key {}", f"SK{_hex(32)}"),
    ("twilio message {}", f"SM{_hex(32)}"),
    ("twilio auth token {}", _hex(32)),
    ("sha256 {}", _hex(64)),
    ("session {}", "Xq3vR9mK2pL7wN4tY8bZ1cF6hJ0dS5aG"),  # secrets.token_urlsafe shape
    ("aws key {}", "AKIAIOSFODNN7EXAMPLE"),
], ids=lambda value: value if "{}" in value else "value")  # random values: ids from the template (xdist)
def test_value_pattern_is_redacted(template: str, secret: str) -> None:
    out = scrub_text(template.format(secret))
    assert secret not in out
    assert REDACTED in out


@pytest.mark.parametrize("text", [
    f"request {REQUEST_ID} done",
    REQUEST_ID.upper(),
    "at 2024-05-01T12:34:56.789Z",
    "2024-05-01 12:34:56.123456+00:00",
    "on 2024-05-01 and 01-05-2024",
    "took 12.5 ms",
    "took 1234.5678 ms",
    "status 200, 3 rows, page 2 of 10",
    "/workspaces/{workspace_id}/leads/{lead_id}",
    "sentry-sdk 2.75.0 on python 3.11.7",
    "count=123456789",
    "test_nested_dict_under_sensitive_key_is_redacted",
])
def test_ordinary_values_are_preserved(text: str) -> None:
    assert scrub_text(text) == text


def test_sensitive_query_parameters_are_redacted_and_others_kept() -> None:
    token = plain_canary("token").replace(" ", "")
    out = scrub_text(f"GET /auth/confirm?token={token}&page=2&code=123456")
    assert out == f"GET /auth/confirm?token={REDACTED}&page=2&code={REDACTED}"


def test_sensitive_keys_inside_reprs_and_json_text_are_redacted() -> None:
    name, secret = plain_canary("name"), plain_canary("secret")
    out = scrub_text(f"""{{'name': '{name}', "client_secret": "{secret}", 'stage': 'won'}}""")
    assert name not in out
    assert secret not in out
    assert "'stage': 'won'" in out


def test_credentials_in_connection_urls_are_redacted() -> None:
    password = plain_canary("pw").replace(" ", "")
    out = scrub_text(f"connect postgresql://app_rw:{password}@db.internal:5432/crm failed")
    assert password not in out
    assert "db.internal:5432/crm" in out


def test_postgres_detail_key_values_are_redacted() -> None:
    value = plain_canary("detail")
    out = scrub_text(f"DETAIL:  Key (tenant_id, lower(name))=(1, {value}) already exists.")
    assert value not in out


@pytest.mark.parametrize("text", [
    "GET /x?token=abc#t=def", "{'email': 'a b'}", "Authorization: Bearer abc", "Key (email)=(x) exists",
    "postgresql://u:p@h/db", "a@example.com +14155550123", f"SM{'a' * 32}",
])
def test_scrubbing_twice_changes_nothing_more(text: str) -> None:
    # Log fields are scrubbed by logsafe and again by Sentry's before_send; the second pass must be a no-op.
    once = scrub_text(text)
    assert scrub_text(once) == once


def test_the_word_canary_itself_is_not_special() -> None:
    assert scrub_text("CANARY") == "CANARY"
    assert scrub_text("canary bird") == "canary bird"


def test_hostile_long_lines_do_not_hang_the_scrubber() -> None:
    # Catastrophic regex backtracking would run for hours on these; the child's generous timeout is a hang
    # guard, not a speed target (speed is for bench/).
    code = ("from chalicelib.logsafe import scrub_text\n"
            "for text in ['a' * 200_000 + '@', '1-' * 100_000, 'x=' * 100_000, '\"k\": ' * 50_000,"
            " 'eyJ' + 'a' * 200_000]:\n    scrub_text(text)\nprint('done')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.stdout.strip() == "done", result.stderr[-2000:]


# --- scrub_exception() ------------------------------------------------------------------------------------

def test_psycopg_unique_violation_is_reduced_to_type_and_sqlstate() -> None:
    email = canary("email")
    exc = psycopg.errors.UniqueViolation(
        'duplicate key value violates unique constraint "contacts_tenant_email_key"\n'
        f"DETAIL:  Key (tenant_id, email)=({uuid4()}, {email}) already exists.")
    assert scrub_exception(exc) == "UniqueViolation (23505)"


def test_psycopg_error_without_sqlstate_is_reduced_to_its_type() -> None:
    password = plain_canary("password")
    exc = psycopg.OperationalError(f"connection failed: password={password} host=db")
    assert scrub_exception(exc) == "OperationalError"


def test_psycopg_invalid_text_representation_hides_the_offending_value() -> None:
    value = plain_canary("value")
    exc = psycopg.errors.InvalidTextRepresentation(f'invalid input syntax for type uuid: "{value}"')
    assert scrub_exception(exc) == "InvalidTextRepresentation (22P02)"


def test_other_exceptions_keep_their_type_and_a_scrubbed_message() -> None:
    email = f"{uuid4().hex[:8]}@example.com"
    assert scrub_exception(KeyError("missing")) == "KeyError: 'missing'"
    assert scrub_exception(ValueError(f"no user {email}")) == f"ValueError: no user {REDACTED}"


def test_exception_whose_str_raises_is_still_described() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("boom")

    assert scrub_exception(Weird()) == "Weird: "


def _full_scrub(text: str) -> str:
    for pattern, replacement in logsafe._PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="abcdefklinorstuvwhx0123456789_", min_size=1, max_size=40))
def test_identifier_shortcut_never_skips_a_redaction(text: str) -> None:
    # The shortcut for snake_case identifiers must answer exactly what all the patterns would.
    assert scrub_text(text) == _full_scrub(text)


@pytest.mark.parametrize("text", ["sk_live_abc123", "rk_test_x", "whsec_abc", "a" * 32 + "0",
                                  "deadbeefdeadbeefdeadbeefdeadbeef"])
def test_identifier_like_secrets_still_go_through_every_pattern(text: str) -> None:
    assert scrub_text(text) == _full_scrub(text)
    assert REDACTED in scrub_text(text)
