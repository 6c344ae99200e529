"""Sessions: the cookie, token single use and expiry, rotation, timeouts, revocation, email change, CSRF."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from chalice.app import Request
from chalice.test import Client

from chalicelib.auth import sessions
from chalicelib.auth.principal import session_cookie
from chalicelib.settings import load_settings
from tests.api.auth_helpers import (
    ORIGIN,
    Browser,
    Outbox,
    body_of,
    call,
    cookie_pair,
    post_json,
    problem,
    request_link,
    session_from,
    sign_in,
    sign_in_with_token,
)
from tests.conftest import TestDatabase
from tests.unit.test_settings import PROD_OK

T0 = datetime(2030, 1, 7, 12, 3, tzinfo=UTC)


def _without_request_id(response: Any) -> dict[str, Any]:
    payload = problem(response, 400)
    payload.pop("request_id")
    return payload


def _me(api: Client, browser: Browser) -> Any:
    return call(api, "GET", "/auth/me", browser)


# ---- the cookie ---------------------------------------------------------------------------------


def test_prod_cookie_is_host_prefixed_secure_httponly_lax_without_domain() -> None:
    settings = load_settings(**PROD_OK)
    cookie = sessions.set_cookie("opaque-value", settings)
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0] == "__Host-crm_session=opaque-value"
    assert {"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} <= set(parts)
    assert not any(p.lower().startswith("domain") for p in parts)
    max_age = int(next(p for p in parts if p.startswith("Max-Age=")).split("=")[1])
    assert 0 < max_age <= settings.session_absolute_timeout_s
    cleared = [p.strip() for p in sessions.clear_cookie(settings).split(";")]
    assert cleared[0] == "__Host-crm_session=" and "Secure" in cleared and "Max-Age=0" in cleared


def _request_with_cookie(cookie: str) -> Request:
    return Request({"multiValueQueryStringParameters": None, "headers": {"cookie": cookie},
                    "pathParameters": None, "body": None, "stageVariables": None,
                    "requestContext": {"httpMethod": "GET", "resourcePath": "/auth/me"}})


def test_prod_reads_only_the_host_prefixed_cookie() -> None:
    """A sibling subdomain can plant `crm_session` (Domain=...), never `__Host-crm_session`."""
    prod = load_settings(**PROD_OK)
    tossed = _request_with_cookie("crm_session=planted; __Host-crm_session=real")
    assert session_cookie(tossed, prod) == "real"
    assert session_cookie(_request_with_cookie("crm_session=planted"), prod) is None
    assert session_cookie(_request_with_cookie("__host-crm_session=planted"), prod) is None
    assert session_cookie(_request_with_cookie("__Host-crm_session=real"), load_settings(stage="local")) is None


def test_local_cookie_is_plain_httponly_lax_without_secure() -> None:
    settings = load_settings(stage="local")
    parts = [p.strip() for p in sessions.set_cookie("v", settings).split(";")]
    assert parts[0] == "crm_session=v"
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(parts)
    assert "Secure" not in parts


def test_session_ids_are_stored_only_as_hashes(api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    browser = sign_in(api, "hashed@example.test", outbox)
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT token_hash FROM sessions").fetchall()
    assert len(rows) == 1
    stored = bytes(rows[0][0])
    assert browser.cookie_value.encode() not in stored and len(stored) == 32


# ---- tokens: single use, expiry, binding --------------------------------------------------------


def test_invalid_expired_and_used_tokens_get_the_same_400(api: Client, outbox: Outbox) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        request_link(api, "used@example.test")
        used = outbox.newest().token
        assert sign_in_with_token(api, used).status_code == 200
        request_link(api, "expired@example.test")
        expired = outbox.newest().token
        traveller.shift(timedelta(minutes=16))
        answers = [
            _without_request_id(sign_in_with_token(api, "A" * 43)),
            _without_request_id(sign_in_with_token(api, expired)),
            _without_request_id(sign_in_with_token(api, used)),
        ]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["detail"] == "this link or code is invalid or has expired"


def test_token_works_at_14_59_and_not_at_15_01(api: Client, outbox: Outbox) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        request_link(api, "early@example.test")
        early = outbox.newest().token
        request_link(api, "late@example.test")
        late = outbox.newest().token
        traveller.shift(timedelta(minutes=14, seconds=59))
        assert sign_in_with_token(api, early).status_code == 200
        traveller.shift(timedelta(seconds=2))
        problem(sign_in_with_token(api, late), 400)


def test_code_expires_with_its_link(api: Client, outbox: Outbox) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        request_link(api, "slow-typist@example.test")
        code = outbox.newest().code
        traveller.shift(timedelta(minutes=15, seconds=1))
        problem(post_json(api, "/auth/session", {"email": "slow-typist@example.test", "code": code}), 400)


def test_token_replay_after_logout_fails(api: Client, outbox: Outbox) -> None:
    request_link(api, "replay@example.test")
    token = outbox.newest().token
    browser = session_from(sign_in_with_token(api, token))
    assert call(api, "POST", "/auth/logout", browser).status_code == 204
    problem(sign_in_with_token(api, token), 400)


def test_email_change_token_cannot_sign_in(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "binder@example.test", outbox)
    assert call(api, "POST", "/auth/email-change", browser, {"new_email": "bound@example.test"}).status_code == 202
    change = outbox.newest(to="bound@example.test")
    assert "code" not in change.text  # confirmed by its link only
    problem(sign_in_with_token(api, change.token), 400)
    # Not burnt by the attempt: it still confirms the change it was issued for.
    confirmed = call(api, "POST", "/auth/email-change/confirm", browser, {"token": change.token})
    assert confirmed.status_code == 200


def test_sign_in_token_cannot_confirm_an_email_change(api: Client, outbox: Outbox) -> None:
    request_link(api, "login-only@example.test")
    token = outbox.newest().token
    problem(post_json(api, "/auth/email-change/confirm", {"token": token}), 400)
    assert sign_in_with_token(api, token).status_code == 200


def test_a_newer_link_does_not_revoke_an_older_unexpired_one(api: Client, outbox: Outbox) -> None:
    request_link(api, "twice@example.test")
    older = outbox.newest()
    request_link(api, "twice@example.test")
    newer = outbox.newest()
    assert older.token != newer.token and older.code != newer.code
    assert sign_in_with_token(api, older.token).status_code == 200
    assert sign_in_with_token(api, newer.token).status_code == 200


# ---- rotation, timeouts, revocation -------------------------------------------------------------


def test_every_sign_in_gets_a_new_session_id_and_ends_the_browsers_old_one(api: Client, outbox: Outbox) -> None:
    first = sign_in(api, "rotate@example.test", outbox)
    second = sign_in(api, "rotate@example.test", outbox, headers={"Cookie": first.cookie})
    assert second.cookie_value != first.cookie_value
    assert second.csrf != first.csrf
    problem(_me(api, first), 401)
    assert _me(api, second).status_code == 200


def test_signing_in_as_someone_else_ends_the_browsers_old_session(api: Client, outbox: Outbox) -> None:
    first = sign_in(api, "first-user@example.test", outbox)
    second = sign_in(api, "second-user@example.test", outbox, headers={"Cookie": first.cookie})
    problem(_me(api, first), 401)
    assert body_of(_me(api, second))["user"]["email"] == "second-user@example.test"


def test_two_browsers_hold_independent_sessions(api: Client, outbox: Outbox) -> None:
    laptop = sign_in(api, "two-devices@example.test", outbox)
    phone = sign_in(api, "two-devices@example.test", outbox)
    assert _me(api, laptop).status_code == 200 and _me(api, phone).status_code == 200


def test_idle_timeout_ends_an_unused_session(api: Client, outbox: Outbox) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        browser = sign_in(api, "idle@example.test", outbox)
        traveller.shift(timedelta(days=6, hours=23))
        assert _me(api, browser).status_code == 200  # activity moves the idle deadline
        traveller.shift(timedelta(days=6, hours=23))
        assert _me(api, browser).status_code == 200
        traveller.shift(timedelta(days=7, minutes=1))
        problem(_me(api, browser), 401)


def test_absolute_timeout_ends_even_an_active_session(api: Client, outbox: Outbox) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        browser = sign_in(api, "active@example.test", outbox)
        for _ in range(4):  # 24 days of daily use
            traveller.shift(timedelta(days=6))
            assert _me(api, browser).status_code == 200
        traveller.shift(timedelta(days=5, hours=23))
        assert _me(api, browser).status_code == 200
        traveller.shift(timedelta(hours=2))  # 30 days and 1 hour after sign-in
        problem(_me(api, browser), 401)


def test_timeouts_are_configurable(api: Client, outbox: Outbox, env: Any) -> None:
    env(session_idle_timeout_s=600, session_absolute_timeout_s=3600)
    with time_machine.travel(T0, tick=False) as traveller:
        browser = sign_in(api, "short@example.test", outbox)
        traveller.shift(timedelta(seconds=599))
        assert _me(api, browser).status_code == 200
        traveller.shift(timedelta(seconds=601))
        problem(_me(api, browser), 401)


def test_logout_answers_204_clears_the_cookie_and_the_old_cookie_gets_401(api: Client, outbox: Outbox,
                                                                          fresh_db: TestDatabase) -> None:
    browser = sign_in(api, "leaver@example.test", outbox)
    response = call(api, "POST", "/auth/logout", browser)
    assert response.status_code == 204
    name, value = cookie_pair(response.headers["Set-Cookie"])
    assert (name, value) == ("crm_session", "")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    problem(_me(api, browser), 401)
    problem(call(api, "POST", "/auth/logout", browser), 401)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM sessions WHERE revoked_at IS NULL").fetchone() == (0,)


def test_logout_all_revokes_every_session_of_the_user_only(api: Client, outbox: Outbox,
                                                           fresh_db: TestDatabase) -> None:
    laptop = sign_in(api, "everywhere@example.test", outbox)
    phone = sign_in(api, "everywhere@example.test", outbox)
    bystander = sign_in(api, "bystander@example.test", outbox)
    response = call(api, "POST", "/auth/logout-all", phone)
    assert response.status_code == 204
    assert cookie_pair(response.headers["Set-Cookie"]) == ("crm_session", "")
    problem(_me(api, laptop), 401)
    problem(_me(api, phone), 401)
    assert _me(api, bystander).status_code == 200
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT details FROM account_audit_log WHERE action = 'sessions.revoked_all'").fetchall()
    assert rows == [({"count": 2},)]


# ---- /auth/me and /auth/sessions ----------------------------------------------------------------


def test_me_requires_a_session(api: Client) -> None:
    problem(api.http.get("/auth/me"), 401)
    problem(api.http.get("/auth/me", headers={"Cookie": "crm_session=" + "x" * 43}), 401)
    problem(api.http.get("/auth/me", headers={"Cookie": "garbage;;=="}), 401)


def test_get_and_patch_me(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "named@example.test", outbox)
    me = body_of(_me(api, browser))
    assert me["user"]["email"] == "named@example.test" and me["user"]["display_name"] is None
    assert me["csrf_token"] == browser.csrf and me["workspaces"] == []
    patched = call(api, "PATCH", "/auth/me", browser, {"display_name": "Ada L."})
    assert patched.status_code == 200
    assert body_of(patched)["display_name"] == "Ada L."
    assert body_of(_me(api, browser))["user"]["display_name"] == "Ada L."
    problem(call(api, "PATCH", "/auth/me", browser, {"display_name": "x" * 101}), 422)
    problem(call(api, "PATCH", "/auth/me", browser, {"email": "new@example.test"}), 422)
    cleared = call(api, "PATCH", "/auth/me", browser, {"display_name": ""})
    assert body_of(cleared)["display_name"] is None


def test_sessions_list_shows_created_last_seen_ip_agent_and_current(api: Client, outbox: Outbox) -> None:
    laptop = sign_in(api, "lister@example.test", outbox, headers={"User-Agent": "Laptop/1"})
    phone = sign_in(api, "lister@example.test", outbox, headers={"User-Agent": "Phone/2"})
    response = call(api, "GET", "/auth/sessions", laptop)
    assert response.status_code == 200
    data = body_of(response)["data"]
    assert len(data) == 2
    by_agent = {s["user_agent"]: s for s in data}
    assert by_agent["Laptop/1"]["current"] is True and by_agent["Phone/2"]["current"] is False
    for entry in data:
        assert entry["ip"] == "127.0.0.1" and entry["created_at"] and entry["last_seen_at"]
        assert set(entry) == {"id", "created_at", "last_seen_at", "ip", "user_agent", "current"}
    assert laptop.cookie_value not in response.body.decode()
    assert phone.cookie_value not in response.body.decode()


def test_delete_one_of_my_sessions_revokes_it_at_once(api: Client, outbox: Outbox,
                                                       fresh_db: TestDatabase) -> None:
    laptop = sign_in(api, "pruner@example.test", outbox, headers={"User-Agent": "Laptop/1"})
    phone = sign_in(api, "pruner@example.test", outbox, headers={"User-Agent": "Phone/2"})
    data = body_of(call(api, "GET", "/auth/sessions", laptop))["data"]
    phone_id = next(s["id"] for s in data if s["user_agent"] == "Phone/2")
    assert call(api, "DELETE", f"/auth/sessions/{phone_id}", laptop).status_code == 204
    problem(_me(api, phone), 401)
    assert _me(api, laptop).status_code == 200
    problem(call(api, "DELETE", f"/auth/sessions/{phone_id}", laptop), 404)
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT action, user_id::text FROM account_audit_log WHERE action = 'session.revoked'"
                            ).fetchall()
    assert rows == [("session.revoked", laptop.user_id)]


def test_delete_another_users_session_is_404(api: Client, outbox: Outbox) -> None:
    victim = sign_in(api, "victim@example.test", outbox)
    attacker = sign_in(api, "attacker@example.test", outbox)
    victim_session = body_of(call(api, "GET", "/auth/sessions", victim))["data"][0]["id"]
    problem(call(api, "DELETE", f"/auth/sessions/{victim_session}", attacker), 404)
    problem(call(api, "DELETE", f"/auth/sessions/{uuid.uuid4()}", attacker), 404)
    problem(call(api, "DELETE", "/auth/sessions/not-a-uuid", attacker), 404)
    assert _me(api, victim).status_code == 200


# ---- email change -------------------------------------------------------------------------------


def test_email_change_confirms_from_the_new_address_and_notifies_the_old(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    here = sign_in(api, "old@example.test", outbox)
    elsewhere = sign_in(api, "old@example.test", outbox)
    response = call(api, "POST", "/auth/email-change", here, {"new_email": "New@Example.test"})
    assert response.status_code == 202 and body_of(response) == {"status": "sent"}
    confirm = outbox.newest(to="new@example.test")
    notice = outbox.newest(to="old@example.test")
    assert "#token=" in confirm.text and "purpose=email_change" in confirm.text
    assert "#token=" not in notice.text and "change" in notice.subject
    # Nothing changes before the confirmation.
    assert body_of(_me(api, here))["user"]["email"] == "old@example.test"

    confirmed = call(api, "POST", "/auth/email-change/confirm", here, {"token": confirm.token})
    assert confirmed.status_code == 200
    assert body_of(confirmed)["email"] == "new@example.test"
    assert body_of(_me(api, here))["user"]["email"] == "new@example.test"
    problem(_me(api, elsewhere), 401)  # every other session is revoked
    problem(call(api, "POST", "/auth/email-change/confirm", here, {"token": confirm.token}), 400)
    with fresh_db.admin() as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM account_audit_log").fetchall()]
    assert "email.change_requested" in actions and "email.changed" in actions

    # The old address no longer reaches the account: it would be a new, empty one.
    via_old = sign_in(api, "old@example.test", outbox)
    assert via_old.user_id != here.user_id
    via_new = sign_in(api, "new@example.test", outbox)
    assert via_new.user_id == here.user_id


def test_email_change_confirmed_from_another_browser_revokes_every_session(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "mover@example.test", outbox)
    call(api, "POST", "/auth/email-change", browser, {"new_email": "moved@example.test"})
    token = outbox.newest(to="moved@example.test").token
    confirmed = post_json(api, "/auth/email-change/confirm", {"token": token}, {"Origin": ORIGIN})
    assert confirmed.status_code == 200
    problem(_me(api, browser), 401)


def test_email_change_to_an_address_of_another_account_is_409_and_changes_nothing(
        api: Client, outbox: Outbox) -> None:
    sign_in(api, "taken@example.test", outbox)
    browser = sign_in(api, "wants-it@example.test", outbox)
    call(api, "POST", "/auth/email-change", browser, {"new_email": "taken@example.test"})
    token = outbox.newest(to="taken@example.test").token
    problem(call(api, "POST", "/auth/email-change/confirm", browser, {"token": token}), 409)
    assert body_of(_me(api, browser))["user"]["email"] == "wants-it@example.test"


def test_email_change_needs_a_session_and_a_plain_address(api: Client, outbox: Outbox) -> None:
    problem(post_json(api, "/auth/email-change", {"new_email": "x@example.test"}, {"Origin": ORIGIN}), 401)
    browser = sign_in(api, "plain@example.test", outbox)
    body = problem(call(api, "POST", "/auth/email-change", browser, {"new_email": "a@x.test,b@y.test"}), 400)
    assert [e["field"] for e in body["errors"]] == ["new_email"]


# ---- CSRF ---------------------------------------------------------------------------------------


def test_cookie_write_without_csrf_token_is_403(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "csrf1@example.test", outbox)
    problem(call(api, "PATCH", "/auth/me", browser, {"display_name": "x"}, csrf=None), 403)
    problem(call(api, "POST", "/workspaces", browser, {"name": "x"}, csrf=None), 403)
    problem(call(api, "POST", "/auth/logout", browser, csrf=None), 403)
    assert _me(api, browser).status_code == 200  # the refused logout did nothing


def test_cookie_write_with_a_wrong_csrf_token_is_403(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "csrf2@example.test", outbox)
    other = sign_in(api, "csrf2-other@example.test", outbox)
    for wrong in ("wrong", other.csrf, browser.csrf[:-1], browser.csrf + "A", browser.cookie_value):
        problem(call(api, "PATCH", "/auth/me", browser, {"display_name": "x"}, csrf=wrong), 403)


def test_cookie_write_without_origin_or_referer_is_403(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "csrf3@example.test", outbox)
    problem(call(api, "PATCH", "/auth/me", browser, {"display_name": "x"}, origin=None), 403)


def test_cookie_write_from_a_cross_origin_is_403(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "csrf4@example.test", outbox)
    for origin in ("https://evil.test", "null", "http://127.0.0.1:8000.evil.test", "http://127.0.0.1:8001",
                   "https://127.0.0.1:8000", "http://localhost:8000"):
        problem(call(api, "PATCH", "/auth/me", browser, {"display_name": "x"}, origin=origin), 403)
    problem(call(api, "PATCH", "/auth/me", browser, {"display_name": "x"}, origin=None,
                 headers={"Referer": "https://evil.test/http://127.0.0.1:8000/"}), 403)
    problem(call(api, "PATCH", "/auth/me", browser, {"display_name": "x"}, origin=None,
                 headers={"Referer": "http://127.0.0.1:8000@evil.test/"}), 403)


def test_cookie_write_with_an_allowed_referer_and_no_origin_is_accepted(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "csrf5@example.test", outbox)
    response = call(api, "PATCH", "/auth/me", browser, {"display_name": "ok"}, origin=None,
                    headers={"Referer": ORIGIN + "/settings?tab=profile"})
    assert response.status_code == 200


def test_cookie_reads_need_no_csrf_token(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "reader@example.test", outbox)
    assert call(api, "GET", "/auth/me", browser, origin=None, csrf=None).status_code == 200


def test_cors_reflects_only_configured_origins(api: Client) -> None:
    for origin in ("https://evil.test", "null", ORIGIN + ".evil.test"):
        response = api.http.get("/auth/confirm", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in response.headers
        preflight = api.http.request("OPTIONS", "/auth/me", headers={
            "Origin": origin, "Access-Control-Request-Method": "PATCH"})
        assert "Access-Control-Allow-Origin" not in preflight.headers
        assert "Access-Control-Allow-Headers" not in preflight.headers


def test_other_cookies_on_the_host_do_not_hide_the_session(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "crowded-jar@example.test", outbox)
    ours = browser.cookie
    for jar in (f'theme={{"dark":true}}; {ours}', f"pref=a b; {ours}", f'x="unterminated; {ours}',
                f"legacy=caf\u00e9; {ours}", f"path=C:\\\\tmp; {ours}", f"a@b=1; {ours}", f"{ours}; junk",
                f"_ga=GA1.1.1.2;{ours};other=1"):
        response = call(api, "GET", "/auth/me", browser, headers={"Cookie": jar})
        assert response.status_code == 200, jar


def test_a_cookie_with_a_similar_name_is_not_the_session(api: Client, outbox: Outbox) -> None:
    browser = sign_in(api, "lookalike@example.test", outbox)
    value = browser.cookie_value
    for jar in (f"xcrm_session={value}", f"crm_session_old={value}", f"CRM_SESSION={value}", "crm_session="):
        problem(call(api, "GET", "/auth/me", browser, headers={"Cookie": jar}), 401)


def test_the_only_cookie_ever_set_is_the_first_party_session_cookie(api: Client, outbox: Outbox) -> None:
    """Privacy policy, "Cookies": a single first-party session cookie, nothing else."""
    names: set[str] = set()

    def note(response: Any) -> Any:
        header = response.headers.get("Set-Cookie")
        if header:
            names.add(cookie_pair(header)[0])
            assert "domain=" not in header.lower()
        return response

    note(api.http.get("/auth/confirm"))
    note(request_link(api, "cookies@example.test"))
    browser = session_from(note(sign_in_with_token(api, outbox.newest().token)))
    workspace = body_of(note(call(api, "POST", "/workspaces", browser, {"name": "C"})))["id"]
    note(call(api, "GET", f"/workspaces/{workspace}", browser))
    note(call(api, "GET", "/auth/me", browser))
    note(call(api, "POST", "/auth/logout", browser))
    assert names == {"crm_session"}


def test_a_nul_byte_in_the_user_agent_is_not_a_server_error(api: Client, outbox: Outbox,
                                                           fresh_db: TestDatabase) -> None:
    agent = {"User-Agent": "Evil\x00Agent/1.0"}
    assert request_link(api, "nul@example.test", headers=agent).status_code == 202
    browser = session_from(sign_in_with_token(api, outbox.newest().token, agent))
    assert call(api, "GET", "/auth/me", browser, headers=agent).status_code == 200
    long_agent = {"User-Agent": "A" * 5000}
    assert call(api, "PATCH", "/auth/me", browser, {"display_name": "n"}, headers=long_agent).status_code == 200
    with fresh_db.admin() as conn:
        agents = {r[0] for r in conn.execute("SELECT user_agent FROM sessions").fetchall()}
    assert agents == {"EvilAgent/1.0"}


def test_the_client_ip_comes_from_the_gateway_not_from_forwarded_headers(api: Client, outbox: Outbox,
                                                                         env: Any) -> None:
    env(sign_in_attempts_per_ip=2)
    with time_machine.travel(T0, tick=False):
        for index in range(2):
            spoofed = {"X-Forwarded-For": f"203.0.113.{index}", "X-Real-Ip": f"198.51.100.{index}"}
            problem(post_json(api, "/auth/session", {"token": "q" * 43}, spoofed), 400)
        problem(post_json(api, "/auth/session", {"token": "q" * 43}, {"X-Forwarded-For": "192.0.2.77"}), 429)
