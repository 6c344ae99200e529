"""purge_audit_log, purge_auth and purge_webhook_log: exact cutoffs, small batches, tombstones, claims, failures
kept apart."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from psycopg import sql

from chalicelib.blobs import LocalBlobs
from chalicelib.db.pool import Database, use_database
from chalicelib.jobs.common import Outcome, each_workspace
from chalicelib.jobs.delete import delete_workspace
from chalicelib.jobs.purge import (
    AUTH_MARGIN,
    Batch,
    delete_older,
    purge_audit_log,
    purge_auth,
    purge_webhook_log,
    run_claimed,
)
from chalicelib.settings import get_settings
from functions import purge_audit_log as audit_function
from functions import purge_auth as auth_function
from functions import purge_webhook_log as webhook_function
from tests.conftest import TestDatabase, make_tenant

# 01:30 UTC on the day Europe's clocks jump: the cutoff is exact UTC arithmetic, whatever the zone.
NOW = datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
YEAR = timedelta(days=365)
SECOND = timedelta(seconds=1)


@pytest.fixture
def installed_jobs_db(jobs_db: Database) -> Iterator[Database]:
    """The jobs pool installed process-wide, for handler() and main() (which call start())."""
    use_database(jobs_db, "jobs")
    yield jobs_db
    use_database(None, "jobs")


def add_audit(db: TestDatabase, tenant: uuid.UUID, *ages: timedelta, now: datetime = NOW) -> None:
    """One audit entry of `tenant` per age (relative to `now`), written as the superuser."""
    with db.admin() as conn:
        for age in ages:
            conn.execute("INSERT INTO audit_log (tenant_id, action, occurred_at, details)"
                         " VALUES (%s, 'lead.updated', %s, '{\"n\": 1}')", (tenant, now - age))


def add_many_audit(db: TestDatabase, tenant: uuid.UUID, count: int, age: timedelta) -> None:
    with db.admin() as conn:
        conn.execute("INSERT INTO audit_log (tenant_id, action, occurred_at) SELECT %s, 'contact.created',"
                     " %s - g * interval '1 second' FROM generate_series(1, %s) g", (tenant, NOW - age, count))


def audit_times(db: TestDatabase, tenant: uuid.UUID) -> list[datetime]:
    with db.admin() as conn:
        rows = conn.execute("SELECT occurred_at FROM audit_log WHERE tenant_id = %s ORDER BY occurred_at",
                            (tenant,)).fetchall()
    return [r[0] for r in rows]  # type: ignore[misc]


def audit_snapshot(db: TestDatabase) -> set[tuple[object, ...]]:
    with db.admin() as conn:
        return set(conn.execute("SELECT tenant_id, id, occurred_at FROM audit_log").fetchall())


def count(db: TestDatabase, query: str) -> int:
    with db.admin() as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return int(str(row[0]))


# --- purge_audit_log -------------------------------------------------------------------------------


def test_audit_entries_of_366_days_go_and_of_364_days_stay(fresh_db: TestDatabase, jobs_db: Database) -> None:
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    for tenant in (a, b):
        add_audit(fresh_db, tenant, timedelta(days=364), timedelta(days=366), timedelta(days=1))
    outcome = purge_audit_log(jobs_db, NOW)
    assert outcome.failed == []
    assert outcome.counts["audit_rows"] == 2
    for tenant in (a, b):
        assert audit_times(fresh_db, tenant) == [NOW - timedelta(days=364), NOW - timedelta(days=1)]


def test_audit_cutoff_is_exact_to_the_second_around_365_days(fresh_db: TestDatabase, jobs_db: Database) -> None:
    tenant = make_tenant(fresh_db)
    add_audit(fresh_db, tenant, YEAR + SECOND, YEAR, YEAR - SECOND)
    purge_audit_log(jobs_db, NOW)
    # Older than 365 days goes; exactly 365 days (and anything younger) is still within retention.
    assert audit_times(fresh_db, tenant) == [NOW - YEAR, NOW - YEAR + SECOND]


def test_account_audit_log_is_purged_by_the_same_rule(fresh_db: TestDatabase, jobs_db: Database) -> None:
    with fresh_db.admin() as conn:
        for age in (YEAR + SECOND, YEAR, timedelta(days=366), timedelta(days=364)):
            conn.execute("INSERT INTO account_audit_log (action, occurred_at) VALUES ('signin.requested', %s)",
                         (NOW - age,))
    outcome = purge_audit_log(jobs_db, NOW)
    assert outcome.counts["account_audit_log"] == 2
    with fresh_db.admin() as conn:
        left = [r[0] for r in conn.execute("SELECT occurred_at FROM account_audit_log ORDER BY 1")]
    assert left == [NOW - YEAR, NOW - timedelta(days=364)]


def test_audit_purge_deletes_in_batches_of_the_given_size(fresh_db: TestDatabase, jobs_db: Database) -> None:
    tenant = make_tenant(fresh_db)
    add_many_audit(fresh_db, tenant, 25, timedelta(days=400))
    add_many_audit(fresh_db, tenant, 3, timedelta(days=10))
    batches: list[Batch] = []
    outcome = purge_audit_log(jobs_db, NOW, batch_size=10, on_batch=batches.append)
    assert [(b.table, b.workspace_id, b.rows) for b in batches if b.table == "audit_log"] == [
        ("audit_log", tenant, 10), ("audit_log", tenant, 10), ("audit_log", tenant, 5)]
    assert outcome.counts["audit_rows"] == 25
    assert len(audit_times(fresh_db, tenant)) == 3


def test_audit_purge_takes_rows_sharing_a_timestamp_across_batch_boundaries(fresh_db: TestDatabase,
                                                                           jobs_db: Database) -> None:
    tenant = make_tenant(fresh_db)
    add_many_audit(fresh_db, tenant, 8, timedelta(days=500))
    add_audit(fresh_db, tenant, *[timedelta(days=450)] * 12)  # one instant, straddling batches of 10
    add_many_audit(fresh_db, tenant, 15, timedelta(days=400))
    add_audit(fresh_db, tenant, YEAR, timedelta(days=30))
    batches: list[Batch] = []
    outcome = purge_audit_log(jobs_db, NOW, batch_size=10, on_batch=batches.append)
    assert outcome.counts["audit_rows"] == 35
    assert audit_times(fresh_db, tenant) == [NOW - YEAR, NOW - timedelta(days=30)]
    assert all(b.rows <= 10 + 12 for b in batches)


def test_deleted_workspace_audit_rows_are_purged_and_its_tombstone_dropped(
        fresh_db: TestDatabase, jobs_db: Database, tmp_path: Path) -> None:
    old_only, mixed, live = (make_tenant(fresh_db, n) for n in ("old", "mixed", "live"))
    add_audit(fresh_db, old_only, timedelta(days=400), timedelta(days=380))
    add_audit(fresh_db, mixed, timedelta(days=400), timedelta(days=20))
    add_audit(fresh_db, live, timedelta(days=400))
    for tenant in (old_only, mixed):
        delete_workspace(jobs_db, tenant, LocalBlobs(tmp_path))
    tombstones = "SELECT count(*) FROM workspace_tombstones"
    assert count(fresh_db, tombstones) == 2
    outcome = purge_audit_log(jobs_db, NOW)
    assert (outcome.counts["audit_rows"], outcome.counts["tombstones_dropped"]) == (4, 1)
    assert audit_times(fresh_db, old_only) == []
    assert audit_times(fresh_db, mixed) == [NOW - timedelta(days=20)]
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT workspace_id FROM workspace_tombstones").fetchall() == [(mixed,)]
    # A year later the last entry has aged out too, and the tombstone goes with it.
    purge_audit_log(jobs_db, NOW + YEAR)
    assert audit_times(fresh_db, mixed) == []
    assert count(fresh_db, tombstones) == 0


def test_purge_crashing_after_some_batches_completes_on_the_next_run(fresh_db: TestDatabase,
                                                                    jobs_db: Database) -> None:
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    for tenant in (a, b):
        add_many_audit(fresh_db, tenant, 35, YEAR + SECOND)
        add_audit(fresh_db, tenant, YEAR, YEAR - SECOND, timedelta(days=2))
    kept = {row for row in audit_snapshot(fresh_db) if row[2] >= NOW - YEAR}  # type: ignore[operator]
    seen: list[Batch] = []

    def crash_in_a(batch: Batch) -> None:
        seen.append(batch)
        if batch.workspace_id == a and sum(1 for s in seen if s.workspace_id == a) == 2:
            raise RuntimeError("fault injected after the second batch")

    crashed = purge_audit_log(jobs_db, NOW, batch_size=10, on_batch=crash_in_a)
    assert crashed.failed == [str(a)]
    assert len(audit_times(fresh_db, a)) == 35 - 20 + 3  # two committed batches, nothing newer touched
    assert len(audit_times(fresh_db, b)) == 3  # the other workspace went on
    again = purge_audit_log(jobs_db, NOW, batch_size=10)
    assert (again.failed, again.counts["audit_rows"]) == ([], 15)
    assert audit_snapshot(fresh_db) == kept


def test_one_workspace_failing_does_not_stop_the_rest() -> None:
    ids = [uuid.UUID(int=n) for n in (1, 2, 3)]
    done: list[uuid.UUID] = []

    def work(tenant: uuid.UUID) -> dict[str, int]:
        if tenant == ids[1]:
            raise RuntimeError("this workspace is broken")
        done.append(tenant)
        return {"rows": 2}

    outcome = each_workspace("test", ids, work)
    assert (done, outcome.failed, outcome.counts) == ([ids[0], ids[2]], [str(ids[1])], {"rows": 4})


def test_cli_exits_1_when_a_workspace_fails_and_purges_the_others(fresh_db: TestDatabase, staff_env: Path) -> None:
    broken, fine = make_tenant(fresh_db, "broken"), make_tenant(fresh_db, "fine")
    for tenant in (broken, fine):
        add_audit(fresh_db, tenant, timedelta(days=400), timedelta(days=3))
    with fresh_db.admin() as conn:  # a real failure inside the database, for one workspace only
        conn.execute("CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS"
                     " $$ BEGIN RAISE EXCEPTION 'refused'; END $$")
        conn.execute(sql.SQL("CREATE TRIGGER refuse BEFORE DELETE ON audit_log FOR EACH ROW"
                             " WHEN (OLD.tenant_id = {}) EXECUTE FUNCTION public.refuse()").format(
                                 sql.Literal(str(broken))))
    assert audit_function.main(["--now", NOW.isoformat()]) == 1
    assert len(audit_times(fresh_db, broken)) == 2
    assert audit_times(fresh_db, fine) == [NOW - timedelta(days=3)]


def test_overlapping_runs_for_one_slot_do_the_work_once_and_a_later_slot_runs_again(
        fresh_db: TestDatabase) -> None:
    tenant = make_tenant(fresh_db)
    add_many_audit(fresh_db, tenant, 30, timedelta(days=400))
    pools = [Database(fresh_db.jobs_url, size=1, name="jobs") for _ in range(4)]
    start = threading.Barrier(len(pools))
    results: list[Outcome | None] = []

    def invoke(db: Database) -> None:
        start.wait()
        results.append(audit_function.run(db, NOW))

    threads = [threading.Thread(target=invoke, args=(db,)) for db in pools]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = [r for r in results if r is not None]
    assert len(results) == 4 and len(done) == 1 and done[0].counts["audit_rows"] == 30
    assert audit_function.run(pools[0], NOW) is None  # a sequential retry of the same slot, too
    with fresh_db.admin() as conn:
        runs = conn.execute("SELECT scheduled_for, finished_at IS NOT NULL, counts->>'audit_rows' FROM job_runs"
                            " WHERE name = 'purge_audit_log'").fetchall()
    assert runs == [(NOW, True, "30")]
    add_many_audit(fresh_db, tenant, 5, timedelta(days=400))
    later = audit_function.run(pools[1], NOW + timedelta(days=1))
    assert later is not None and later.counts["audit_rows"] == 5
    for db in pools:
        db.close()


def test_a_run_that_raises_gives_its_slot_back(fresh_db: TestDatabase, jobs_db: Database) -> None:
    def broken() -> Outcome:
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        run_claimed(jobs_db, "purge_audit_log", NOW, broken)
    retried = run_claimed(jobs_db, "purge_audit_log", NOW, lambda: purge_audit_log(jobs_db, NOW))
    assert retried is not None


def test_handler_uses_the_event_time_and_logs_counts_only(
        fresh_db: TestDatabase, installed_jobs_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    tenant = make_tenant(fresh_db)
    canary = "CANARY-audit-" + uuid.uuid4().hex
    with fresh_db.admin() as conn:
        conn.execute("INSERT INTO audit_log (tenant_id, action, occurred_at, details, user_agent)"
                     " VALUES (%s, 'note.created', %s, jsonb_build_object('body', %s::text), %s)",
                     (tenant, NOW - timedelta(days=366), canary, canary))
    event = {"source": "aws.events", "time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert audit_function.handler(event, None) == {"claimed": True, "counts": {
        "audit_rows": 1, "account_audit_log": 0}, "failed": []}
    assert audit_function.handler(event, None) == {"claimed": False}
    assert audit_times(fresh_db, tenant) == []
    text = capsys.readouterr().out  # start() sends the JSON log to stdout, as on Lambda
    assert canary not in text
    finished = [json.loads(line) for line in text.splitlines() if "job finished" in line]
    assert [(line["job"], line["counts"]["audit_rows"]) for line in finished] == [("purge_audit_log", 1)]


# --- purge_auth ---------------------------------------------------------------------------------------


def seed_auth(db: TestDatabase, tenants: list[uuid.UUID]) -> tuple[set[str], set[str]]:
    """Rows of every kind purge_auth handles, labelled; returns (labels to delete, labels to keep)."""
    idle = timedelta(seconds=get_settings().session_idle_timeout_s)
    gone: set[str] = set()
    kept: set[str] = set()
    with db.admin() as conn:
        user = uuid.uuid4()
        conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user, f"u-{user.hex}@example.com"))
        tokens = {  # label: (expires_at, used_at), label prefix says the verdict
            "gone-expired": (NOW - AUTH_MARGIN - SECOND, None),
            "gone-used": (NOW + timedelta(minutes=10), NOW - AUTH_MARGIN - SECOND),
            "kept-live": (NOW + timedelta(minutes=10), None),
            "kept-just-expired": (NOW - SECOND, None),
        }
        for label, (expires, used) in tokens.items():
            conn.execute("INSERT INTO login_tokens (token_hash, code_hash, purpose, email, next_path, created_at,"
                         " expires_at, used_at) VALUES (%s, %s, 'login', 'x@example.com', %s, %s, %s, %s)",
                         (uuid.uuid4().bytes, b"c", "/" + label, NOW - timedelta(minutes=20), expires, used))
        sessions = {  # label: (last_seen_at, expires_at, revoked_at)
            "gone-revoked": (NOW - timedelta(minutes=1), NOW + timedelta(days=3), NOW - timedelta(minutes=1)),
            "gone-absolute": (NOW - timedelta(minutes=10), NOW - AUTH_MARGIN - SECOND, None),
            "gone-idle": (NOW - idle - AUTH_MARGIN - SECOND, NOW + timedelta(days=3), None),
            "kept-live": (NOW - timedelta(minutes=1), NOW + timedelta(days=3), None),
            "kept-idle-within-margin": (NOW - idle - SECOND, NOW + timedelta(days=3), None),
        }
        for label, (seen, expires, revoked) in sessions.items():
            conn.execute("INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at,"
                         " revoked_at, user_agent) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         (uuid.uuid4().bytes, user, NOW - timedelta(days=20), seen, expires, revoked, label))
        for label, window in {"gone-2-days": NOW - timedelta(days=2), "kept-now": NOW - timedelta(minutes=15),
                              "kept-23-hours": NOW - timedelta(hours=23)}.items():
            conn.execute("INSERT INTO rate_limits (bucket, window_start, hits) VALUES (%s, %s, 1)",
                         (label.encode(), window))
        for tenant in tenants:
            for label, created in {"gone-25h": NOW - timedelta(hours=25), "kept-23h": NOW - timedelta(hours=23)
                                   }.items():
                conn.execute("INSERT INTO idempotency_keys (tenant_id, key, route, request_hash, status,"
                             " response_body, created_at) VALUES (%s, %s, 'POST /contacts', 'h', 201, '{}', %s)",
                             (tenant, label, created))
    for kind, labels in (("token", tokens), ("session", sessions)):
        for label in labels:
            (gone if label.startswith("gone") else kept).add(f"{kind}:{label}")
    gone.add("rate:gone-2-days")
    kept.update({"rate:kept-now", "rate:kept-23-hours"})
    for tenant in tenants:
        gone.add(f"key:{tenant}:gone-25h")
        kept.add(f"key:{tenant}:kept-23h")
    return gone, kept


def auth_labels(db: TestDatabase) -> set[str]:
    with db.admin() as conn:
        labels = {f"token:{str(r[0])[1:]}" for r in conn.execute("SELECT next_path FROM login_tokens")}
        labels |= {f"session:{r[0]}" for r in conn.execute("SELECT user_agent FROM sessions")}
        labels |= {f"rate:{bytes(r[0]).decode()}" for r in conn.execute("SELECT bucket FROM rate_limits")}  # type: ignore[call-overload]
        labels |= {f"key:{r[0]}:{r[1]}" for r in conn.execute("SELECT tenant_id, key FROM idempotency_keys")}
    return labels


def test_purge_auth_removes_exactly_the_spent_rows_and_keeps_live_ones(fresh_db: TestDatabase,
                                                                      jobs_db: Database) -> None:
    tenants = [make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")]
    gone, kept = seed_auth(fresh_db, tenants)
    assert auth_labels(fresh_db) == gone | kept
    outcome = purge_auth(jobs_db, NOW, batch_size=1)  # one row per batch: the loop ends by itself
    assert auth_labels(fresh_db) == kept
    assert outcome.failed == []
    assert outcome.counts == {"idempotency_keys": 2, "login_tokens": 2, "sessions": 3, "rate_limits": 1}


def test_purge_auth_handler_claims_its_hourly_slot(fresh_db: TestDatabase, installed_jobs_db: Database,
                                                   staff_env: Path) -> None:
    tenants = [make_tenant(fresh_db)]
    _gone, kept = seed_auth(fresh_db, tenants)
    event = {"time": NOW.isoformat()}
    first = auth_function.handler(event, None)
    assert first["claimed"] is True and first["failed"] == []
    assert auth_function.handler(event, None) == {"claimed": False}
    assert auth_labels(fresh_db) == kept
    assert auth_function.main(["--now", (NOW + timedelta(hours=1)).isoformat()]) == 0


def test_the_local_scheduler_runs_both_purges_through_their_handlers(
        fresh_db: TestDatabase, installed_jobs_db: Database) -> None:
    from functions.schedules import SCHEDULES, run_once

    tenant = make_tenant(fresh_db)
    add_audit(fresh_db, tenant, timedelta(days=400))
    ran = {s.name: run_once(s, NOW) for s in SCHEDULES if s.name in ("purge_audit_log", "purge_auth")}
    assert ran["purge_audit_log"]["counts"]["audit_rows"] == 1 and ran["purge_auth"]["claimed"] is True
    assert audit_times(fresh_db, tenant) == []


def test_purge_auth_logs_its_counts_visibly_and_its_finished_line_after_its_tables(
        fresh_db: TestDatabase, installed_jobs_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    seed_auth(fresh_db, [make_tenant(fresh_db)])
    capsys.readouterr()
    result = auth_function.handler({"time": NOW.isoformat()}, None)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    purge = [line for line in lines if line.get("job") == "purge_auth"]
    assert [line["msg"] for line in purge] == ["purge finished"] * 3 + ["job finished"]
    assert [(line["table"], line["rows"]) for line in purge[:3]] == [("login_tokens", 2), ("sessions", 3),
                                                                    ("rate_limits", 1)]
    assert purge[-1]["counts"] == result["counts"] == {"idempotency_keys": 1, "login_tokens": 2, "sessions": 3,
                                                       "rate_limits": 1}


# --- purge_webhook_log ----------------------------------------------------------------------------------

MONTH = timedelta(days=30)


def webhook_endpoint(db: TestDatabase, tenant: uuid.UUID) -> uuid.UUID:
    """The workspace's endpoint (one is made on first use), as the superuser."""
    with db.admin() as conn:
        row = conn.execute("SELECT id FROM webhook_endpoints WHERE tenant_id = %s", (tenant,)).fetchone()
        if row is not None:
            return uuid.UUID(str(row[0]))
        endpoint = uuid.uuid4()
        conn.execute("INSERT INTO webhook_endpoints (tenant_id, id, url, event_types, secret_ciphertext)"
                     " VALUES (%s, %s, 'https://example.test/hook', ARRAY['*'], '\\x00')", (tenant, endpoint))
    return endpoint


def add_webhook(db: TestDatabase, tenant: uuid.UUID, age: timedelta, *attempt_ages: timedelta,
                data: str = "{}") -> uuid.UUID:
    """A message of `tenant` created `age` before NOW, its delivery, and one attempt per attempt age (by
    default one at the message's own time); returns the message id."""
    endpoint = webhook_endpoint(db, tenant)
    message, delivery = uuid.uuid4(), uuid.uuid4()
    with db.admin() as conn:
        conn.execute("INSERT INTO webhook_messages (tenant_id, id, type, resource, data, created_at)"
                     " VALUES (%s, %s, 'contact.created', 'contacts', %s, %s)", (tenant, message, data, NOW - age))
        conn.execute("INSERT INTO webhook_deliveries (tenant_id, id, message_id, endpoint_id, status, attempts,"
                     " created_at) VALUES (%s, %s, %s, %s, 'succeeded', %s, %s)",
                     (tenant, delivery, message, endpoint, len(attempt_ages) or 1, NOW - age))
        for number, attempt_age in enumerate(attempt_ages or (age,), start=1):
            conn.execute("INSERT INTO webhook_attempts (tenant_id, delivery_id, attempt, attempted_at, status_code,"
                         " duration_ms) VALUES (%s, %s, %s, %s, 200, 5)", (tenant, delivery, number, NOW - attempt_age))
    return message


def add_many_webhooks(db: TestDatabase, tenant: uuid.UUID, count: int, age: timedelta) -> None:
    """`count` messages (one delivery and attempt each), one second apart, the newest `age` before NOW."""
    endpoint = webhook_endpoint(db, tenant)
    with db.admin() as conn:
        conn.execute("WITH m AS (INSERT INTO webhook_messages (tenant_id, type, data, created_at)"
                     "  SELECT %(t)s, 'contact.created', '{}', %(at)s - g * interval '1 second'"
                     "    FROM generate_series(0, %(n)s - 1) g RETURNING id, created_at),"
                     " d AS (INSERT INTO webhook_deliveries (tenant_id, message_id, endpoint_id, created_at)"
                     "  SELECT %(t)s, id, %(e)s, created_at FROM m RETURNING id, created_at)"
                     " INSERT INTO webhook_attempts (tenant_id, delivery_id, attempt, attempted_at, duration_ms)"
                     " SELECT %(t)s, id, 1, created_at, 5 FROM d",
                     {"t": tenant, "at": NOW - age, "n": count, "e": endpoint})


def webhook_rows(db: TestDatabase, tenant: uuid.UUID) -> dict[str, list[datetime]]:
    """The times of `tenant`'s messages, deliveries (created_at) and attempts (attempted_at), sorted."""
    found: dict[str, list[datetime]] = {}
    with db.admin() as conn:
        for table, column in (("webhook_messages", "created_at"), ("webhook_deliveries", "created_at"),
                              ("webhook_attempts", "attempted_at")):
            rows = conn.execute(sql.SQL("SELECT {} FROM {} WHERE tenant_id = %s ORDER BY 1").format(
                sql.Identifier(column), sql.Identifier(table)), (tenant,)).fetchall()
            found[table] = []
            for (value,) in rows:
                assert isinstance(value, datetime)
                found[table].append(value)
    return found


def endpoints_of(db: TestDatabase, tenant: uuid.UUID) -> int:
    with db.admin() as conn:
        row = conn.execute("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = %s", (tenant,)).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_webhook_log_older_than_30_days_goes_and_newer_stays_in_every_workspace(
        fresh_db: TestDatabase, jobs_db: Database) -> None:
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    ages = {a: [timedelta(days=31), MONTH + SECOND, MONTH, MONTH - SECOND, timedelta(days=1)],
            b: [timedelta(days=400), MONTH, timedelta(days=2)]}
    for tenant, tenant_ages in ages.items():
        for age in tenant_ages:
            add_webhook(fresh_db, tenant, age)
    outcome = purge_webhook_log(jobs_db, NOW)
    assert outcome.failed == []
    assert outcome.counts == {"webhook_attempts": 3, "webhook_messages": 3}
    for tenant, tenant_ages in ages.items():
        # Older than 30 days goes (its delivery with it); exactly 30 days and anything younger stays.
        kept = sorted(NOW - age for age in tenant_ages if age <= MONTH)
        assert webhook_rows(fresh_db, tenant) == dict.fromkeys(
            ("webhook_messages", "webhook_deliveries", "webhook_attempts"), kept), tenant
        assert endpoints_of(fresh_db, tenant) == 1  # the endpoints are configuration, not log
    again = purge_webhook_log(jobs_db, NOW)  # idempotent: nothing is left to delete
    assert again.counts == {"webhook_attempts": 0, "webhook_messages": 0}


def test_webhook_attempts_older_than_30_days_go_on_their_own_and_messages_take_their_deliveries_along(
        fresh_db: TestDatabase, jobs_db: Database) -> None:
    tenant = make_tenant(fresh_db)
    # Fabricated to tell the two rules apart: a kept message whose delivery has an attempt past 30 days.
    add_webhook(fresh_db, tenant, MONTH - SECOND, MONTH + SECOND, MONTH - SECOND)
    # A message past 30 days whose attempts are younger: the message's age decides, everything goes with it.
    add_webhook(fresh_db, tenant, MONTH + SECOND, MONTH - SECOND, timedelta(days=20))
    outcome = purge_webhook_log(jobs_db, NOW)
    assert outcome.counts == {"webhook_attempts": 1, "webhook_messages": 1}
    assert webhook_rows(fresh_db, tenant) == {"webhook_messages": [NOW - MONTH + SECOND],
                                              "webhook_deliveries": [NOW - MONTH + SECOND],
                                              "webhook_attempts": [NOW - MONTH + SECOND]}


def test_webhook_purge_deletes_in_batches_of_the_given_size(fresh_db: TestDatabase, jobs_db: Database) -> None:
    tenant = make_tenant(fresh_db)
    add_many_webhooks(fresh_db, tenant, 25, timedelta(days=40))
    add_many_webhooks(fresh_db, tenant, 3, timedelta(days=10))
    batches: list[Batch] = []
    outcome = purge_webhook_log(jobs_db, NOW, batch_size=10, on_batch=batches.append)
    assert [(b.table, b.workspace_id, b.rows) for b in batches] == [
        ("webhook_attempts", tenant, 10), ("webhook_attempts", tenant, 10), ("webhook_attempts", tenant, 5),
        ("webhook_messages", tenant, 10), ("webhook_messages", tenant, 10), ("webhook_messages", tenant, 5)]
    assert outcome.counts == {"webhook_attempts": 25, "webhook_messages": 25}
    assert {t: len(rows) for t, rows in webhook_rows(fresh_db, tenant).items()} == {
        "webhook_messages": 3, "webhook_deliveries": 3, "webhook_attempts": 3}


def test_webhook_purge_of_one_workspace_never_reaches_another(fresh_db: TestDatabase, jobs_db: Database) -> None:
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    for tenant in (a, b):
        add_webhook(fresh_db, tenant, timedelta(days=60))
    before_b = webhook_rows(fresh_db, b)
    # Even a condition that matches every row deletes only A's: the batch runs in A's RLS context.
    gone = delete_older(jobs_db, "webhook_messages", "true", {}, before=NOW - MONTH, tenant=a, batch_size=10,
                        column="created_at")
    assert gone == 1 and webhook_rows(fresh_db, a)["webhook_messages"] == []
    assert webhook_rows(fresh_db, b) == before_b


def test_webhook_purge_cli_exits_1_when_a_workspace_fails_and_purges_the_others(
        fresh_db: TestDatabase, staff_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken, fine = make_tenant(fresh_db, "broken"), make_tenant(fresh_db, "fine")
    for tenant in (broken, fine):
        add_webhook(fresh_db, tenant, timedelta(days=40))
        add_webhook(fresh_db, tenant, timedelta(days=3))
    with fresh_db.admin() as conn:  # a real failure inside the database, for one workspace only
        conn.execute("CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS"
                     " $$ BEGIN RAISE EXCEPTION 'refused'; END $$")
        conn.execute(sql.SQL("CREATE TRIGGER refuse BEFORE DELETE ON webhook_attempts FOR EACH ROW"
                             " WHEN (OLD.tenant_id = {}) EXECUTE FUNCTION public.refuse()").format(
                                 sql.Literal(str(broken))))
    capsys.readouterr()
    assert webhook_function.main(["--now", NOW.isoformat()]) == 1
    result = json.loads(capsys.readouterr().out)
    assert (result["claimed"], result["failed"]) == (True, [str(broken)])
    assert {t: len(rows) for t, rows in webhook_rows(fresh_db, broken).items()} == dict.fromkeys(
        ("webhook_messages", "webhook_deliveries", "webhook_attempts"), 2)
    assert webhook_rows(fresh_db, fine)["webhook_messages"] == [NOW - timedelta(days=3)]


def test_webhook_purge_handler_claims_its_daily_slot_and_logs_counts_only(
        fresh_db: TestDatabase, installed_jobs_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    tenant = make_tenant(fresh_db)
    canary = "canary" + uuid.uuid4().hex[:16]  # short enough that the scrubber would let it through
    add_webhook(fresh_db, tenant, timedelta(days=31), data=json.dumps({"first_name": canary}))
    capsys.readouterr()
    event = {"source": "scheduler", "time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert webhook_function.handler(event, None) == {"claimed": True, "counts": {
        "webhook_attempts": 1, "webhook_messages": 1}, "failed": []}
    assert webhook_function.handler(event, None) == {"claimed": False}
    assert webhook_rows(fresh_db, tenant)["webhook_messages"] == []
    text = capsys.readouterr().out
    assert canary not in text
    finished = [json.loads(line) for line in text.splitlines() if "job finished" in line]
    assert [(line["job"], line["counts"]) for line in finished] == [
        ("purge_webhook_log", {"webhook_attempts": 1, "webhook_messages": 1})]
    with fresh_db.admin() as conn:
        runs = conn.execute("SELECT scheduled_for, finished_at IS NOT NULL, counts FROM job_runs"
                            " WHERE name = 'purge_webhook_log'").fetchall()
    assert runs == [(NOW, True, {"webhook_attempts": 1, "webhook_messages": 1, "failed": 0})]


def test_the_webhook_purge_is_scheduled_daily_and_runs_through_the_local_scheduler(
        fresh_db: TestDatabase, installed_jobs_db: Database) -> None:
    from functions.schedules import SCHEDULES, run_once

    (schedule,) = [s for s in SCHEDULES if s.module == "functions.purge_webhook_log"]
    assert schedule.every == timedelta(days=1) and schedule.expression.startswith("cron(")
    tenant = make_tenant(fresh_db)
    add_webhook(fresh_db, tenant, timedelta(days=31))
    add_webhook(fresh_db, tenant, timedelta(days=29))
    result = run_once(schedule, NOW)
    assert result["claimed"] is True and result["counts"]["webhook_messages"] == 1
    assert webhook_rows(fresh_db, tenant)["webhook_messages"] == [NOW - timedelta(days=29)]
