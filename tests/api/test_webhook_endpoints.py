"""Outgoing webhooks: the endpoints API, signed delivery to a real receiver verified with the Standard Webhooks
reference library, retries, disabling, SSRF refusals, isolation, crash safety, replays and pings."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import standardwebhooks
import time_machine
from chalice.test import Client

from chalicelib import clock, outbound
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.outgoing import delivery, events, signing
from chalicelib.outgoing.endpoints import secret_context
from chalicelib.vault.store import get_vault
from tests.api.auth_helpers import (
    Browser,
    body_of,
    call,
    create_workspace,
    fresh_address,
    invite_and_join,
    problem,
    sign_in,
)
from tests.conftest import TestDatabase

CANARY = "CANARY-hook-4b1d"


@dataclass
class Receiver:
    """A local HTTP receiver: answers each POST with the next planned status (200 once the plan runs out)."""

    plan: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    extra_headers: dict[str, str] = field(default_factory=dict)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}/hook"

    def verified(self, secret: str) -> list[Any]:
        """Every received body, verified with the reference library (raises on a bad one)."""
        hook = standardwebhooks.Webhook(secret)
        return [hook.verify(body, headers) for headers, body in self.received]


@pytest.fixture
def receiver(env: Callable[..., None]) -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.plan.pop(0) if state.plan else 200
            self.send_response(status)
            for name, value in state.extra_headers.items():
                self.send_header(name, value)
            reply = f"answer {status} {CANARY} ".encode() + b"x " * 1000
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            return

    state.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    env(outbound_allow_hosts=state.host)
    yield state
    state.server.shutdown()
    state.server.server_close()


@dataclass
class Ws:
    client: Client
    owner: Browser
    id: str

    @property
    def tenant(self) -> uuid.UUID:
        return uuid.UUID(self.id)

    def create_endpoint(self, url: str, types: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        response = call(self.client, "POST", f"/workspaces/{self.id}/webhook-endpoints", self.owner,
                        {"url": url, "event_types": types or ["*"], "description": "hook", **extra})
        assert response.status_code == 201, response.body
        return dict(body_of(response))

    def emit(self, event_type: str = "contact.created", data: dict[str, Any] | None = None) -> None:
        """An event, emitted exactly as a write path emits it (in a tenant transaction of the app role)."""
        with tenant_tx(self.tenant) as conn:
            events.emit(conn, tenant_id=self.tenant, event_type=event_type, data=data or {"id": str(uuid.uuid4())})

    def dispatch(self, db: Database, **kwargs: Any) -> int:
        return delivery.dispatch_tenant(self.tenant, db=db, **kwargs)


def _workspace(api: Client, label: str) -> Ws:
    owner = sign_in(api, fresh_address(label))
    return Ws(api, owner, str(create_workspace(api, owner, label)["id"]))


@pytest.fixture
def ws(api: Client) -> Ws:
    return _workspace(api, "hooks-a")


def _attempts(db: TestDatabase, endpoint_id: str) -> list[tuple[Any, ...]]:
    with db.admin() as conn:
        return conn.execute("SELECT a.attempt, a.status_code, a.error_class, d.status FROM webhook_attempts a"
                            " JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = %s"
                            " ORDER BY a.attempted_at, a.attempt", (endpoint_id,)).fetchall()


# ---- the endpoints API ----


def test_create_answers_the_secret_once_and_stores_it_only_encrypted(ws: Ws, receiver: Receiver,
                                                                     fresh_db: TestDatabase) -> None:
    created = ws.create_endpoint(receiver.url, ["contact.created", "lead.won"])
    secret = created["secret"]
    assert secret.startswith("whsec_") and 24 <= len(base64.b64decode(secret[6:])) <= 64
    assert created["event_types"] == ["contact.created", "lead.won"] and created["enabled"] is True
    for path in (f"/workspaces/{ws.id}/webhook-endpoints", f"/workspaces/{ws.id}/webhook-endpoints/{created['id']}"):
        response = call(ws.client, "GET", path, ws.owner)
        assert response.status_code == 200 and secret not in response.body.decode()
        assert "secret" not in json.dumps(body_of(response)).replace("secret_", "")
    with fresh_db.admin() as conn:
        (ciphertext,) = conn.execute("SELECT secret_ciphertext FROM webhook_endpoints").fetchone()  # type: ignore[misc]
        audit = conn.execute("SELECT details::text FROM audit_log WHERE action LIKE 'webhook_endpoint.%'").fetchall()
    assert secret.encode() not in bytes(ciphertext) and secret[6:].encode() not in bytes(ciphertext)
    context = secret_context(ws.tenant, uuid.UUID(created["id"]))
    assert get_vault().decrypt(bytes(ciphertext), context).plaintext.decode() == secret
    assert all(secret not in row[0] for row in audit)


@pytest.mark.parametrize("url", [
    "http://example.com/hook",  # not https, not allow-listed
    "https://127.0.0.1/hook", "https://10.0.0.8/hook", "https://169.254.169.254/latest/meta-data",
    "https://[::ffff:127.0.0.1]/hook", "https://[::1]/hook", "https://user:pw@example.com/hook",
    "https://no-such-host.invalid/hook",
])
def test_a_url_the_guard_refuses_is_422_with_a_reason(ws: Ws, url: str, fresh_db: TestDatabase) -> None:
    response = call(ws.client, "POST", f"/workspaces/{ws.id}/webhook-endpoints", ws.owner,
                    {"url": url, "event_types": ["*"]})
    body = problem(response, 422)
    assert body["errors"][0]["field"] == "url" and body["errors"][0]["message"]
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM webhook_endpoints").fetchone() == (0,)


def test_unknown_event_types_and_unknown_fields_are_422(ws: Ws, receiver: Receiver) -> None:
    path = f"/workspaces/{ws.id}/webhook-endpoints"
    problem(call(ws.client, "POST", path, ws.owner, {"url": receiver.url, "event_types": ["contact.exploded"]}), 422)
    problem(call(ws.client, "POST", path, ws.owner, {"url": receiver.url, "event_types": []}), 422)
    problem(call(ws.client, "POST", path, ws.owner, {"url": receiver.url, "event_types": ["*"], "secret": "x"}), 422)


def test_patch_honours_if_match_and_delete_removes(ws: Ws, receiver: Receiver, jobs_db: Database,
                                                   fresh_db: TestDatabase) -> None:
    created = ws.create_endpoint(receiver.url)
    ws.emit()
    ws.dispatch(jobs_db)
    ws.emit()  # one delivered (with its log), one pending: both go with the endpoint
    item = f"/workspaces/{ws.id}/webhook-endpoints/{created['id']}"
    etag = call(ws.client, "GET", item, ws.owner).headers["ETag"]
    changed = call(ws.client, "PATCH", item, ws.owner, {"enabled": False, "event_types": ["lead.won"]},
                   headers={"If-Match": etag})
    assert changed.status_code == 200 and body_of(changed)["enabled"] is False
    assert body_of(changed)["disabled_reason"] == "operator"
    problem(call(ws.client, "PATCH", item, ws.owner, {"description": "x"}, headers={"If-Match": etag}), 412)
    problem(call(ws.client, "PATCH", item, ws.owner, {"url": None}), 422)
    enabled = call(ws.client, "PATCH", item, ws.owner, {"enabled": True})
    assert body_of(enabled)["disabled_reason"] is None
    assert call(ws.client, "DELETE", item, ws.owner).status_code == 204
    problem(call(ws.client, "GET", item, ws.owner), 404)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT (SELECT count(*) FROM webhook_deliveries), (SELECT count(*) FROM"
                            " webhook_attempts)").fetchone() == (0, 0)


def test_members_get_403_and_other_workspaces_404(outbox: Any, api: Client, ws: Ws, receiver: Receiver) -> None:
    created = ws.create_endpoint(receiver.url)
    other = _workspace(api, "hooks-b")
    for method, suffix, body in (("GET", "", None), ("PATCH", "", {"enabled": False}), ("DELETE", "", None),
                                 ("POST", "/rotate-secret", None), ("POST", "/test", None),
                                 ("GET", "/deliveries", None)):
        response = call(api, method, f"/workspaces/{ws.id}/webhook-endpoints/{created['id']}{suffix}", other.owner,
                        body)
        problem(response, 404)
        # A's endpoint id inside B's own workspace: not found either.
        problem(call(api, method, f"/workspaces/{other.id}/webhook-endpoints/{created['id']}{suffix}", other.owner,
                     body), 404)
    member = invite_and_join(api, outbox, ws.owner, ws.id, fresh_address("hooks-member"))
    problem(call(api, "GET", f"/workspaces/{ws.id}/webhook-endpoints", member), 403)
    problem(call(api, "POST", f"/workspaces/{ws.id}/webhook-endpoints", member,
                 {"url": receiver.url, "event_types": ["*"]}), 403)


def test_event_types_are_public_and_in_openapi(api: Client) -> None:
    response = api.http.get("/webhook-event-types")
    assert response.status_code == 200
    types = {entry["type"]: entry for entry in body_of(response)["data"]}
    assert set(types) == {
        "contact.created", "contact.updated", "contact.deleted", "company.created", "company.updated",
        "company.deleted", "lead.created", "lead.updated", "lead.deleted", "lead.stage_changed", "lead.won",
        "lead.lost", "note.created", "conversation.created", "message.received", "message.sent", "message.failed",
        "call.completed", "proposal.sent", "proposal.signed", "proposal.paid", "member.added", "member.removed",
        "endpoint.disabled"}
    assert "body" in json.dumps(types["message.received"]["schema"])
    assert "/webhook-event-types" in body_of(api.http.get("/openapi.json"))["paths"]


# ---- delivery ----


def test_a_delivery_verifies_with_the_reference_library_and_is_logged(ws: Ws, receiver: Receiver,
                                                                      jobs_db: Database,
                                                                      fresh_db: TestDatabase) -> None:
    created = ws.create_endpoint(receiver.url)
    ws.emit("contact.created", {"id": "c1", "note": CANARY})
    assert ws.dispatch(jobs_db) == 1
    (payload,) = receiver.verified(created["secret"])
    assert payload["type"] == "contact.created" and payload["data"] == {"id": "c1", "note": CANARY}
    assert payload["timestamp"].endswith("Z")
    headers, _body = receiver.received[0]
    assert headers["webhook-id"].startswith("msg_") and headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("crm-webhooks/")
    log = body_of(call(ws.client, "GET", f"/workspaces/{ws.id}/webhook-endpoints/{created['id']}/deliveries",
                       ws.owner))["data"]
    assert [(e["event_type"], e["attempt"], e["status_code"], e["delivery_status"]) for e in log] == [
        ("contact.created", 1, 200, "succeeded")]
    assert log[0]["webhook_id"] == headers["webhook-id"] and len(log[0]["response_excerpt"]) == 1024
    assert "webhook-signature" not in json.dumps(log)
    assert ws.dispatch(jobs_db) == 0  # nothing sent twice


def test_the_library_rejects_a_tampered_body_and_an_old_timestamp(ws: Ws, receiver: Receiver,
                                                                  jobs_db: Database) -> None:
    created = ws.create_endpoint(receiver.url)
    ws.emit()
    ws.dispatch(jobs_db)
    headers, body = receiver.received[0]
    hook = standardwebhooks.Webhook(created["secret"])
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        hook.verify(body.replace(b"contact", b"kontakt"), headers)
    old = int(clock.now().timestamp()) - 600
    stale = {**headers, "webhook-timestamp": str(old),
             "webhook-signature": signing.signature(created["secret"], headers["webhook-id"], old, body)}
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="too old"):
        hook.verify(body, stale)


def test_two_failures_then_success_is_exactly_three_attempts_on_the_schedule(ws: Ws, receiver: Receiver,
                                                                             jobs_db: Database,
                                                                             fresh_db: TestDatabase) -> None:
    created = ws.create_endpoint(receiver.url)
    receiver.plan = [500, 503]
    with time_machine.travel(clock.now(), tick=False) as traveller:
        ws.emit()
        assert ws.dispatch(jobs_db) == 1
        assert ws.dispatch(jobs_db) == 0  # the retry is not due yet
        traveller.shift(timedelta(seconds=5.6))  # 5 s + at most 10 % jitter
        assert ws.dispatch(jobs_db) == 1
        traveller.shift(timedelta(seconds=4 * 60))
        assert ws.dispatch(jobs_db) == 0  # 5 min (- 10 %) not yet
        traveller.shift(timedelta(seconds=61 + 30))
        assert ws.dispatch(jobs_db) == 1
    assert len(receiver.received) == 3
    assert len({h["webhook-id"] for h, _ in receiver.received}) == 1
    assert _attempts(fresh_db, created["id"]) == [(1, 500, None, "succeeded"), (2, 503, None, "succeeded"),
                                                   (3, 200, None, "succeeded")]


def test_the_retry_schedule_is_the_documented_one() -> None:
    assert delivery.SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    now = clock.now()
    for attempt, wait in enumerate(delivery.SCHEDULE[1:], start=1):
        low = delivery.next_attempt_at(attempt, now, rand=lambda: 0.0)
        high = delivery.next_attempt_at(attempt, now, rand=lambda: 1.0)
        assert low == now + timedelta(seconds=wait * 0.9) and high == now + timedelta(seconds=wait * 1.1)
    assert delivery.next_attempt_at(len(delivery.SCHEDULE), now) is None


def test_the_last_failure_marks_the_delivery_failed(ws: Ws, receiver: Receiver, jobs_db: Database,
                                                    fresh_db: TestDatabase) -> None:
    created = ws.create_endpoint(receiver.url)
    receiver.plan = [500] * 20
    with time_machine.travel(clock.now(), tick=False) as traveller:
        ws.emit()
        for _ in delivery.SCHEDULE:
            assert ws.dispatch(jobs_db) == 1
            traveller.shift(timedelta(hours=12))
        assert ws.dispatch(jobs_db) == 0
    rows = _attempts(fresh_db, created["id"])
    assert len(rows) == len(delivery.SCHEDULE) == 8 and {r[3] for r in rows} == {"failed"}


def test_410_disables_the_endpoint_audits_and_tells_the_other_endpoints(ws: Ws, receiver: Receiver,
                                                                        jobs_db: Database,
                                                                        fresh_db: TestDatabase) -> None:
    gone = ws.create_endpoint(receiver.url, ["contact.created"])
    watcher = ws.create_endpoint(receiver.url, ["endpoint.disabled"])
    receiver.plan = [410]
    ws.emit()
    ws.dispatch(jobs_db)
    endpoint = body_of(call(ws.client, "GET", f"/workspaces/{ws.id}/webhook-endpoints/{gone['id']}", ws.owner))
    assert endpoint["enabled"] is False and endpoint["disabled_reason"] == "gone"
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT details->>'reason' FROM audit_log WHERE action = 'webhook_endpoint.disabled'"
                            ).fetchall() == [("gone",)]
    ws.dispatch(jobs_db)
    headers, body = receiver.received[-1]
    notice = standardwebhooks.Webhook(watcher["secret"]).verify(body, headers)
    assert notice["type"] == "endpoint.disabled" and notice["data"] == {"endpoint_id": gone["id"], "reason": "gone"}
    ws.emit()
    assert ws.dispatch(jobs_db) == 0  # a disabled endpoint gets nothing


def test_five_days_of_failures_disable_the_endpoint(ws: Ws, receiver: Receiver, jobs_db: Database) -> None:
    created = ws.create_endpoint(receiver.url, ["contact.created"])
    receiver.plan = [500] * 100
    item = f"/workspaces/{ws.id}/webhook-endpoints/{created['id']}"
    with time_machine.travel(clock.now(), tick=False) as traveller:
        for day in range(6):
            ws.emit()
            ws.dispatch(jobs_db)
            endpoint = body_of(call(ws.client, "GET", item, ws.owner))
            # Failing since day 0: still enabled through day 4, disabled at the first failure on day 5.
            assert (endpoint["enabled"], endpoint["disabled_reason"]) == (
                (True, None) if day < 5 else (False, "failing")), day
            traveller.shift(timedelta(days=1))


# ---- SSRF at delivery time ----


def _resolving_to(addresses: list[str]) -> outbound.Resolver:
    return lambda host, port: addresses


@pytest.mark.parametrize("address", ["10.0.0.7", "127.0.0.1", "169.254.169.254", "::ffff:10.0.0.1", "fe80::1"])
def test_dns_that_changes_to_a_private_address_is_refused_and_logged(ws: Ws, receiver: Receiver, jobs_db: Database,
                                                                     fresh_db: TestDatabase, env: Any,
                                                                     address: str) -> None:
    created = ws.create_endpoint(receiver.url)
    # The endpoint's host now resolves elsewhere, and it is no longer allow-listed (as in production).
    call(ws.client, "PATCH", f"/workspaces/{ws.id}/webhook-endpoints/{created['id']}", ws.owner,
         {"description": "moved"})
    env(outbound_allow_hosts="")
    with fresh_db.admin() as conn:
        conn.execute("UPDATE webhook_endpoints SET url = 'https://hooks.example.com/x'")
    ws.emit()
    ws.dispatch(jobs_db, resolver=_resolving_to([address]))
    assert receiver.received == []
    assert _attempts(fresh_db, created["id"]) == [(1, None, "refused", "pending")]


def test_a_redirect_is_never_followed(ws: Ws, receiver: Receiver, jobs_db: Database,
                                      fresh_db: TestDatabase) -> None:
    created = ws.create_endpoint(receiver.url)
    receiver.plan = [302]
    receiver.extra_headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    ws.emit()
    ws.dispatch(jobs_db)
    assert len(receiver.received) == 1
    assert _attempts(fresh_db, created["id"]) == [(1, 302, None, "pending")]


# ---- isolation, rotation, replay, ping ----


def test_b_never_receives_a_events_and_cannot_read_or_replay_a_deliveries(api: Client, ws: Ws, receiver: Receiver,
                                                                         jobs_db: Database,
                                                                         fresh_db: TestDatabase) -> None:
    a_hook = ws.create_endpoint(receiver.url)
    other = _workspace(api, "hooks-b")
    other.create_endpoint(receiver.url.replace("/hook", "/b"))
    ws.emit()
    ws.dispatch(jobs_db)
    other.dispatch(jobs_db)
    assert [h for h, _ in receiver.received] and len(receiver.received) == 1
    with fresh_db.admin() as conn:
        (delivery_id,) = conn.execute("SELECT id FROM webhook_deliveries").fetchone()  # type: ignore[misc]
    for workspace in (ws.id, other.id):
        problem(call(api, "POST", f"/workspaces/{workspace}/webhook-endpoints/{a_hook['id']}/deliveries/"
                     f"{delivery_id}/replay", other.owner), 404)
        problem(call(api, "GET", f"/workspaces/{workspace}/webhook-endpoints/{a_hook['id']}/deliveries",
                     other.owner), 404)


def test_rotation_signs_with_both_secrets_for_a_day(ws: Ws, receiver: Receiver, jobs_db: Database) -> None:
    created = ws.create_endpoint(receiver.url)
    rotated = call(ws.client, "POST", f"/workspaces/{ws.id}/webhook-endpoints/{created['id']}/rotate-secret",
                   ws.owner)
    new = body_of(rotated)["secret"]
    assert new != created["secret"] and new.startswith("whsec_")
    with time_machine.travel(clock.now(), tick=False) as traveller:
        ws.emit()
        ws.dispatch(jobs_db)
        headers, _ = receiver.received[0]
        assert len(headers["webhook-signature"].split(" ")) == 2
        receiver.verified(created["secret"])
        receiver.verified(new)
        traveller.shift(timedelta(hours=24, seconds=1))
        ws.emit()
        ws.dispatch(jobs_db)
    headers, body = receiver.received[1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(created["secret"]).verify(body, {**headers, "webhook-timestamp":
                                                                   str(int(clock.now().timestamp()))})


def test_replay_sends_the_same_webhook_id_again_and_ping_reaches_the_endpoint(ws: Ws, receiver: Receiver,
                                                                              jobs_db: Database,
                                                                              webhook_trigger: Any) -> None:
    created = ws.create_endpoint(receiver.url)
    base = f"/workspaces/{ws.id}/webhook-endpoints/{created['id']}"
    ws.emit()
    ws.dispatch(jobs_db)
    first = body_of(call(ws.client, "GET", base + "/deliveries", ws.owner))["data"][0]
    replayed = call(ws.client, "POST", f"{base}/deliveries/{first['delivery_id']}/replay", ws.owner)
    assert replayed.status_code == 202 and body_of(replayed)["webhook_id"] == first["webhook_id"]
    assert (ws.tenant, 0) in webhook_trigger.woken
    ws.dispatch(jobs_db)
    assert [h["webhook-id"] for h, _ in receiver.received] == [first["webhook_id"]] * 2
    pinged = call(ws.client, "POST", base + "/test", ws.owner)
    assert pinged.status_code == 202
    ws.dispatch(jobs_db)
    assert receiver.verified(created["secret"])[-1] == {
        "type": "ping", "timestamp": receiver.verified(created["secret"])[-1]["timestamp"],
        "data": {"endpoint_id": created["id"], "message": "ping"}}
    attempts = body_of(call(ws.client, "GET", base + "/deliveries?limit=2", ws.owner))
    assert len(attempts["data"]) == 2 and attempts["next_cursor"]
    rest = body_of(call(ws.client, "GET", base + f"/deliveries?limit=2&cursor={attempts['next_cursor']}", ws.owner))
    assert [e["attempt"] for e in rest["data"]] == [1]


# ---- crashes and concurrency ----


def test_a_dispatcher_dying_after_the_send_loses_nothing(ws: Ws, receiver: Receiver, jobs_db: Database,
                                                         fresh_db: TestDatabase,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    created = ws.create_endpoint(receiver.url)
    request = outbound.request

    class Died(BaseException):
        """The process dying (not an error the dispatcher records as a failed attempt)."""

    def send_then_die(*args: Any, **kwargs: Any) -> outbound.OutboundResponse:
        request(*args, **kwargs)
        raise Died("the dispatcher died before its bookkeeping")

    with time_machine.travel(clock.now(), tick=False) as traveller:
        ws.emit()
        ws.emit()
        with monkeypatch.context() as patch, pytest.raises(Died):
            patch.setattr(outbound, "request", send_then_die)
            ws.dispatch(jobs_db)
        assert ws.dispatch(jobs_db) == 0  # the batch it claimed stays leased: nobody else sends it meanwhile
        traveller.shift(delivery.lease(delivery.BATCH) + timedelta(seconds=1))
        assert ws.dispatch(jobs_db) == 2
    ids = [h["webhook-id"] for h, _ in receiver.received]
    assert len(ids) == 3 and len(set(ids)) == 2  # at least once; the repeat carries the same webhook-id
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT status, count(*) FROM webhook_deliveries GROUP BY 1").fetchall() == [
            ("succeeded", 2)]
    # Each logged attempt is consistent with its delivery; the interrupted claim's number is skipped.
    assert [(r[0], r[1], r[3]) for r in _attempts(fresh_db, created["id"])] == [(2, 200, "succeeded")] * 2


def test_two_dispatchers_never_send_the_same_delivery(ws: Ws, receiver: Receiver, jobs_db: Database) -> None:
    ws.create_endpoint(receiver.url)
    for _ in range(30):
        ws.emit()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(ws.dispatch(jobs_db, limit=5))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [h["webhook-id"] for h, _ in receiver.received]
    assert sum(results) == 30 and len(ids) == 30 and len(set(ids)) == 30


def test_a_deleted_workspace_stops_delivering_at_once(ws: Ws, receiver: Receiver, jobs_db: Database) -> None:
    ws.create_endpoint(receiver.url)
    ws.emit()
    assert call(ws.client, "DELETE", f"/workspaces/{ws.id}", ws.owner).status_code in (202, 204)
    assert ws.dispatch(jobs_db) == 0 and receiver.received == []


def test_secrets_and_bodies_never_reach_the_logs(ws: Ws, receiver: Receiver, jobs_db: Database, logs: Any) -> None:
    created = ws.create_endpoint(receiver.url)
    ws.emit("contact.created", {"id": "c1", "note": CANARY})
    receiver.plan = [500]
    ws.dispatch(jobs_db)
    text = logs.getvalue()
    assert "webhook attempt" in text
    assert created["secret"] not in text and created["secret"][6:] not in text and CANARY not in text


def test_no_endpoint_means_no_stored_event(ws: Ws, fresh_db: TestDatabase) -> None:
    ws.emit()
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM webhook_messages").fetchone() == (0,)


def test_the_app_role_cannot_emit_into_another_workspace(ws: Ws, api: Client, receiver: Receiver,
                                                         fresh_db: TestDatabase) -> None:
    other = _workspace(api, "hooks-c")
    other.create_endpoint(receiver.url)
    with tenant_tx(ws.tenant) as conn:  # A's transaction naming B: B's endpoints are invisible, nothing is stored
        events.emit(conn, tenant_id=other.tenant, event_type="contact.created", data={"id": "x"})
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM webhook_messages").fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_tx(ws.tenant) as conn:
        conn.execute("INSERT INTO webhook_messages (tenant_id, type, data) VALUES (%s, 'contact.created', '{}')",
                     (other.tenant,)).fetchall()


def test_a_secret_that_does_not_open_sends_nothing_unsigned(ws: Ws, receiver: Receiver, jobs_db: Database,
                                                            fresh_db: TestDatabase) -> None:
    created = ws.create_endpoint(receiver.url)
    with fresh_db.admin() as conn:  # e.g. a ciphertext bound to another workspace, or damaged
        conn.execute("UPDATE webhook_endpoints SET secret_ciphertext = '\\x0102'")
    ws.emit()
    assert ws.dispatch(jobs_db) == 1
    assert receiver.received == []
    assert _attempts(fresh_db, created["id"]) == [(1, None, "secret_unreadable", "pending")]


def test_an_endpoint_rate_limit_spaces_its_sends(ws: Ws, receiver: Receiver, jobs_db: Database,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ws.create_endpoint(receiver.url, rate_limit_per_s=4)
    for _ in range(3):
        ws.emit()
    now = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        now[0] += seconds

    monkeypatch.setattr(delivery, "_monotonic", lambda: now[0])
    monkeypatch.setattr(delivery, "_sleep", sleep)
    assert ws.dispatch(jobs_db) == 3
    assert slept == [0.25, 0.25]  # 4 per second: the 2nd and 3rd send wait a quarter second each


def test_a_disabled_endpoint_keeps_its_pending_deliveries_until_enabled_again(ws: Ws, receiver: Receiver,
                                                                             jobs_db: Database) -> None:
    created = ws.create_endpoint(receiver.url)
    ws.emit()
    assert delivery.fan_out(ws.tenant, db=jobs_db) == 1  # its delivery is queued (the dispatcher's first step)
    item = f"/workspaces/{ws.id}/webhook-endpoints/{created['id']}"
    assert call(ws.client, "PATCH", item, ws.owner, {"enabled": False}).status_code == 200
    assert ws.dispatch(jobs_db) == 0 and receiver.received == []
    assert call(ws.client, "PATCH", item, ws.owner, {"enabled": True}).status_code == 200
    assert ws.dispatch(jobs_db) == 1 and len(receiver.received) == 1


def test_fan_out_gives_each_event_to_the_enabled_endpoints_subscribed_to_it_once(ws: Ws, receiver: Receiver,
                                                                                  jobs_db: Database,
                                                                                  fresh_db: TestDatabase) -> None:
    every = ws.create_endpoint(receiver.url)["id"]
    won = ws.create_endpoint(receiver.url, ["lead.won"])["id"]
    off = ws.create_endpoint(receiver.url)["id"]
    assert call(ws.client, "PATCH", f"/workspaces/{ws.id}/webhook-endpoints/{off}", ws.owner,
                {"enabled": False}).status_code == 200
    ws.emit("contact.created")
    ws.emit("lead.won")
    with fresh_db.admin() as conn:  # the change's transaction stored the events and nothing else
        assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (0,)
    assert delivery.fan_out(ws.tenant, db=jobs_db) == 2
    assert delivery.fan_out(ws.tenant, db=jobs_db) == 0  # never twice
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT d.endpoint_id::text, m.type FROM webhook_deliveries d JOIN webhook_messages m"
                            " ON m.id = d.message_id ORDER BY 1, 2").fetchall()
    assert sorted(rows) == sorted([(every, "contact.created"), (every, "lead.won"), (won, "lead.won")])


def test_more_events_than_one_fan_out_all_go_out_in_one_run_in_commit_order(ws: Ws, receiver: Receiver,
                                                                             jobs_db: Database,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "FAN_OUT", 3)
    ws.create_endpoint(receiver.url)
    emitted = [str(uuid.uuid4()) for _ in range(7)]
    for record in emitted:
        ws.emit(data={"id": record})
    assert ws.dispatch(jobs_db, limit=5) == 7  # batches of 3: each fan-out gives fewer than a batch
    got = [json.loads(body)["data"]["id"] for _, body in receiver.received]
    assert got == emitted, [emitted.index(g) for g in got]


def test_a_call_event_never_copies_the_transcript(ws: Ws, receiver: Receiver, fresh_db: TestDatabase) -> None:
    ws.create_endpoint(receiver.url, ["call.completed"])
    call_id = uuid.uuid4()
    with fresh_db.admin() as conn:
        conn.execute("INSERT INTO calls (tenant_id, id, call_sid, status, recording_enabled, transcription_enabled,"
                     " transcript) VALUES (%s, %s, 'CA1', 'completed', false, true, %s)", (ws.tenant, call_id, CANARY))
    with tenant_tx(ws.tenant) as conn:
        events.emit_row(conn, tenant_id=ws.tenant, event_type="call.completed", table="calls", record_id=call_id)
    with fresh_db.admin() as conn:
        ((data,),) = conn.execute("SELECT data::text FROM webhook_messages").fetchall()
    snapshot = json.loads(data)
    assert CANARY not in data and snapshot["id"] == str(call_id)
    assert not {"transcript", "transcript_corrected_at"} & set(snapshot)


def test_a_never_tried_delivery_is_due_now(ws: Ws, receiver: Receiver, jobs_db: Database) -> None:
    # Deliveries wait at '-infinity' until their first attempt: the next due time is "now", not an error.
    ws.create_endpoint(receiver.url)
    assert delivery.seconds_until_due(ws.tenant, db=jobs_db) is None
    ws.emit()
    assert delivery.seconds_until_due(ws.tenant, db=jobs_db) in (0, 1)


def test_deleting_an_endpoint_while_its_batch_is_in_flight_keeps_the_rest_of_the_bookkeeping(
        ws: Ws, receiver: Receiver, jobs_db: Database, fresh_db: TestDatabase,
        monkeypatch: pytest.MonkeyPatch) -> None:
    doomed = ws.create_endpoint(receiver.url)
    kept = ws.create_endpoint(receiver.url.replace("/hook", "/kept"))
    ws.emit()
    request = outbound.request

    def delete_then_send(*args: Any, **kwargs: Any) -> outbound.OutboundResponse:
        if not receiver.received:  # the doomed endpoint goes while the batch is in flight
            call(ws.client, "DELETE", f"/workspaces/{ws.id}/webhook-endpoints/{doomed['id']}", ws.owner)
        return request(*args, **kwargs)

    monkeypatch.setattr(outbound, "request", delete_then_send)
    assert ws.dispatch(jobs_db) == 2
    assert len(receiver.received) == 2
    assert [r[1:] for r in _attempts(fresh_db, kept["id"])] == [(200, None, "succeeded")]
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (1,)


def test_the_sqs_dispatcher_delivers_a_workspace_once_per_batch_and_follows_up_only_after_work(
        ws: Ws, receiver: Receiver, jobs_db: Database, webhook_trigger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.db.pool import use_database
    from functions import deliver_webhooks

    ws.create_endpoint(receiver.url)
    receiver.plan = [500]
    ws.emit()
    use_database(jobs_db, "jobs")
    monkeypatch.setattr(deliver_webhooks, "start", lambda: jobs_db)
    records = [{"messageId": str(i), "body": ws.id} for i in range(3)]
    try:
        result = deliver_webhooks.handler({"Records": records}, None)
    finally:
        use_database(None, "jobs")  # closes the fixture's pool, which closes it again (idempotent)
    assert result == {"attempts": 1, "batchItemFailures": []}
    # One delayed follow-up for the retry due in about 5 s; none from the duplicates.
    assert [(t, 4 <= d <= 7) for t, d in webhook_trigger.woken] == [(ws.tenant, True)]


def test_a_resource_event_carries_the_resource_exactly_as_the_api_gets_it(ws: Ws, receiver: Receiver,
                                                                          jobs_db: Database) -> None:
    created = ws.create_endpoint(receiver.url, ["contact.created", "lead.created"])
    contact = body_of(call(ws.client, "POST", f"/workspaces/{ws.id}/contacts", ws.owner,
                           {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.test"}))
    lead = body_of(call(ws.client, "POST", f"/workspaces/{ws.id}/leads", ws.owner,
                        {"title": "Engine", "contact_id": contact["id"],
                         "value": {"amount_minor": 125_000, "currency": "EUR"}}))
    ws.dispatch(jobs_db)
    delivered = {e["type"]: e["data"] for e in receiver.verified(created["secret"])}
    for kind, record in (("contact", contact), ("lead", lead)):
        got = body_of(call(ws.client, "GET", f"/workspaces/{ws.id}/{kind}s/{record['id']}", ws.owner))
        # The API's own shape, no column more (no tenant_id, no generated search text), no column less.
        assert delivered[f"{kind}.created"] == got


def test_the_sweep_delivers_every_workspace_and_one_failing_stops_none_of_the_others(
        api: Client, ws: Ws, receiver: Receiver, jobs_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    other = _workspace(api, "hooks-b")
    for workspace in (ws, other):
        workspace.create_endpoint(receiver.url)
        workspace.emit(data={"id": workspace.id})
    events.take_emitted()  # the sweep is what delivers here, not a wake-up
    real = delivery.dispatch_tenant

    def failing_for_ws(tenant: uuid.UUID, **kwargs: Any) -> int:
        if tenant == ws.tenant:
            raise RuntimeError("a fault in one workspace")  # injected: the sweep's isolation is under test
        return real(tenant, **kwargs)

    monkeypatch.setattr(delivery, "dispatch_tenant", failing_for_ws)
    made, failed = delivery.sweep(db=jobs_db)
    assert (made, failed) == (1, [ws.id])
    assert [json.loads(body)["data"]["id"] for _, body in receiver.received] == [other.id]
    monkeypatch.setattr(delivery, "dispatch_tenant", real)
    assert delivery.sweep(db=jobs_db) == (1, [])  # the next sweep picks the failed one up
    assert sorted(json.loads(body)["data"]["id"] for _, body in receiver.received) == sorted([ws.id, other.id])
