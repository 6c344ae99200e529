"""Helpers of the CRM API tests: a signed-in owner with a workspace, and calls relative to it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from chalice.test import Client

from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from tests.api.auth_helpers import (
    ORIGIN,
    Browser,
    Outbox,
    body_of,
    call,
    create_workspace,
    fresh_address,
    invite_and_join,
    sign_in,
)
from tests.conftest import TestDatabase

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


@dataclass
class Workspace:
    """A workspace and one signed-in member of it; paths are relative to /workspaces/{id}."""

    client: Client
    browser: Browser
    id: str

    @property
    def base(self) -> str:
        return f"/workspaces/{self.id}"

    @property
    def user_id(self) -> str:
        return self.browser.user_id

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return call(self.client, method, self.base + path, self.browser, body, headers=headers)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.call("GET", path, headers=headers)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.call("POST", path, body, headers)

    def patch(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.call("PATCH", path, body, headers)

    def delete(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.call("DELETE", path, headers=headers)

    def create(self, path: str, body: Any) -> dict[str, Any]:
        response = self.post(path, body)
        assert response.status_code == 201, response.body
        return dict(body_of(response))

    def as_member(self, outbox: Outbox, role: str = "member") -> Workspace:
        """Another user invited into this workspace with `role`."""
        joined = invite_and_join(self.client, outbox, self.browser, self.id, fresh_address(role), role)
        return Workspace(self.client, joined, self.id)

    def post_csv(self, client: Client, path: str, text: str | bytes, *, content_type: str = "text/csv",
                 headers: dict[str, str] | None = None) -> Any:
        """A CSV body, cookie-authenticated (through `client`, which serves the import route)."""
        sent = {"Content-Type": content_type, "Cookie": self.browser.cookie, "X-CSRF-Token": self.browser.csrf,
                "Origin": ORIGIN, **(headers or {})}
        raw = text.encode() if isinstance(text, str) else text
        return client.http.request("POST", self.base + path, headers=sent, body=raw)


def new_workspace(api: Client, outbox: Outbox, label: str = "owner") -> Workspace:
    """A new user signed in, owning a new workspace."""
    browser = sign_in(api, fresh_address(label), outbox)
    workspace = create_workspace(api, browser, f"{label} workspace")
    return Workspace(api, browser, str(workspace["id"]))


def insert_rows(db: TestDatabase, table: str, tenant: str, rows: Iterable[dict[str, Any]]) -> list[str]:
    """Insert rows directly (as the superuser) and return their ids: fast fixtures with set timestamps."""
    from psycopg import sql
    from psycopg.types.json import Jsonb

    ids: list[str] = []
    with db.admin() as conn, conn.cursor() as cur:
        for row in rows:
            values = {"id": uuid.uuid4(), "tenant_id": uuid.UUID(tenant), **row}
            values = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in values.items()}
            cur.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, values)),
                sql.SQL(", ").join(sql.Placeholder() * len(values))), list(values.values()))
            ids.append(str(values["id"]))
    return ids


def at(minutes: int) -> datetime:
    """T0 plus some minutes (fixed, not wall-clock)."""
    return T0 + timedelta(minutes=minutes)


def rows_of(db: TestDatabase, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with db.admin() as conn:
        return conn.execute(query, params).fetchall()


def without_request_id(response: Any) -> dict[str, Any]:
    payload = dict(json.loads(response.body))
    payload.pop("request_id", None)
    return payload


def fields_of(response: Any) -> list[str]:
    """The field paths of a problem (a response, or a problem body already read)."""
    payload = response if isinstance(response, dict) else body_of(response)
    return [e["field"] for e in payload.get("errors", [])]


def _blocked_app_backends(db: TestDatabase) -> int:
    row = rows_of(db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                      " AND usename = 'crm_app' AND wait_event_type = 'Lock'")
    return int(row[0][0])


def _wait_until_blocked(db: TestDatabase, thread: threading.Thread) -> None:
    # Polls the server's own view of lock waits: deterministic, whatever the machine's speed.
    deadline = time.monotonic() + 10
    while _blocked_app_backends(db) == 0:
        assert thread.is_alive(), "the request finished without waiting for the concurrent transaction"
        assert time.monotonic() < deadline, "the request never waited for the concurrent transaction"
        time.sleep(0.01)


def concurrently(db: TestDatabase, tenant: str, first: Callable[[psycopg.Connection[Any]], object],
                 second: Callable[[], Any]) -> Any:
    """Run `first` in an open transaction of another connection (as the app, in `tenant`), then `second`
    (an HTTP call) in a thread; commit `first` once `second` waits on it; return what `second` returned."""
    other = Database(db.app_url, size=1, name="concurrent")
    result: dict[str, Any] = {}
    try:
        with tenant_tx(tenant, db=other, pipeline=False) as conn:
            first(conn)
            thread = threading.Thread(target=lambda: result.update(response=second()))
            thread.start()
            _wait_until_blocked(db, thread)
        thread.join(10)
    finally:
        other.close()
    return result["response"]
