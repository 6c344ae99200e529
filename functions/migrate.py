"""Deploy step: create the database roles if missing and apply pending migrations (a CDK Trigger's Lambda).

    python -m functions.migrate

Signs in as the cluster's master user, read from Secrets Manager (DB_ADMIN_SECRET_ARN: the JSON RDS
generates, with username, password, host, port, dbname; DB_ADMIN_HOST and DB_NAME override the last
two), directly to the cluster (not RDS Proxy), over TLS with sslmode=verify-full (root bundle:
DB_ADMIN_SSLROOTCERT, else one fetched from DB_ADMIN_SSLROOTCERT_URL, else certifi's).
MIGRATE_DATABASE_URL, when set, replaces all of these (tests, `make migrate`-style runs).
Then, as chalicelib.db.migrate's bootstrap does locally: crm_owner (NOLOGIN), crm_app and crm_jobs
(LOGIN, no password: IAM tokens, rds_iam where it exists), their timeouts, the master's right to SET
ROLE crm_owner; then the migrations, as crm_owner. Idempotent. Any failure raises, so the Trigger, and
with it the deploy, fails. Logs and returns versions and counts only.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import ssl
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.db.migrate import Migration, MigrationError, bootstrap, load_migrations, migrate, role_conninfo
from chalicelib.observability import log_event
from chalicelib.settings import Settings, get_settings
from functions.cli import settings_epilog
from functions.common import init_observability

log = logging.getLogger("crm.migrate")
DEFAULT_DBNAME = "crm"
_SECRET_KEYS = ("username", "password")
MIGRATE_SETTINGS = ("MIGRATE_DATABASE_URL", "DB_ADMIN_SECRET_ARN", "DB_ADMIN_HOST", "DB_NAME", "DB_ADMIN_SSLROOTCERT",
                    "DB_ADMIN_SSLROOTCERT_URL", "STAGE", "LOG_LEVEL", "SENTRY_DSN")


class MigrateConfigError(RuntimeError):
    """The function's environment or the admin secret does not say how to reach the cluster."""


def admin_conninfo_from_secret(secret: dict[str, Any], *, host: str | None = None, dbname: str | None = None,
                               sslrootcert: str | None = None) -> str:
    """Connection string of the master user from an RDS-generated secret, over verified TLS."""
    host = host or secret.get("host")
    missing = [key for key in _SECRET_KEYS if not secret.get(key)] + ([] if host else ["host"])
    if missing:
        # Key names only: the secret's values never reach an error message or a log.
        raise MigrateConfigError(f"the admin secret lacks {', '.join(missing)}")
    # verify-full: the master password goes only to a server whose certificate and name are verified (with
    # no bundle given, bootstrap and migrate add certifi's through chalicelib.db.iam.with_default_sslrootcert).
    return make_conninfo(host=str(host), port=str(secret.get("port") or 5432),
                         dbname=str(dbname or secret.get("dbname") or DEFAULT_DBNAME), user=str(secret["username"]),
                         password=str(secret["password"]), sslmode="verify-full", sslrootcert=sslrootcert)


def read_secret(arn: str, *, client: Any | None = None) -> dict[str, Any]:
    """The JSON object stored in a Secrets Manager secret."""
    if client is None:
        import boto3  # lazily: cold start

        client = boto3.client("secretsmanager")
    raw = client.get_secret_value(SecretId=arn).get("SecretString")
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise MigrateConfigError("the admin secret is not a JSON object (expected RDS's username/password/host)")
    return value


MAX_CA_BUNDLE_BYTES = 1_000_000  # AWS's regional bundles are ~10-30 kB


def fetch_ca_bundle(url: str, *, opener: Any | None = None, directory: Path | None = None) -> str:
    """Download a PEM CA bundle over https (verified against certifi) into a file; return its path.

    The cluster's certificate is signed by RDS's own CAs, which no public bundle carries; AWS publishes
    them at truststore.pki.rds.amazonaws.com. The download itself is verified TLS, so what we pin the
    master password's connection to is what AWS serves.
    """
    if not url.startswith("https://"):
        raise MigrateConfigError("DB_ADMIN_SSLROOTCERT_URL must be an https URL")
    if opener is None:
        import certifi  # lazily: cold start

        context = ssl.create_default_context(cafile=certifi.where())
        opener = functools.partial(urllib.request.urlopen, context=context)
    with opener(url, timeout=10) as response:
        pem = response.read(MAX_CA_BUNDLE_BYTES + 1)
    if len(pem) > MAX_CA_BUNDLE_BYTES or b"-----BEGIN CERTIFICATE-----" not in pem:
        raise MigrateConfigError("DB_ADMIN_SSLROOTCERT_URL did not answer with a PEM certificate bundle")
    path = (directory or Path(tempfile.gettempdir())) / f"rds-ca-{hashlib.sha256(pem).hexdigest()[:16]}.pem"
    path.write_bytes(pem)
    return str(path)


def admin_conninfo(settings: Settings) -> str:
    """MIGRATE_DATABASE_URL when set, else the master user's connection from DB_ADMIN_SECRET_ARN."""
    if settings.migrate_database_url is not None:
        return settings.migrate_database_url.get_secret_value()
    if not settings.db_admin_secret_arn:
        raise MigrateConfigError("DB_ADMIN_SECRET_ARN (or MIGRATE_DATABASE_URL) is required")
    sslrootcert = settings.db_admin_sslrootcert
    if sslrootcert is None and settings.db_admin_sslrootcert_url:
        sslrootcert = fetch_ca_bundle(settings.db_admin_sslrootcert_url)
    return admin_conninfo_from_secret(read_secret(settings.db_admin_secret_arn), host=settings.db_admin_host,
                                      dbname=settings.db_name, sslrootcert=sslrootcert)


def run(conninfo: str, *, migrations: list[Migration] | None = None) -> dict[str, Any]:
    """Bootstrap roles and database as the admin in `conninfo`, then apply pending migrations."""
    dbname = str(conninfo_to_dict(conninfo).get("dbname") or DEFAULT_DBNAME)
    # No shared password: on Aurora the runtime roles sign in with IAM tokens, and the master's
    # password must never double as the app's.
    bootstrap(conninfo, dbname, share_admin_password=False)
    known = load_migrations() if migrations is None else migrations
    applied = migrate(role_conninfo(conninfo, dbname=dbname), known)
    log_event(log, "migrations done", applied=len(applied), total=len(known), versions=applied)
    return {"applied": applied, "total": len(known)}


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda (CDK Trigger; the event is ignored): {"applied": [versions], "total": n}, or raises."""
    init_observability()
    return run(admin_conninfo(get_settings()))


def main(argv: list[str] | None = None) -> int:
    """Command line: print the result; exit code 1 when the cluster cannot be reached or a migration fails."""
    argparse.ArgumentParser(prog="python -m functions.migrate", description=__doc__,
                            epilog=settings_epilog(MIGRATE_SETTINGS),
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    try:
        result = handler({}, None)
    except (MigrateConfigError, MigrationError) as exc:
        print(f"migration failed: {exc}", file=sys.stderr)  # our own messages: key names and versions only
        return 1
    except Exception as exc:  # noqa: BLE001 - the command line reports it and exits 1
        # Only the type, as the other staff commands do: a driver's message may quote host and user.
        print(f"migration failed: {type(exc).__name__} (see the log for the SQLSTATE)", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
