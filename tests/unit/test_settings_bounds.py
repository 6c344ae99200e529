"""Bounds the privacy policy sets on settings, and what prod demands of transport: TLS to the database, HSTS."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.settings import SettingsError, get_settings, load_settings
from tests.unit.test_settings import PROD_IAM, PROD_OK, ROOT

HSTS = "max-age=31536000; includeSubDomains"


def _start_app(**variables: str) -> subprocess.CompletedProcess[str]:
    """`import app` (a cold start) in a fresh local-stage process with these variables set."""
    return subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "STAGE": "local", "DATA_DIR": str(ROOT / ".data" / "bounds"),
                               **variables})


# ---- AUDIT_RETENTION_DAYS <= 365 ---------------------------------------------------------------------------


def test_audit_retention_is_configurable_and_never_more_than_a_year(env: Callable[..., None]) -> None:
    env(audit_retention_days=365)
    assert get_settings().audit_retention_days == 365
    env(audit_retention_days=30)
    assert get_settings().audit_retention_days == 30
    with pytest.raises(SettingsError, match="AUDIT_RETENTION_DAYS"):
        load_settings(audit_retention_days=366)


def test_a_retention_above_a_year_stops_startup_naming_the_variable() -> None:
    result = _start_app(AUDIT_RETENTION_DAYS="366")
    assert result.returncode != 0
    assert "AUDIT_RETENTION_DAYS" in result.stderr


# ---- MAGIC_LINK_TTL_S <= 900 -------------------------------------------------------------------------------


def test_magic_link_lifetime_of_900_s_is_accepted_and_901_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGIC_LINK_TTL_S", "900")
    assert load_settings().magic_link_ttl_s == 900
    monkeypatch.setenv("MAGIC_LINK_TTL_S", "901")
    with pytest.raises(SettingsError, match="MAGIC_LINK_TTL_S"):
        load_settings()


def test_a_download_link_lives_at_most_15_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOWNLOAD_URL_TTL_S", "900")
    assert load_settings().download_url_ttl_s == 900
    monkeypatch.setenv("DOWNLOAD_URL_TTL_S", "901")
    with pytest.raises(SettingsError, match="DOWNLOAD_URL_TTL_S"):
        load_settings()


def test_a_magic_link_lifetime_above_15_minutes_stops_startup_naming_the_variable() -> None:
    result = _start_app(MAGIC_LINK_TTL_S="901")
    assert result.returncode != 0
    assert "MAGIC_LINK_TTL_S" in result.stderr


# ---- prod: every database URL verifies the server ---------------------------------------------------------


@pytest.mark.parametrize("sslmode", [None, "disable", "allow", "prefer", "require", "verify-ca"])
@pytest.mark.parametrize("variable", ["database_url", "jobs_database_url", "migrate_database_url"])
def test_prod_refuses_a_database_url_that_does_not_verify_the_server(variable: str, sslmode: str | None) -> None:
    canary = "db-canary-51c2.internal"
    url = f"postgresql://crm_app:PW-CANARY@{canary}/crm" + (f"?sslmode={sslmode}" if sslmode else "")
    with pytest.raises(SettingsError) as info:
        load_settings(**{**PROD_OK, variable: url})
    message = str(info.value)
    assert f"{variable.upper()} must have sslmode=verify-full" in message
    assert "CANARY" not in message and "canary" not in message


@pytest.mark.parametrize("variable", ["database_url", "jobs_database_url", "migrate_database_url"])
def test_prod_accepts_verify_full_in_url_and_key_value_form(variable: str) -> None:
    for url in ("postgresql://crm_app:pw@db.internal/crm?sslmode=verify-full",
                "host=db.internal dbname=crm user=crm_app sslmode=verify-full sslrootcert=/opt/rds-ca.pem"):
        assert getattr(load_settings(**{**PROD_OK, variable: url}), variable).get_secret_value() == url


def test_prod_refuses_an_unparseable_database_url_without_echoing_it() -> None:
    with pytest.raises(SettingsError, match="MIGRATE_DATABASE_URL is not a valid connection string") as info:
        load_settings(**{**PROD_OK, "migrate_database_url": "SECRET-CANARY oops"})
    assert "CANARY" not in str(info.value)


def test_the_local_stage_keeps_plain_local_connections() -> None:
    url = "postgresql://crm_app@127.0.0.1:5432/crm?sslmode=disable"
    assert load_settings(stage="local", database_url=url, jobs_database_url=url).database_url is not None


def test_prod_with_rds_proxy_and_iam_passes_the_tls_rule() -> None:
    """What infra gives the Lambdas (RDS Proxy, IAM tokens, verify-full) satisfies it; tests/infra check the synth."""
    settings = load_settings(**PROD_IAM)
    assert settings.db_iam_auth and settings.jobs_database_url is not None


# ---- prod: HSTS on every response -------------------------------------------------------------------------


def _prod(env: Callable[..., None]) -> None:
    env(**PROD_OK)


def _answers(client: Client) -> list[Any]:
    """A success, an unknown path, an unauthenticated call, a missing method, a preflight and an oversized body."""
    return [
        client.http.get("/health"),
        client.http.get("/no-such-path"),  # (the test client matches {proxy+} for one segment only)
        client.http.get("/auth/me"),
        client.http.request("PUT", "/auth/me", headers={}, body=b""),
        client.http.request("OPTIONS", "/auth/me", headers={"Origin": "https://crm.example"}, body=b""),
        client.http.post("/auth/magic-link", headers={"Content-Type": "application/json"},
                         body=b"{" + b" " * (get_settings().max_body_bytes + 1) + b"}"),
    ]


def test_prod_sends_hsts_on_every_response_errors_included(env: Callable[..., None]) -> None:
    import app as app_module

    _prod(env)
    with Client(app_module.app) as client:
        answers = _answers(client)
    assert [a.status_code for a in answers] == [200, 404, 401, 405, 204, 413]
    for answer in answers:
        assert answer.headers.get("Strict-Transport-Security") == HSTS, answer.status_code


def test_the_local_stage_sends_no_hsts_over_plain_http(env: Callable[..., None]) -> None:
    import app as app_module

    env(stage="local")
    with Client(app_module.app) as client:
        answers = _answers(client)
    assert all("Strict-Transport-Security" not in a.headers for a in answers)
