"""The staff commands' settings: --help names them, a problem with one is a single line naming it (never a
traceback, never the value), and locally the commands find the embedded database by themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

from chalicelib.db.embedded import LOCAL_DBNAME, start_embedded, stop_embedded
from chalicelib.db.migrate import role_conninfo
from chalicelib.db.pool import use_database
from chalicelib.settings import Settings
from functions import (
    backup_tenants,
    delete_tenant,
    export_tenant,
    migrate,
    purge_audit_log,
    purge_auth,
    purge_webhook_log,
    purge_workspaces,
    restore_tenant,
    rotate_credentials,
)
from tests.conftest import ROOT
from tests.functions.conftest import SetEnv

WORKSPACE = "3b59f508-8c40-49f3-b68a-05dcaa4430e6"  # fixed: parameters name the tests (xdist collects twice)
# Every command that works as the jobs role, with arguments that get it past argparse.
JOBS_COMMANDS: dict[str, tuple[ModuleType, list[str]]] = {
    "export_tenant": (export_tenant, [WORKSPACE, "--out", "never-written.json"]),
    "delete_tenant": (delete_tenant, [WORKSPACE, "--yes"]),
    "backup_tenants": (backup_tenants, ["--dry-run"]),
    "restore_tenant": (restore_tenant, [WORKSPACE]),
    "purge_auth": (purge_auth, []),
    "purge_audit_log": (purge_audit_log, []),
    "purge_webhook_log": (purge_webhook_log, []),
    "purge_workspaces": (purge_workspaces, []),
    "rotate_credentials": (rotate_credentials, ["--dry-run"]),
}
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
SECRET_PASSWORD = "s3cret-in-the-url"


@pytest.fixture
def no_jobs_pool() -> Iterator[None]:
    """Whatever jobs pool a command opened is closed and forgotten afterwards."""
    yield
    use_database(None, "jobs")


def help_of(module: ModuleType, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", [*JOBS_COMMANDS, "migrate"])
def test_help_names_the_settings_the_command_reads_and_each_is_a_real_setting(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = JOBS_COMMANDS[name][0] if name in JOBS_COMMANDS else migrate
    text = help_of(module, capsys)
    listed = text.split("settings read from the environment:", 1)[1].split(".\n", 1)[0]
    names = {part.strip() for part in listed.replace("\n", " ").split(",")}
    assert names <= SETTING_NAMES and {"STAGE", "LOG_LEVEL"} <= names
    expected = {"MIGRATE_DATABASE_URL", "DB_ADMIN_SECRET_ARN"} if module is migrate else {"JOBS_DATABASE_URL",
                                                                                          "DATA_DIR"}
    assert expected <= names


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's only output: one line on stderr (no traceback), nothing on stdout."""
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    return captured.err


@pytest.mark.parametrize("name", list(JOBS_COMMANDS))
def test_without_jobs_database_url_beside_a_database_url_the_command_says_which_setting_is_missing(
        name: str, function_env: SetEnv, capsys: pytest.CaptureFixture[str], no_jobs_pool: None) -> None:
    module, argv = JOBS_COMMANDS[name]
    function_env(stage="local", database_url="postgresql://crm_app@/crm?host=/nonexistent")
    assert module.main(argv) == 2
    assert "JOBS_DATABASE_URL is not set" in one_line(capsys)


@pytest.mark.parametrize("url", ["not a connection string", f"postgresql://crm_jobs:{SECRET_PASSWORD}@/crm?host=/nonexistent"],
                         ids=["malformed", "unreachable"])
def test_a_malformed_or_unreachable_jobs_database_url_is_one_line_naming_it_without_its_value(
        url: str, function_env: SetEnv, capsys: pytest.CaptureFixture[str], no_jobs_pool: None) -> None:
    function_env(stage="local", jobs_database_url=url, db_pool_timeout=1)
    assert purge_auth.main([]) == 2
    line = one_line(capsys)
    assert line.startswith("JOBS_DATABASE_URL: cannot connect as the jobs role")
    assert SECRET_PASSWORD not in line and "nonexistent" not in line and "connection string" not in line


def test_an_unusable_data_dir_for_the_embedded_database_is_one_line_naming_it(
        function_env: SetEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("JOBS_DATABASE_URL", raising=False)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    function_env(stage="local", data_dir=not_a_directory)
    assert purge_auth.main([]) == 2
    assert one_line(capsys).startswith("DATA_DIR: the embedded database under")


def test_an_invalid_setting_is_one_line_naming_the_variable(
        function_env: SetEnv, capsys: pytest.CaptureFixture[str]) -> None:
    function_env(log_level="LOUD")
    assert export_tenant.main([WORKSPACE, "--out", "never-written.json"]) == 2
    assert "LOG_LEVEL" in one_line(capsys)


def test_locally_the_commands_use_the_embedded_database_running_or_not(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "JOBS_DATABASE_URL", "MIGRATE_DATABASE_URL", "SENTRY_DSN")}
    env.update(STAGE="local", DATA_DIR=str(data_dir), LOG_LEVEL="WARNING")

    def command(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=180, check=False)

    # As `make run` leaves it: the server is up, and the command attaches to it (and leaves it up).
    server, _started = start_embedded(data_dir / "postgres")
    try:
        purged = command("functions.purge_auth", "--now", "2025-06-01T02:00:00Z")
        assert purged.returncode == 0, purged.stderr
        assert json.loads(purged.stdout)["claimed"] is True
        with psycopg.connect(role_conninfo(str(server.get_uri()), dbname=LOCAL_DBNAME), autocommit=True) as conn:
            tenant = conn.execute("INSERT INTO workspaces (name) VALUES ('w') RETURNING id").fetchone()
    finally:
        stop_embedded(server)
    assert tenant is not None
    # Nothing running now: the command starts the server, and stops it when done.
    exported = command("functions.export_tenant", str(tenant[0]), "--out", str(tmp_path / "export.json"))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["tables"]["workspaces"] == 1
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
