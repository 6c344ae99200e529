"""The environment every Lambda of the bundle runs with: chalicelib.settings, filled from the stack."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_secretsmanager as secretsmanager

from crm_infra.data import APP_USER, DATABASE_NAME, JOBS_USER


def dynamic_reference(secret_id: str, *, version_id: str = "") -> str:
    """A CloudFormation dynamic reference (secret ARN or name): resolved at deploy time, never in the template.

    CloudFormation resolves a reference again only when its text changes, so a new secret value reaches
    the functions by naming its version id (README, Deploying).
    """
    return "{{resolve:secretsmanager:" + secret_id + ":SecretString:::" + version_id + "}}"


def database_url(host: str, user: str) -> str:
    """A passwordless libpq conninfo: the password is an IAM token made per connection (DB_IAM_AUTH)."""
    # verify-full: the proxy's certificate must chain to a trusted root and name this host.
    return f"host={host} port=5432 dbname={DATABASE_NAME} user={user} sslmode=verify-full"


@dataclass(frozen=True)
class RuntimeSettings:
    """Inputs from the other constructs; `api()` and `jobs()` give the environment variables."""

    proxy_endpoint: str
    key_arn: str
    bucket_name: str
    queue_url: str
    webhook_queue_url: str
    app_secret: secretsmanager.ISecret
    app_secret_version: str
    sentry_secret_name: str | None
    public_base_url: str
    cors_origins: str
    mail_from: str
    atlas_provider: str = "template"
    atlas_model_id: str = "amazon.nova-lite-v1:0"

    def api(self) -> dict[str, str]:
        """What the API Lambda reads (its database role is crm_app, and it knows no other)."""
        env = {
            "STAGE": "prod",
            "DATABASE_URL": database_url(self.proxy_endpoint, APP_USER),
            "DB_IAM_AUTH": "true",
            "DB_POOL_SIZE": "1",
            "DB_PREPARE_THRESHOLD": "none",
            "MASTER_KEY_SOURCE": "kms",
            "KMS_KEY_ARN": self.key_arn,
            "APP_SECRET_KEY": dynamic_reference(self.app_secret.secret_arn, version_id=self.app_secret_version),
            "PUBLIC_BASE_URL": self.public_base_url,
            "MAIL_BACKEND": "ses",
            "MAIL_FROM": self.mail_from,
            "BLOB_BACKEND": "s3",
            "BLOB_BUCKET": self.bucket_name,
            "QUEUE_BACKEND": "sqs",
            "QUEUE_URL": self.queue_url,
            "WEBHOOK_QUEUE_URL": self.webhook_queue_url,
            "ATLAS_PROVIDER": self.atlas_provider,
            "ATLAS_MODEL_ID": self.atlas_model_id,
            "LOG_LEVEL": "INFO",
        }
        if self.cors_origins:
            env["CORS_ORIGINS"] = self.cors_origins
        return env

    def deploy_time(self) -> dict[str, str]:
        """Variables that only mean something once CloudFormation resolved them: kept out of the Chalice
        stage config, which `chalice package` loads into its own environment to import app.py (Sentry
        would try to parse the unresolved reference as a DSN)."""
        if not self.sentry_secret_name:
            return {}
        return {"SENTRY_DSN": dynamic_reference(self.sentry_secret_name)}

    def jobs(self) -> dict[str, str]:
        """The functions' environment: the API's plus the jobs role (the only one that crosses tenants)."""
        return {**self.api(), **self.deploy_time(),
                "JOBS_DATABASE_URL": database_url(self.proxy_endpoint, JOBS_USER)}
