"""Fixtures for running function handlers as Lambda would: settings from the environment, fake AWS credentials."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chalicelib.db.pool import use_database
from chalicelib.settings import get_settings
from tests.conftest import TestDatabase

AWS_REGION = "eu-west-1"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": AWS_REGION, "AWS_DEFAULT_REGION": AWS_REGION}

SetEnv = Callable[..., None]


@pytest.fixture
def function_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[SetEnv]:
    """Set settings variables (get_settings is cached: cleared now and afterwards) and fake AWS credentials.

    Handlers configure logging themselves (a JSON handler on stdout): the root logger is put back after.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "MIGRATE_DATABASE_URL", "DB_ADMIN_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)

    def apply(**values: object) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key.upper(), str(value))
        get_settings.cache_clear()

    get_settings.cache_clear()
    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def staff_env(fresh_db: TestDatabase, function_env: SetEnv, tmp_path: Path) -> Iterator[Path]:
    """What a staff member's shell gives a command line: this test's database as JOBS_DATABASE_URL and a
    DATA_DIR of its own (key file, blobs), which is returned. The jobs pool the command opens is closed after."""
    data_dir = tmp_path / "data"
    function_env(JOBS_DATABASE_URL=fresh_db.jobs_url, DATA_DIR=data_dir)
    yield data_dir
    use_database(None, "jobs")


