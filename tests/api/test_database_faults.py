"""The real app when its database is down, refusing, out of slots, frozen or restarting: a 503 problem with
Retry-After, never a 500, a traceback or a hang; and the first request after recovery succeeds."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from psycopg import sql

import app as app_module
from chalicelib.db.migrate import APP_ROLE, bootstrap, migrate, role_conninfo
from chalicelib.db.pool import Database, use_database
from tests.api.auth_helpers import (
    Outbox,
    body_of,
    call,
    create_workspace,
    fresh_address,
    problem,
    request_link,
    sign_in,
)
from tests.conftest import TestDatabase
from tests.dbfaults import PrivateCluster, closed_port, freezable_proxy


@pytest.fixture
def client() -> Iterator[Client]:
    """The real app with no database installed: each test installs the one it breaks."""
    with Client(app_module.app) as c:
        yield c


@contextlib.contextmanager
def installed(db: Database) -> Iterator[Database]:
    """`db` as the app role's Database while the block runs."""
    use_database(db, "app")
    try:
        yield db
    finally:
        use_database(None, "app")


def _unavailable(response: Any, logs: io.StringIO) -> dict[str, Any]:
    """A 503 problem with Retry-After, and nothing internal in the answer or the log."""
    body = problem(response, 503)
    assert int(response.headers["Retry-After"]) > 0
    text = response.body.decode()
    for leak in ("Traceback", "psycopg", "127.0.0.1", "crm_app", "password", "socket"):
        assert leak not in text, leak
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
    assert "Traceback" not in logs.getvalue()
    (line,) = [x for x in lines if x["msg"] == "database unavailable" and x["request_id"] == body["request_id"]]
    # One WARNING with what an operator needs (the kind and the request), nothing of the connection.
    assert line["level"] == "WARNING" and set(line) <= {"ts", "level", "logger", "msg", "kind", "sqlstate",
                                                          "request_id"}
    for leak in ("127.0.0.1", "crm_app", "password", ".s.PGSQL", "host="):
        assert leak not in logs.getvalue(), leak
    return body


def _kinds(logs: io.StringIO) -> list[str]:
    return [str(line["kind"]) for line in map(json.loads, logs.getvalue().splitlines())
            if line["msg"] == "database unavailable"]


def _every_kind_of_request(client: Client) -> list[Any]:
    """An unauthenticated write (sign-in), a cookie-authenticated read, and readiness."""
    return [request_link(client, fresh_address()),
            client.http.get("/auth/me", headers={"Cookie": "crm_session=" + "x" * 43}),
            client.http.get("/health/ready")]


@pytest.fixture
def limited_role(fresh_db: TestDatabase) -> Iterator[str]:
    """A role that may open no connection at all (CONNECTION LIMIT 0): the server is out of slots for it."""
    role = f"crm_t_{uuid.uuid4().hex[:8]}_full"
    with fresh_db.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 0").format(sql.Identifier(role)))
    yield role_conninfo(fresh_db.admin_url, user=role)
    with fresh_db.admin() as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


DOWN: dict[str, Callable[[pytest.FixtureRequest], str]] = {
    "connection refused": lambda _: f"host=127.0.0.1 port={closed_port()} dbname=crm user=crm_app",
    "no such socket": lambda _: "host=/nonexistent dbname=crm user=crm_app",
    "wrong password": lambda request: role_conninfo(request.getfixturevalue("password_pg"),
                                                    user="crm_t_nobody", dbname="postgres") + " password=wrong",
    "out of connection slots": lambda request: str(request.getfixturevalue("limited_role")),
}


@pytest.mark.parametrize("shape", sorted(DOWN))
def test_unavailable_database_answers_503_problem_with_retry_after(
        password_pg: str, client: Client, outbox: Outbox, logs: io.StringIO, request: pytest.FixtureRequest,
        shape: str) -> None:
    # password_pg is asked for here, before `outbox` points DATA_DIR (where the cluster lives) elsewhere.
    with installed(Database(DOWN[shape](request), name="app", timeout=20.0, connect_timeout=2)):
        for response in _every_kind_of_request(client):
            _unavailable(response, logs)
    # At once (the connection's own failure), not after DB_POOL_TIMEOUT spent waiting for a retry.
    assert "pool-timeout" not in _kinds(logs)


def test_backend_terminated_mid_request_answers_503(
        api: Client, outbox: Outbox, fresh_db: TestDatabase, logs: io.StringIO) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    answers: list[Any] = []
    with fresh_db.admin() as admin, admin.transaction():
        # Hold the row, so the rename waits on the server; then end its backend as a shutdown would.
        admin.execute("SELECT 1 FROM workspaces WHERE id = %s FOR UPDATE", (workspace,))
        renaming = threading.Thread(target=lambda: answers.append(
            call(api, "PATCH", f"/workspaces/{workspace}", owner, {"name": "renamed"})))
        renaming.start()
        for _ in range(100):
            if admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s"
                             " AND datname = current_database() AND wait_event_type = 'Lock'",
                             (APP_ROLE,)).fetchall():
                break
            time.sleep(0.02)
        renaming.join()
    _unavailable(answers[0], logs)
    assert _kinds(logs) == ["57P01"]  # admin_shutdown, not the lock timeout
    assert body_of(call(api, "GET", f"/workspaces/{workspace}", owner))["name"] == "Acme"


def test_next_request_succeeds_after_every_app_backend_is_terminated(
        api: Client, outbox: Outbox, fresh_db: TestDatabase) -> None:
    owner = sign_in(api, fresh_address("owner"), outbox)
    with fresh_db.admin() as admin:
        # This test's database only: another worker's test runs as the same role at the same time.
        ended = admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s"
                              " AND datname = current_database()", (APP_ROLE,)).fetchall()
    assert ended
    response = call(api, "GET", "/auth/me", owner)
    assert response.status_code == 200, response.body


def test_frozen_database_answers_503_at_the_request_deadline_and_recovers(
        client: Client, outbox: Outbox, fresh_db: TestDatabase, env: Callable[..., None], logs: io.StringIO) -> None:
    env(DB_REQUEST_DEADLINE_S=1)
    with freezable_proxy(fresh_db.app_url) as proxy, \
            installed(Database(proxy.conninfo(fresh_db.app_url), name="app", connect_timeout=2)):
        owner = sign_in(client, fresh_address("owner"), outbox)
        proxy.freeze()
        # The pooled connection's query, then a new connection's sign-in, then readiness: none hangs.
        _unavailable(call(client, "GET", "/auth/me", owner), logs)
        for response in _every_kind_of_request(client):
            _unavailable(response, logs)
        proxy.thaw()
        assert call(client, "GET", "/auth/me", owner).status_code == 200


@pytest.fixture(scope="module")
def restartable() -> Iterator[tuple[PrivateCluster, str]]:
    """A migrated database on a cluster of this module's own (stopping the shared one would break the
    rest of the run), and the app role's connection string."""
    # Under DATA_DIR like password_pg (a concurrent run may prune pytest's basetemp under a live cluster).
    pgdata = Path(os.environ["DATA_DIR"]) / f"restart-pg-{os.getpid()}" / "pgdata"
    shutil.rmtree(pgdata.parent, ignore_errors=True)
    cluster = PrivateCluster(pgdata)
    try:
        bootstrap(cluster.admin_url, "crm")
        migrate(role_conninfo(cluster.admin_url, dbname="crm"))
        yield cluster, role_conninfo(cluster.admin_url, user=APP_ROLE, dbname="crm")
    finally:
        cluster.stop()
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def test_first_request_after_a_database_restart_succeeds(
        client: Client, outbox: Outbox, logs: io.StringIO, restartable: tuple[PrivateCluster, str]) -> None:
    cluster, app_url = restartable
    with installed(Database(app_url, name="app", connect_timeout=2)):
        assert request_link(client, fresh_address()).status_code == 202
        cluster.stop()
        for response in _every_kind_of_request(client):
            _unavailable(response, logs)
        cluster.start()
        response = request_link(client, fresh_address())
        assert response.status_code == 202, response.body
        assert client.http.get("/health/ready").status_code == 200


def test_refused_reads_log_no_warning(api: Client, outbox: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    # A refused authorization is expected: the reads queued behind it are skipped, and closing the
    # pipeline over them must not log (psycopg's WARNING quoted the server's message on each 404).
    owner = sign_in(api, fresh_address("owner"), outbox)
    workspace = create_workspace(api, owner)["id"]
    other = sign_in(api, fresh_address("other"), outbox)
    caplog.set_level(logging.WARNING)
    for path in [f"/workspaces/{workspace}/attachments/{uuid.uuid4()}"] * 10 + [
            f"/workspaces/{workspace}", f"/workspaces/{workspace}/contacts", f"/workspaces/{workspace}/members"]:
        problem(call(api, "GET", path, other), 404)
    assert [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING] == []
