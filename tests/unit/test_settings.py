"""Settings: validated once, errors name the variable, prod refuses local-only defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
PROD_OK = {"stage": "prod", "database_url": "postgresql://crm_app@db/crm?sslmode=verify-full",
           "master_key_source": "kms", "kms_key_arn": "arn:aws:kms:eu-west-1:111122223333:key/abc",
           "public_base_url": "https://crm.example",
           "app_secret_key": "k" * 40, "mail_backend": "ses", "blob_backend": "s3", "blob_bucket": "crm-blobs",
           "queue_backend": "sqs", "queue_url": "https://sqs.eu-west-1.amazonaws.com/111122223333/inbound"}


def test_local_defaults_use_the_embedded_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)
    settings = load_settings(stage="local")
    assert settings.uses_embedded_db
    assert settings.postgres_dir == Path(".data") / "postgres"
    assert settings.db_prepare_threshold is None
    assert settings.port == 8000


def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", "zero")
    with pytest.raises(SettingsError, match="DB_POOL_SIZE"):
        load_settings()


def test_error_message_never_echoes_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "ftp://CANARY-secret")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "PUBLIC_BASE_URL" in str(info.value)
    assert "CANARY" not in str(info.value)


@pytest.mark.parametrize(("drop", "message"), [
    ("database_url", "DATABASE_URL is required"),
    ("kms_key_arn", "KMS_KEY_ARN"),
])
def test_prod_refuses_local_only_defaults(drop: str, message: str) -> None:
    values = {k: v for k, v in PROD_OK.items() if k != drop}
    with pytest.raises(SettingsError, match=message):
        load_settings(**values)


def test_prod_refuses_a_local_key_file_and_plain_http() -> None:
    with pytest.raises(SettingsError, match="MASTER_KEY_SOURCE"):
        load_settings(**{**PROD_OK, "master_key_source": "local"})
    with pytest.raises(SettingsError, match="https"):
        load_settings(**{**PROD_OK, "public_base_url": "http://crm.example"})


def test_provider_bases_are_https_in_prod_and_plain_urls_everywhere() -> None:
    for name in ("signnow_base_url", "stripe_api_base"):
        with pytest.raises(SettingsError, match="SIGNNOW_BASE_URL and STRIPE_API_BASE must be https"):
            load_settings(**{**PROD_OK, name: "http://127.0.0.1:8025/fake"})
        with pytest.raises(SettingsError, match=name.upper()):
            load_settings(**{name: "ftp://api.example"})
        with pytest.raises(SettingsError, match=name.upper()):
            load_settings(**{name: "https://api.example/?x=1"})
    local = load_settings(signnow_base_url="http://127.0.0.1:8025/signnow/", stripe_api_base="https://api.stripe.com")
    assert local.signnow_base_url == "http://127.0.0.1:8025/signnow"  # the outbound guard still refuses it
    # unless OUTBOUND_ALLOW_HOSTS names 127.0.0.1:8025 (tests, `make fakes`)


def test_valid_prod_settings_load() -> None:
    settings = load_settings(**PROD_OK)
    assert not settings.uses_embedded_db


def test_cors_origins_are_an_exact_comma_separated_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    assert load_settings().cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("CORS_ORIGINS", "*")
    with pytest.raises(SettingsError, match="CORS_ORIGINS"):
        load_settings()


def test_prepare_threshold_none_disables_prepared_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PREPARE_THRESHOLD", "none")
    assert load_settings().db_prepare_threshold is None
    monkeypatch.setenv("DB_PREPARE_THRESHOLD", "5")
    assert load_settings().db_prepare_threshold == 5


def test_app_refuses_to_start_on_invalid_settings() -> None:
    result = subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "STAGE": "prod"}, timeout=60)
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


# --- RDS IAM authentication ------------------------------------------------------------------------------

PROXY = "host=crm.proxy-abc.eu-west-1.rds.amazonaws.com port=5432 dbname=crm"
PROD_IAM = {**PROD_OK, "db_iam_auth": True, "database_url": f"{PROXY} user=crm_app sslmode=verify-full",
            "jobs_database_url": f"{PROXY} user=crm_jobs sslmode=verify-full"}


def test_iam_auth_is_off_by_default_and_prod_with_iam_and_verify_full_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().db_iam_auth is False
    assert load_settings(**PROD_IAM).db_iam_auth is True
    monkeypatch.setenv("DB_IAM_AUTH", "true")
    monkeypatch.setenv("DATABASE_URL", PROD_IAM["database_url"])
    assert load_settings().db_iam_auth is True


@pytest.mark.parametrize("sslmode", ["require", "verify-ca", "prefer", "disable"])
@pytest.mark.parametrize("variable", ["database_url", "jobs_database_url"])
def test_prod_refuses_iam_without_verify_full_naming_the_variable_not_the_value(variable: str, sslmode: str) -> None:
    canary = "crm-canary-7f3a.proxy-abc.eu-west-1.rds.amazonaws.com"
    with pytest.raises(SettingsError) as info:
        load_settings(**{**PROD_IAM, variable: f"host={canary} user=crm_app sslmode={sslmode}"})
    message = str(info.value)
    assert variable.upper() in message and "verify-full" in message
    assert "canary" not in message


def test_iam_refuses_a_password_in_the_connection_string_without_echoing_it() -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL must not carry a password") as info:
        load_settings(**{**PROD_IAM, "database_url": "postgresql://crm_app:PW-CANARY@proxy/crm?sslmode=verify-full"})
    assert "CANARY" not in str(info.value)


def test_iam_refuses_an_unparseable_connection_string_without_echoing_it() -> None:
    with pytest.raises(SettingsError, match="JOBS_DATABASE_URL is not a valid connection string") as info:
        load_settings(**{**PROD_IAM, "jobs_database_url": "SECRET-CANARY oops"})
    assert "CANARY" not in str(info.value)


def test_without_iam_a_password_url_that_verifies_the_server_still_loads_in_prod() -> None:
    url = "postgresql://crm_app:pw@db.internal/crm?sslmode=verify-full"
    settings = load_settings(**{**PROD_OK, "database_url": url})
    assert settings.db_iam_auth is False


def test_iam_is_checked_in_every_stage() -> None:
    with pytest.raises(SettingsError, match="verify-full"):
        load_settings(stage="local", db_iam_auth=True, database_url=f"{PROXY} user=crm_app sslmode=require")
