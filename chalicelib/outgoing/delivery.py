"""The dispatcher: claim due deliveries, sign and send them, log each attempt, schedule retries.

Runs as the jobs role inside the workspace's tenant transaction (RLS), from functions/deliver_webhooks.py
(SQS after a commit, and a scheduled sweep) or locally from trigger.py's thread.

- **Fan out** (in the claim's transaction): the events the workspace's changes stored since are given one
  delivery, due at once, per enabled endpoint that subscribes to their type (FOR UPDATE SKIP LOCKED, oldest
  first, FAN_OUT at a time). A change's own transaction writes the event alone (events.py).
- **Claim** (one short transaction): due deliveries of enabled endpoints are taken with FOR UPDATE SKIP
  LOCKED, BATCH at a time, their attempt counted and leased for as long as sending them all may take.
  Two dispatchers never hold the same delivery, and
  no transaction stays open while a request is in flight.
- **Send**: POST through the outbound guard (https, public address re-resolved and pinned now, no
  redirects; 3 s to connect, 15 s in all), signed per Standard Webhooks with every valid secret.
- **Settle** (one short transaction): the attempt is logged; 2xx succeeds; 410 disables the endpoint; any
  other answer, a timeout or a refused address is a failure, retried on SCHEDULE, then marked failed. An
  endpoint whose every attempt failed for DISABLE_AFTER is disabled. Both disablings are audited and
  announced to the workspace's other endpoints (endpoint.disabled).
- **Crashes**: a dispatcher that dies between send and settle leaves its delivery leased; when the lease
  runs out it is claimed again and sent again, with the same webhook-id (delivery is at least once:
  receivers deduplicate on webhook-id). The interrupted attempt has no log row; its number is skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib import audit, clock, outbound
from chalicelib.db import queries
from chalicelib.db.pool import Database, get_database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.jobs.common import each_workspace, live_workspaces
from chalicelib.observability import log_event
from chalicelib.outgoing import catalogue, events, signing
from chalicelib.outgoing.endpoints import secret_context
from chalicelib.settings import get_settings
from chalicelib.ttlcache import TTLCache
from chalicelib.vault.envelope import VaultError
from chalicelib.vault.store import get_vault

log = logging.getLogger("crm.webhooks")
Q = queries.load(__package__)
# Seconds to wait before each attempt (Svix's schedule): at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.1  # each wait is stretched or shrunk by up to 10 %, so retries of many deliveries spread out
BATCH = 10  # deliveries claimed at a time
FAN_OUT = 500  # stored events fanned out at a time
BUDGET_S = 120.0  # a dispatcher claims no new batch after this long (the Lambda's timeout is 300 s)
DISABLE_AFTER = timedelta(days=5)
TOTAL_TIMEOUT_S = 15.0  # and 3 s to connect (outbound.CONNECT_TIMEOUT_S)
EXCERPT_BYTES = 1024
USER_AGENT = "crm-webhooks/1 (Standard Webhooks)"


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for one attempt, with what sending it needs."""

    delivery_id: uuid.UUID
    message_id: uuid.UUID
    endpoint_id: uuid.UUID
    attempt: int
    url: str
    rate_limit_per_s: int | None
    secret_ciphertext: bytes
    previous_ciphertext: bytes | None
    previous_expires_at: datetime | None
    event_type: str
    resource: str | None
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code, or the class of error that stopped it."""

    status_code: int | None
    duration_ms: int
    error_class: str | None = None
    excerpt: str | None = None

    @property
    def succeeded(self) -> bool:
        """Any 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300


def body_of(event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    """The delivered body: {"type", "timestamp", "data"} (compact JSON, UTF-8)."""
    return json.dumps({"type": event_type, "timestamp": catalogue.timestamp(created_at), "data": data},
                      separators=(",", ":"), ensure_ascii=False).encode()


# Decrypted secrets by (workspace, endpoint, ciphertext): a rotation brings a new ciphertext, so an entry is
# never served for another secret; one workspace's entry can never serve another's endpoint.
_SECRETS: TTLCache[tuple[uuid.UUID, uuid.UUID, bytes], str] = TTLCache(300.0)


def _decrypt(tenant: uuid.UUID, endpoint_id: uuid.UUID, ciphertext: bytes) -> str:
    key = (tenant, endpoint_id, ciphertext)
    secret = _SECRETS.get(key)
    if secret is None:
        secret = get_vault().decrypt(ciphertext, secret_context(tenant, endpoint_id)).plaintext.decode()
        _SECRETS.put(key, secret)
    return secret


def _secrets(tenant: uuid.UUID, claimed: Claimed, now: datetime) -> list[str]:
    """The secrets a delivery is signed with: the current one, and the previous one during its grace day
    (left out if it does not open: a workspace restored as a copy rotates away a secret bound to its source)."""
    found = [_decrypt(tenant, claimed.endpoint_id, claimed.secret_ciphertext)]
    if claimed.previous_ciphertext is not None and claimed.previous_expires_at is not None \
            and claimed.previous_expires_at > now:
        with contextlib.suppress(VaultError):
            found.append(_decrypt(tenant, claimed.endpoint_id, claimed.previous_ciphertext))
    return found


def send(tenant: uuid.UUID, claimed: Claimed, *, resolver: outbound.Resolver | None = None) -> Outcome:
    """One signed POST of the claimed delivery; never raises for the receiver's or the network's faults.

    The receiver is the workspace's own endpoint (its controller's choice), not a sub-processor: the
    sub-processor walk lists this call site as such."""
    now = clock.now()
    body = body_of(claimed.event_type, claimed.created_at,
                   catalogue.render(claimed.resource, claimed.data))
    msg_id, stamp = signing.webhook_id(claimed.message_id), int(now.timestamp())
    try:
        valid = _secrets(tenant, claimed, now)
    except VaultError:
        return Outcome(None, 0, "secret_unreadable")  # nothing unsigned ever leaves
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
               "webhook-signature": signing.signature_header(valid, msg_id, stamp, body),
               "Content-Type": "application/json", "User-Agent": USER_AGENT}
    started = time.monotonic()
    try:
        response = outbound.request("POST", claimed.url, headers=headers, body=body, max_bytes=EXCERPT_BYTES,
                                    truncate=True, allow=get_settings().outbound_allow,
                                    total_timeout_s=TOTAL_TIMEOUT_S, resolver=resolver)
    except outbound.OutboundRefused as exc:
        return Outcome(None, _ms(started), exc.kind)
    excerpt = response.body[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return Outcome(response.status, _ms(started), None, excerpt)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def next_attempt_at(attempt: int, now: datetime, rand: Callable[[], float] = random.random) -> datetime | None:
    """When attempt number `attempt` + 1 is due after attempt `attempt` failed (None: the schedule is over)."""
    if attempt >= len(SCHEDULE):
        return None
    wait = SCHEDULE[attempt] * (1 + JITTER * (2 * rand() - 1))
    return now + timedelta(seconds=wait)


def lease(limit: int) -> timedelta:
    """How long a claimed batch is held: long enough to send all of it at the longest, plus a margin."""
    return timedelta(seconds=TOTAL_TIMEOUT_S * limit + 30)


def _claim(db: Database, tenant: uuid.UUID, now: datetime, limit: int) -> tuple[list[Claimed], int]:
    """Fan out what was stored since, then claim up to `limit` due deliveries, in one transaction (one round
    trip); returns the claimed deliveries and the number of events fanned out."""
    with tenant_tx(tenant, db=db) as conn:
        fanned = conn.execute(Q["messages_fan_out"], {"now": now, "limit": FAN_OUT})
        rows = conn.execute(Q["deliveries_claim"],
                            {"now": now, "lease_until": now + lease(limit), "limit": limit}).fetchall()
        row = fanned.fetchone()
    claimed = [Claimed(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7]) if r[7] is not None else None,
                       r[8], r[9], r[10], r[11], r[12]) for r in rows]
    # An UPDATE returns its rows in no particular order: send the batch in the events' order.
    claimed.sort(key=lambda c: c.created_at)
    return claimed, int(row[0]) if row else 0


def fan_out(tenant: uuid.UUID, *, db: Database | None = None) -> int:
    """Fan out the workspace's stored events without claiming any delivery; returns how many (tests and
    tools look at deliveries before they are sent)."""
    with tenant_tx(tenant, db=db or get_database("jobs")) as conn:
        row = conn.execute(Q["messages_fan_out"], {"now": clock.now(), "limit": FAN_OUT}).fetchone()
    return int(row[0]) if row else 0


def _disable(conn: Any, tenant: uuid.UUID, endpoint_id: uuid.UUID, reason: str, now: datetime) -> None:
    if not conn.execute(Q["endpoint_disable"], (reason, now, endpoint_id)).fetchall():
        return
    audit.record(conn, tenant_id=tenant, action="webhook_endpoint.disabled", actor=audit.SYSTEM,
                 target_type="webhook_endpoint", target_id=endpoint_id, details={"reason": reason})
    events.emit(conn, tenant_id=tenant, event_type="endpoint.disabled",
                data={"endpoint_id": str(endpoint_id), "reason": reason})
    log_event(log, "webhook endpoint disabled", reason=reason)


def settle(db: Database, tenant: uuid.UUID, results: list[tuple[Claimed, Outcome]], *,
           now: datetime | None = None, rand: Callable[[], float] = random.random) -> list[str]:
    """Log a batch's attempts and move each delivery on, in one transaction of a few set-wide statements;
    returns their statuses (pending, succeeded or failed; deleted for one whose endpoint was deleted
    meanwhile)."""
    now = now or clock.now()
    settled: dict[uuid.UUID, tuple[str, datetime | None]] = {}
    answered: set[uuid.UUID] = set()
    gone: set[uuid.UUID] = set()
    failing: set[uuid.UUID] = set()
    with tenant_tx(tenant, db=db) as conn:
        there = {row[0] for row in conn.execute(Q["deliveries_still_there"],
                                                 ([c.delivery_id for c, _ in results],)).fetchall()}
        # A delivery missing here went with its endpoint, deleted while the delivery was in flight.
        kept = [(claimed, outcome) for claimed, outcome in results if claimed.delivery_id in there]
        for claimed, outcome in kept:
            due = None
            if outcome.succeeded:
                status = "succeeded"
                answered.add(claimed.endpoint_id)
            elif outcome.status_code == 410:
                status = "failed"
                gone.add(claimed.endpoint_id)
            else:
                due = next_attempt_at(claimed.attempt, now, rand)
                status = "pending" if due is not None else "failed"
                failing.add(claimed.endpoint_id)
            settled[claimed.delivery_id] = (status, due)
        if kept:
            conn.execute(Q["attempts_insert"], {
                "tenant": tenant, "now": now, "deliveries": [c.delivery_id for c, _ in kept],
                "attempts": [c.attempt for c, _ in kept], "codes": [o.status_code for _, o in kept],
                "durations": [o.duration_ms for _, o in kept], "errors": [o.error_class for _, o in kept],
                "excerpts": [o.excerpt for _, o in kept]})
            conn.execute(Q["deliveries_settle"], {
                "now": now, "ids": list(settled), "statuses": [s for s, _ in settled.values()],
                "dues": [d for _, d in settled.values()]})
        for endpoint_id in gone:
            _disable(conn, tenant, endpoint_id, "gone", now)
        # An endpoint that answered 2xx in this batch is not failing.
        for endpoint_id in failing - gone - answered:
            row = conn.execute(Q["endpoint_failed"], (now, endpoint_id)).fetchone()
            if row is not None and row[0] is not None and now - row[0] >= DISABLE_AFTER:
                _disable(conn, tenant, endpoint_id, "failing", now)
        if answered:
            conn.execute(Q["endpoints_succeeded"], (list(answered),))
    statuses = [settled[c.delivery_id][0] if c.delivery_id in settled else "deleted" for c, _ in results]
    for (claimed, outcome), status in zip(results, statuses, strict=True):
        log_event(log, "webhook attempt", event_type=claimed.event_type, attempt=claimed.attempt, status=status,
                  status_code=outcome.status_code, error_class=outcome.error_class, duration_ms=outcome.duration_ms)
    return statuses


def dispatch_tenant(tenant: uuid.UUID, *, db: Database | None = None, limit: int = BATCH,
                    budget_s: float = BUDGET_S, resolver: outbound.Resolver | None = None) -> int:
    """Deliver what is due in one workspace, a batch at a time, until nothing is due or the budget is spent
    (what is left stays due for the next dispatcher); returns the number of attempts made."""
    db = db or get_database("jobs")
    made = 0
    last_sent: dict[uuid.UUID, float] = {}
    started = time.monotonic()
    while time.monotonic() - started < budget_s:
        batch, fanned = _claim(db, tenant, clock.now(), limit)
        results = []
        for claimed in batch:
            _pace(claimed, last_sent)
            results.append((claimed, _attempt(tenant, claimed, resolver)))
        if results:
            # One transaction for the batch's bookkeeping. A crash before it leaves the batch leased: it is
            # claimed and sent again when the lease ends (at least once, same webhook-id).
            settle(db, tenant, results)
        made += len(results)
        # endpoint.disabled, stored by the bookkeeping, goes out in this same run, as do events beyond FAN_OUT.
        if len(batch) < limit and fanned < FAN_OUT and not events.take_emitted():
            break
    return made


def _attempt(tenant: uuid.UUID, claimed: Claimed, resolver: outbound.Resolver | None) -> Outcome:
    """send(), with anything it did not foresee (a payload that no longer renders) logged as a failed
    attempt of its class: the batch's bookkeeping always runs, and the delivery reaches `failed` in time."""
    started = time.monotonic()
    try:
        return send(tenant, claimed, resolver=resolver)
    except Exception as exc:  # noqa: BLE001 - recorded on the attempt (class only), never raised
        return Outcome(None, _ms(started), type(exc).__name__)


# The pacing clock, apart from the module `time` so a test can move it without moving everyone's.
_monotonic, _sleep = time.monotonic, time.sleep


def _pace(claimed: Claimed, last_sent: dict[uuid.UUID, float]) -> None:
    # An endpoint's rate limit holds within a dispatcher; across concurrent dispatchers it is approximate.
    if claimed.rate_limit_per_s:
        gap = 1.0 / claimed.rate_limit_per_s - (_monotonic() - last_sent.get(claimed.endpoint_id, -1e9))
        if gap > 0:
            _sleep(gap)
    last_sent[claimed.endpoint_id] = _monotonic()


def next_due(tenant: uuid.UUID, *, db: Database | None = None) -> datetime | None:
    """When the workspace's next pending delivery is due, never before now (None: nothing pending)."""
    with tenant_tx(tenant, db=db or get_database("jobs")) as conn:
        row = conn.execute(Q["next_due"], (clock.now(),)).fetchone()
    return row[0] if row else None


def seconds_until_due(tenant: uuid.UUID, *, db: Database | None = None) -> int | None:
    """Whole seconds (rounded up) until the workspace's next delivery is due (None: nothing pending)."""
    due = next_due(tenant, db=db)
    return None if due is None else max(0, int((due - clock.now()).total_seconds()) + 1)


def sweep(*, db: Database | None = None) -> tuple[int, list[str]]:
    """Deliver what is due in every live workspace (the scheduled safety net and the retries' clock), one
    workspace's failure stopping none of the others (jobs.common.each_workspace). Returns the attempts made and
    the ids of the workspaces that failed."""
    db = db or get_database("jobs")
    outcome = each_workspace("deliver_webhooks", live_workspaces(db),
                             lambda tenant: {"attempts": dispatch_tenant(tenant, db=db)})
    return outcome.counts.get("attempts", 0), outcome.failed
