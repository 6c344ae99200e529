"""One settings model, read from the environment and validated once at cold start."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Stage = Literal["local", "prod"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
KeySource = Literal["local", "kms"]


class SettingsError(Exception):
    """Raised when the environment does not describe a valid configuration."""


class Settings(BaseSettings):
    """Every knob of the bundle; the README documents each variable (upper-case name)."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", env_parse_none_str="none"
    )

    stage: Stage = "local"
    data_dir: Path = Path(".data")
    # Connection strings (URL or key=value). The API only ever uses database_url (the app role).
    database_url: SecretStr | None = None
    jobs_database_url: SecretStr | None = None
    migrate_database_url: SecretStr | None = None
    # RDS IAM authentication for DATABASE_URL and JOBS_DATABASE_URL: no password in them; every new
    # connection signs in with a fresh 15-minute token (requires sslmode=verify-full).
    db_iam_auth: bool = False
    # functions/migrate.py only: the Secrets Manager secret (RDS's JSON) of the cluster's master user; the
    # host and database when they should not come from it; the CA bundle verifying the cluster's endpoint
    # (signed by the RDS CAs; the default, certifi's bundle, holds RDS Proxy's root but not those).
    db_admin_secret_arn: str | None = None
    db_admin_host: str | None = None
    db_name: str | None = None
    db_admin_sslrootcert: str | None = None
    # The migrate function's CA bundle for the cluster itself (RDS's own CAs, not in certifi), fetched
    # over verified https at deploy time when DB_ADMIN_SSLROOTCERT names no file.
    db_admin_sslrootcert_url: str | None = None
    db_pool_size: int = Field(default=1, ge=1, le=64)
    db_pool_timeout: float = Field(default=5.0, gt=0, le=25)  # well under API Gateway's 29 s
    # Seconds a new connection may take to open (psycopg enforces at least 2).
    db_connect_timeout_s: int = Field(default=5, ge=2, le=20)
    # Client-side budget of one API request's database waits: past it the query is cancelled, then its
    # socket shut down, and the request answers 503. Under API Gateway's 29 s, above the app role's
    # statement_timeout (15 s), so a merely slow statement is stopped by the server first.
    db_request_deadline_s: float = Field(default=20.0, gt=0, le=25)
    # psycopg auto-prepare; "none" disables it (required behind RDS Proxy / PgBouncer).
    db_prepare_threshold: int | None = Field(default=None, ge=0)
    # Unset: http://HOST:PORT in the local stage (where `make run` serves); required (https) in prod.
    public_base_url: str = ""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sentry_dsn: SecretStr | None = None
    log_level: LogLevel = "INFO"
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=6_000_000)  # Lambda sync payload is 6 MB
    master_key_source: KeySource = "local"
    kms_key_arn: str | None = None
    # HMAC key for sign-in tokens, sessions, API keys, CSRF tokens and cursors. Local default: a key
    # file in DATA_DIR created on first run; prod requires it from the environment (>= 32 bytes).
    app_secret_key: SecretStr | None = None
    magic_link_ttl_s: int = Field(default=900, ge=60, le=900)  # <= 15 minutes, by policy
    session_idle_timeout_s: int = Field(default=7 * 86400, ge=300)
    session_absolute_timeout_s: int = Field(default=30 * 86400, ge=3600)
    magic_link_limit_per_email: int = Field(default=5, ge=1)  # per 15 minutes
    magic_link_limit_per_ip: int = Field(default=20, ge=1)  # per 15 minutes
    sign_in_attempts_per_ip: int = Field(default=30, ge=1)  # per 15 minutes
    mail_backend: Literal["outbox", "ses"] = "outbox"
    mail_from: str = "CRM <no-reply@crm.localhost>"
    blob_backend: Literal["local", "s3"] = "local"
    blob_bucket: str | None = None
    # Lifetime of a download link (S3 presigned GET, or the local store's signed /downloads link): a few minutes.
    download_url_ttl_s: int = Field(default=300, ge=30, le=900)
    # Soft-deleted workspaces are hard-deleted after this many days (the policy promises < 7).
    workspace_purge_grace_days: int = Field(default=3, ge=0, le=6)
    # Audit entries are kept at most a year (the policy's bound): a larger value stops startup.
    audit_retention_days: int = Field(default=365, ge=1, le=365)
    queue_backend: Literal["local", "sqs"] = "local"
    queue_url: str | None = None
    # SQS queue of functions/deliver_webhooks.py (outgoing webhooks): a workspace id per commit that stored
    # events. Unset: a dispatcher thread in this process (local); in prod the minute sweep alone delivers.
    webhook_queue_url: str | None = None
    # Atlas's drafting provider: "template" (deterministic, no model, no network) or "bedrock" (Amazon Bedrock's
    # Converse API with atlas_model_id, in the deployment's region).
    atlas_provider: Literal["template", "bedrock"] = "template"
    atlas_model_id: str = Field(default="amazon.nova-lite-v1:0", min_length=1, max_length=200)
    graph_base_url: str = "https://graph.facebook.com/v21.0"
    # SignNow's REST API (sandbox: https://api-eval.signnow.com) and Stripe's; https, except a local fake server
    # that OUTBOUND_ALLOW_HOSTS lets through (tests, `make fakes`).
    signnow_base_url: str = "https://api.signnow.com"
    stripe_api_base: str = "https://api.stripe.com"
    # host:port pairs outbound calls may reach although they are not public (local fake servers only).
    outbound_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_media_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins", "outbound_allow_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            # An allowlist of exact origins: a wildcard would send credentials to anyone.
            if origin == "*" or not origin.startswith(("https://", "http://")) or origin.endswith("/"):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return value

    @field_validator("public_base_url", "signnow_base_url", "stripe_api_base")
    @classmethod
    def _check_base_url(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.field_name == "public_base_url":
            return value  # derived from HOST and PORT below (local stage only)
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError("must be an absolute http(s) URL without query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _derive_public_base_url(self) -> Settings:
        if self.public_base_url or self.stage == "prod":
            # Links in emails and the allowed Origin come from it: prod never guesses them from a bind
            # address, and refuses to start without it (below: "PUBLIC_BASE_URL must be https in prod").
            return self
        # Locally the API is where `make run` serves it, so links and the accepted Origin follow PORT.
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host  # noqa: S104 - a wildcard bind
        self.public_base_url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        return self

    @model_validator(mode="after")
    def _prod_refuses_local_defaults(self) -> Settings:
        if self.stage != "prod":
            return self
        # The prod stage must never silently fall back to the embedded database or a key file on disk.
        if self.database_url is None:
            raise ValueError("DATABASE_URL is required in prod (the embedded database is local-only)")
        if self.master_key_source != "kms" or not self.kms_key_arn:
            raise ValueError("MASTER_KEY_SOURCE=kms and KMS_KEY_ARN are required in prod (no local key file)")
        if not self.public_base_url.startswith("https://"):
            raise ValueError("PUBLIC_BASE_URL must be https in prod")
        if any(o.startswith("http://") for o in self.cors_origins):
            raise ValueError("CORS_ORIGINS must be https origins in prod")
        if self.app_secret_key is None or len(self.app_secret_key.get_secret_value()) < 32:
            raise ValueError("APP_SECRET_KEY (at least 32 characters) is required in prod (no local key file)")
        if self.blob_backend != "s3" or not self.blob_bucket:
            raise ValueError("BLOB_BACKEND=s3 and BLOB_BUCKET are required in prod (DATA_DIR/blobs is local-only)")
        if self.outbound_allow_hosts:
            raise ValueError("OUTBOUND_ALLOW_HOSTS must be empty in prod (it opens the SSRF guard)")
        if not (self.signnow_base_url.startswith("https://") and self.stripe_api_base.startswith("https://")):
            raise ValueError("SIGNNOW_BASE_URL and STRIPE_API_BASE must be https in prod")
        if self.queue_backend != "sqs" or not self.queue_url:
            raise ValueError("QUEUE_BACKEND=sqs and QUEUE_URL are required in prod")
        if self.mail_backend != "ses":
            raise ValueError("MAIL_BACKEND=ses is required in prod (the outbox directory is local-only)")
        from chalicelib.db.iam import verified_tls_problem

        # Every database connection of prod verifies the server's certificate and name (no CA-bundle setting
        # exists for these URLs, so `require` could not verify anything: only verify-full passes).
        for name, secret in (("DATABASE_URL", self.database_url), ("JOBS_DATABASE_URL", self.jobs_database_url),
                             ("MIGRATE_DATABASE_URL", self.migrate_database_url)):
            problem = verified_tls_problem(secret.get_secret_value()) if secret is not None else None
            if problem:
                raise ValueError(f"{name} {problem} in prod")
        return self

    @model_validator(mode="after")
    def _iam_connections_are_verified(self) -> Settings:
        if not self.db_iam_auth:
            return self
        from chalicelib.db.iam import iam_conninfo_problem

        for name, secret in (("DATABASE_URL", self.database_url), ("JOBS_DATABASE_URL", self.jobs_database_url)):
            problem = iam_conninfo_problem(secret.get_secret_value()) if secret is not None else None
            if problem:
                raise ValueError(f"{name} {problem}")
        return self

    @property
    def outbound_allow(self) -> frozenset[str]:
        """OUTBOUND_ALLOW_HOSTS as chalicelib.outbound takes it (`allow=`)."""
        return frozenset(self.outbound_allow_hosts)

    @property
    def uses_embedded_db(self) -> bool:
        """True when no DATABASE_URL is given and the local embedded PostgreSQL is used."""
        return self.database_url is None

    @property
    def public_origin(self) -> str:
        """scheme://host[:port] of PUBLIC_BASE_URL (always an allowed Origin)."""
        scheme, _, rest = self.public_base_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    @property
    def session_cookie_name(self) -> str:
        """`__Host-` prefixed (Secure, Path=/, no Domain) in prod; plain for http on localhost."""
        return "__Host-crm_session" if self.stage == "prod" else "crm_session"

    @property
    def postgres_dir(self) -> Path:
        """Data (and socket) directory of the embedded PostgreSQL."""
        return self.data_dir / "postgres"


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        name = "_".join(str(p) for p in item["loc"]).upper() or "SETTINGS"
        # Never echo the offending value: it may be a secret such as a DSN with a password.
        parts.append(f"{name}: {item['msg']}")
    return "invalid settings: " + "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings from the environment (plus explicit overrides)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, validated once (at cold start)."""
    return load_settings()
