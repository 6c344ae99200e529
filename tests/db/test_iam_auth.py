"""IAM authentication: a fresh token per NEW connection (never reused, never logged), verified TLS roots.

Runs on a private cluster that checks passwords (the shared test server trusts every local login), so a
connection only opens when the token source's answer really is the role's password.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.db.iam import RdsIamTokens, iam_conninfo_problem, with_default_sslrootcert
from chalicelib.db.pool import Database, side_database
from chalicelib.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class CountingTokens:
    """A stand-in for RdsIamTokens: answers the login role's password and counts the calls."""

    password: str
    calls: int = 0
    answered: list[str] = field(default_factory=list)

    def __call__(self) -> str:
        self.calls += 1
        self.answered.append(self.password)
        return self.password


@dataclass(frozen=True)
class LoginRole:
    name: str
    password: str
    conninfo: str  # no password in it, as in production


@pytest.fixture
def login_role(password_pg: str) -> Iterator[LoginRole]:
    """A LOGIN role with a random password on the password-checking cluster."""
    name, password = f"iam_{uuid.uuid4().hex[:10]}", f"TOKEN-CANARY-{uuid.uuid4().hex}"
    with psycopg.connect(password_pg, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
    host = conninfo_to_dict(password_pg)["host"]
    yield LoginRole(name, password, make_conninfo(host=host, dbname="postgres", user=name))
    with psycopg.connect(password_pg, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", (name,))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _whoami(db: Database) -> str:
    with db.pool.connection() as conn:
        row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def test_without_the_token_the_password_checking_cluster_refuses_the_role(login_role: LoginRole) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(login_role.conninfo).close()


def test_each_new_connection_asks_for_a_fresh_token_and_a_reused_one_does_not(
        password_pg: str, login_role: LoginRole) -> None:
    tokens = CountingTokens(login_role.password)
    db = Database(login_role.conninfo, size=1, password_source=tokens)
    try:
        assert tokens.calls == 0  # building the pool description connects nothing
        assert _whoami(db) == login_role.name
        assert _whoami(db) == login_role.name
        assert tokens.calls == 1  # the second checkout reused the connection: no token needed
        with psycopg.connect(password_pg, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s",
                          (login_role.name,))
        assert _whoami(db) == login_role.name  # the dead connection is replaced by a new one...
        assert tokens.calls == 2  # ...which signed in with a token of its own
    finally:
        db.close()


def test_tokens_never_reach_the_logs_even_when_refused(login_role: LoginRole, json_log: io.StringIO) -> None:
    good = CountingTokens(login_role.password)
    db = Database(login_role.conninfo, size=1, password_source=good)
    try:
        _whoami(db)
    finally:
        db.close()
    wrong = CountingTokens(f"WRONG-TOKEN-CANARY-{uuid.uuid4().hex}")
    refused = Database(login_role.conninfo, size=1, timeout=1.0, password_source=wrong)
    try:
        # The refusal reaches the request that connects (the pool opens connections in its thread).
        with pytest.raises(psycopg.OperationalError, match="password authentication failed") as raised:
            _whoami(refused)
    finally:
        refused.close()
    assert wrong.calls >= 1
    logging.getLogger("crm.test").error("refused", exc_info=raised.value)
    logged = json_log.getvalue()
    assert "refused" in logged  # the refusal was logged...
    assert login_role.password not in logged and wrong.password not in logged  # ...without the token


def test_a_side_connection_signs_in_with_a_new_token_not_the_old_one(login_role: LoginRole) -> None:
    tokens = CountingTokens(login_role.password)
    db = Database(login_role.conninfo, size=1, password_source=tokens)
    try:
        with db.pool.connection() as conn:
            side = side_database(conn, name="side")
            try:
                assert _whoami(side) == login_role.name
            finally:
                side.close()
        assert tokens.calls == 2
    finally:
        db.close()


def test_the_rds_token_is_signed_for_the_host_port_and_user_of_the_connection_string() -> None:
    class FakeRds:
        def __init__(self) -> None:
            self.requests: list[dict[str, Any]] = []

        def generate_db_auth_token(self, **params: Any) -> str:
            self.requests.append(params)
            return f"token-{len(self.requests)}"

    rds = FakeRds()
    tokens = RdsIamTokens.for_conninfo("host=proxy.example port=6432 dbname=crm user=crm_app sslmode=verify-full",
                                       region="eu-west-1", client=rds)
    assert [tokens(), tokens()] == ["token-1", "token-2"]  # one per call: nothing cached
    assert rds.requests == [{"DBHostname": "proxy.example", "Port": 6432, "DBUsername": "crm_app",
                             "Region": "eu-west-1"}] * 2


def test_boto3_presigns_the_token_locally_with_the_functions_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
                        "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    import boto3

    # boto3's default session keeps the credentials it resolved first: start from this environment.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    # An endpoint nothing listens on: a token that needed the network would fail here.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    token = RdsIamTokens.for_conninfo("host=crm.proxy-abc.eu-west-1.rds.amazonaws.com user=crm_jobs")()
    assert token.startswith("crm.proxy-abc.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=crm_jobs")
    assert "X-Amz-Credential=AKIDEXAMPLE" in token and "eu-west-1%2Frds-db" in token


def test_prod_settings_with_iam_build_token_pools_for_both_roles_with_certifi_roots() -> None:
    proxy = "host=crm.proxy-abc.eu-west-1.rds.amazonaws.com port=5432 dbname=crm sslmode=verify-full"
    settings = load_settings(db_iam_auth=True, database_url=f"{proxy} user=crm_app",
                             jobs_database_url=f"{proxy} user=crm_jobs")
    for role, user in (("app", "crm_app"), ("jobs", "crm_jobs")):
        db = Database.from_settings(settings, role=role)
        assert conninfo_to_dict(db.conninfo)["sslrootcert"] == certifi.where()
        source = db._password_source
        assert isinstance(source, RdsIamTokens)
        assert (source.host, source.port, source.user) == ("crm.proxy-abc.eu-west-1.rds.amazonaws.com", 5432, user)


def test_without_iam_a_password_url_is_used_as_it_is() -> None:
    settings = load_settings(database_url="postgresql://crm_app:pw@db.internal/crm")
    db = Database.from_settings(settings)
    assert db.conninfo == "postgresql://crm_app:pw@db.internal/crm" and db._password_source is None


def test_a_verifying_connection_without_roots_gets_certifis_and_an_explicit_one_is_kept() -> None:
    assert conninfo_to_dict(with_default_sslrootcert("host=h sslmode=verify-full"))["sslrootcert"] == certifi.where()
    assert conninfo_to_dict(with_default_sslrootcert("host=h sslmode=verify-ca"))["sslrootcert"] == certifi.where()
    assert with_default_sslrootcert("host=h sslmode=verify-full sslrootcert=/rds.pem") == \
        "host=h sslmode=verify-full sslrootcert=/rds.pem"
    assert with_default_sslrootcert("host=h sslmode=require") == "host=h sslmode=require"


@pytest.mark.parametrize(("conninfo", "problem"), [
    ("host=p user=u sslmode=require", "verify-full"),
    ("host=p user=u", "verify-full"),
    ("postgresql://u:pw@p/crm?sslmode=verify-full", "password"),
    ("user=u sslmode=verify-full", "one host"),
    ("host=/tmp user=u sslmode=verify-full", "one host"),
    ("host=a,b user=u sslmode=verify-full", "one host"),
    ("host=p sslmode=verify-full", "user"),
    ("not a conninfo", "not a valid"),
])
def test_connection_strings_unfit_for_iam_are_named_with_the_reason(conninfo: str, problem: str) -> None:
    found = iam_conninfo_problem(conninfo)
    assert found is not None and problem in found
    assert iam_conninfo_problem("host=p port=5432 dbname=crm user=u sslmode=verify-full") is None


def test_importing_the_pool_imports_neither_boto3_nor_certifi() -> None:
    code = ("import sys, chalicelib.db.pool, chalicelib.db.migrate; "
            "print(sorted(m for m in ('boto3', 'botocore', 'certifi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
