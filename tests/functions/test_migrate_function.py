"""functions/migrate.py, the deploy's migration step, as it runs against Aurora.

Aurora's master user is NOT a superuser: it has CREATEROLE, CREATEDB and (through rds_superuser) ADMIN
OPTION on rds_iam, and owns the cluster's default database. The private password-checking cluster plays
that part: a master role like Aurora's, an `rds_iam` role, the secret in (moto's) Secrets Manager.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.db.guard import find_violations
from chalicelib.db.migrate import APP_ROLE, JOBS_ROLE, OWNER_ROLE, Migration, load_migrations
from functions import migrate as migrate_function
from tests.db.test_pool_faults import EXPECTED_TIMEOUTS
from tests.functions.conftest import SetEnv

ROOT = Path(__file__).resolve().parents[2]
MASTER = "aurora_master"
MASTER_PASSWORD = f"MASTER-PW-CANARY-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Cluster:
    superuser_url: str
    host: str
    port: int
    dbname: str

    def master_secret(self) -> dict[str, object]:
        """The JSON RDS generates for a cluster's master user."""
        return {"engine": "postgres", "host": self.host, "port": self.port, "username": MASTER,
                "password": MASTER_PASSWORD, "dbname": self.dbname, "dbClusterIdentifier": "crm"}

    def master_url(self) -> str:
        return make_conninfo(host=self.host, port=str(self.port), dbname=self.dbname, user=MASTER,
                             password=MASTER_PASSWORD)

    def superuser(self, dbname: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(make_conninfo(self.superuser_url, dbname=dbname or "postgres"), autocommit=True)


@pytest.fixture
def aurora(password_pg: str) -> Iterator[Cluster]:
    """Aurora's master and rds_iam roles (once per cluster), and a database name of this test."""
    params = conninfo_to_dict(password_pg)
    cluster = Cluster(password_pg, str(params["host"]), int(str(params.get("port") or 5432)),
                      f"crm_mig_{uuid.uuid4().hex[:10]}")
    with cluster.superuser() as conn:
        conn.execute("SELECT pg_advisory_lock(7301552098)")
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MASTER,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEROLE CREATEDB PASSWORD {}").format(
                sql.Identifier(MASTER), sql.Literal(MASTER_PASSWORD)))
            conn.execute("CREATE ROLE rds_iam NOLOGIN")
            # On RDS the master holds rds_iam through rds_superuser, with the right to grant it.
            conn.execute(sql.SQL("GRANT rds_iam TO {} WITH ADMIN OPTION").format(sql.Identifier(MASTER)))
        conn.execute("SELECT pg_advisory_unlock(7301552098)")
    yield cluster
    with cluster.superuser() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cluster.dbname)))


@pytest.fixture
def default_database(aurora: Cluster) -> Cluster:
    """The cluster's default database as Aurora creates it: empty, owned by the master user."""
    with aurora.superuser() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(aurora.dbname),
                                                                   sql.Identifier(MASTER)))
    return aurora


@pytest.fixture
def master_secret(default_database: Cluster, function_env: SetEnv) -> Iterator[str]:
    """The master secret in Secrets Manager (moto), and the function's env pointing at it."""
    from moto import mock_aws

    with mock_aws():
        import boto3

        arn = boto3.client("secretsmanager").create_secret(
            Name="crm/aurora-master", SecretString=json.dumps(default_database.master_secret()))["ARN"]
        function_env(db_admin_secret_arn=arn)
        yield arn


def _versions() -> list[str]:
    # From the files themselves (not the loader the function uses), and never none.
    found = sorted(p.name[:4] for p in (ROOT / "chalicelib" / "db" / "migrations").glob("*.sql"))
    assert len(found) >= 15 and found[0] == "0001"
    return found


def test_deploy_as_auroras_master_creates_iam_roles_and_applies_every_migration_once(
        default_database: Cluster, master_secret: str, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = default_database
    result = migrate_function.handler({"RequestType": "Create", "anything": ["CDK", "Trigger"]}, None)
    assert result == {"applied": _versions(), "total": len(_versions())}

    with cluster.superuser() as conn:
        roles = {str(r[0]): r[1:] for r in conn.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolpassword IS NULL FROM pg_authid"
            " WHERE rolname = ANY(%s)", ([OWNER_ROLE, APP_ROLE, JOBS_ROLE],))}
        assert roles == {OWNER_ROLE: (False, False, False, True), APP_ROLE: (True, False, False, True),
                         JOBS_ROLE: (True, False, False, True)}  # the runtime roles have no password at all
        for role in (APP_ROLE, JOBS_ROLE):
            assert conn.execute("SELECT pg_has_role(%s, 'rds_iam', 'member')", (role,)).fetchone() == (True,)
            settings = conn.execute("SELECT setconfig FROM pg_db_role_setting WHERE setrole = %s::regrole"
                                    " AND setdatabase = 0", (role,)).fetchone()
            timeouts = {f"{name}={value}" for name, value in EXPECTED_TIMEOUTS[role].items()}
            assert settings is not None and set(settings[0]) == timeouts  # type: ignore[arg-type]
        assert conn.execute("SELECT pg_has_role(%s, 'rds_iam', 'member')", (OWNER_ROLE,)).fetchone() == (False,)
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                            (cluster.dbname,)).fetchone() == (OWNER_ROLE,)
        # The master may become the owner (SET) without carrying its privileges around (no INHERIT).
        assert conn.execute("SELECT pg_has_role(%s, %s, 'SET'), pg_has_role(%s, %s, 'USAGE')",
                            (MASTER, OWNER_ROLE, MASTER, OWNER_ROLE)).fetchone() == (True, False)
    with cluster.superuser(cluster.dbname) as conn:
        assert find_violations(conn) == []
        assert conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall() \
            == [(OWNER_ROLE,)]

    logged = capsys.readouterr().out
    done = [json.loads(line) for line in logged.splitlines() if '"migrations done"' in line]
    assert [(d["applied"], d["total"], d["versions"]) for d in done] == [(len(_versions()), len(_versions()),
                                                                         _versions())]
    assert MASTER_PASSWORD not in logged

    again = migrate_function.handler({}, None)
    assert again == {"applied": [], "total": len(_versions())}


def test_a_failing_migration_raises_and_leaves_it_unrecorded(default_database: Cluster) -> None:
    conninfo = migrate_function.admin_conninfo_from_secret(default_database.master_secret())
    assert conninfo_to_dict(conninfo)["sslmode"] == "verify-full"
    bad = Migration("9999", "broken", "CREATE TABLE half_done (id int); SELECT 1/0;")
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate_function.run(conninfo, migrations=[*load_migrations(), bad])
    with default_database.superuser(default_database.dbname) as conn:
        assert conn.execute("SELECT to_regclass('public.half_done')").fetchone() == (None,)
        recorded = [str(r[0]) for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert recorded == _versions()


def test_a_wrong_master_password_fails_the_deploy_without_echoing_it(
        default_database: Cluster, function_env: SetEnv) -> None:
    from moto import mock_aws

    secret = {**default_database.master_secret(), "password": "WRONG-PW-CANARY"}
    with mock_aws():
        import boto3

        arn = boto3.client("secretsmanager").create_secret(Name="crm/master", SecretString=json.dumps(secret))["ARN"]
        function_env(db_admin_secret_arn=arn)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed") as info:
            migrate_function.handler({}, None)
    assert "CANARY" not in str(info.value)


def test_the_command_line_reports_a_refused_master_in_one_line_naming_nothing_of_the_cluster(
        default_database: Cluster, function_env: SetEnv, capsys: pytest.CaptureFixture[str]) -> None:
    from moto import mock_aws

    secret = {**default_database.master_secret(), "password": "WRONG-PW-CANARY"}
    with mock_aws():
        import boto3

        arn = boto3.client("secretsmanager").create_secret(Name="crm/master", SecretString=json.dumps(secret))["ARN"]
        function_env(db_admin_secret_arn=arn)
        assert migrate_function.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("migration failed: OperationalError")
    for leaked in ("CANARY", str(secret["host"]), str(secret["username"])):
        assert leaked not in err


def test_migrate_database_url_replaces_the_secret_and_a_missing_database_is_created(
        aurora: Cluster, function_env: SetEnv, capsys: pytest.CaptureFixture[str]) -> None:
    function_env(migrate_database_url=aurora.master_url())
    assert migrate_function.main([]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"applied": _versions(), "total": len(_versions())}
    with aurora.superuser() as conn:
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                            (aurora.dbname,)).fetchone() == (OWNER_ROLE,)


def test_without_a_secret_or_url_the_function_says_what_it_needs(function_env: SetEnv) -> None:
    function_env()
    with pytest.raises(migrate_function.MigrateConfigError, match="DB_ADMIN_SECRET_ARN"):
        migrate_function.handler({}, None)


def test_a_secret_lacking_keys_is_refused_naming_the_keys_only() -> None:
    with pytest.raises(migrate_function.MigrateConfigError, match="lacks password, host") as info:
        migrate_function.admin_conninfo_from_secret({"username": "master", "dbname": "SECRET-CANARY"})
    assert "CANARY" not in str(info.value)


def test_the_host_and_database_may_come_from_the_environment_instead_of_the_secret() -> None:
    secret = {"username": "master", "password": "pw", "host": "old.cluster", "dbname": "postgres"}
    params = conninfo_to_dict(migrate_function.admin_conninfo_from_secret(secret, host="writer.cluster",
                                                                          dbname="crm"))
    assert (params["host"], params["dbname"], params["port"]) == ("writer.cluster", "crm", "5432")
    without_host = {k: v for k, v in secret.items() if k != "host"}
    assert conninfo_to_dict(migrate_function.admin_conninfo_from_secret(without_host, host="w"))["host"] == "w"


def test_a_secret_that_is_not_json_is_refused(function_env: SetEnv) -> None:
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("secretsmanager")
        arn = client.create_secret(Name="crm/plain", SecretString="hunter2")["ARN"]
        with pytest.raises(migrate_function.MigrateConfigError, match="not a JSON object"):
            migrate_function.read_secret(arn, client=client)


def test_the_cluster_connection_verifies_tls_with_certifi_or_the_configured_bundle(aurora: Cluster) -> None:
    import certifi

    from chalicelib.db.iam import with_default_sslrootcert

    # What bootstrap and migrate connect with: the secret's conninfo, certifi's roots added.
    default = conninfo_to_dict(with_default_sslrootcert(migrate_function.admin_conninfo_from_secret(
        aurora.master_secret())))
    assert (default["sslmode"], default["sslrootcert"]) == ("verify-full", certifi.where())
    rds = conninfo_to_dict(migrate_function.admin_conninfo_from_secret(aurora.master_secret(),
                                                                       sslrootcert="/opt/rds-global-bundle.pem"))
    assert rds["sslrootcert"] == "/opt/rds-global-bundle.pem"
    assert (rds["user"], rds["dbname"], rds["host"]) == (MASTER, aurora.dbname, aurora.host)


class _Answer(io.BytesIO):
    """What urlopen returns, for an injected opener."""

    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_the_rds_ca_bundle_is_fetched_over_https_into_a_file(tmp_path: Path) -> None:
    asked: list[str] = []

    def opener(url: str, timeout: float) -> _Answer:
        asked.append(url)
        return _Answer(PEM)

    url = "https://truststore.pki.rds.amazonaws.com/eu-west-1/eu-west-1-bundle.pem"
    path = migrate_function.fetch_ca_bundle(url, opener=opener, directory=tmp_path)
    assert asked == [url]
    assert Path(path).read_bytes() == PEM and Path(path).parent == tmp_path


@pytest.mark.parametrize(("url", "body"), [
    ("http://truststore.pki.rds.amazonaws.com/bundle.pem", PEM),  # never over plain http
    ("https://truststore.example/bundle.pem", b"<html>not a bundle</html>"),
    ("https://truststore.example/bundle.pem", PEM + b"x" * 1_000_000),  # bounded
])
def test_a_ca_bundle_that_is_not_https_pem_and_small_is_refused(tmp_path: Path, url: str, body: bytes) -> None:
    with pytest.raises(migrate_function.MigrateConfigError):
        migrate_function.fetch_ca_bundle(url, opener=lambda u, timeout: _Answer(body), directory=tmp_path)
    assert list(tmp_path.iterdir()) == []
