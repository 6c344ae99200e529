"""Workspace deletion (delete_tenant, purge_workspaces): nothing of A left anywhere, B untouched (L03, R16)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from chalicelib.blobs import LocalBlobs
from chalicelib.db.pool import Database
from chalicelib.jobs.common import Outcome
from chalicelib.jobs.delete import delete_workspace
from functions import delete_tenant, purge_workspaces
from tests.conftest import TestDatabase, make_tenant

SHARED_EMAIL = "shared.person@example.com"  # R16: the same person is a contact of A and of B
NOW = datetime(2025, 6, 1, 4, 0, tzinfo=UTC)
TEXTISH = ("text", "character varying", "character", "json", "jsonb", "bytea", "ARRAY")


def new_canary() -> str:
    # Lower case (some columns must be), no LIKE wildcards.
    return "canary" + uuid.uuid4().hex[:16]


def plant(db: TestDatabase, tenant: uuid.UUID, canary: str, blobs: Path | None = None) -> dict[str, uuid.UUID]:
    """Rows in every tenant table of `tenant` with `canary` in each text-ish place; blobs under `blobs`."""
    ids = {name: uuid.uuid4() for name in ("user", "company", "contact", "shared", "pipeline", "stage", "lead")}
    with db.admin() as conn:
        conn.execute("UPDATE workspaces SET name = %s WHERE id = %s", (f"Workspace {canary}", tenant))
        # The member is an account (global, outlives the workspace): no canary in it.
        conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (ids["user"], f"m-{ids['user'].hex}@example.com"))
        conn.execute("INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, 'owner')",
                     (tenant, ids["user"]))
        conn.execute("INSERT INTO companies (tenant_id, id, name, domain, custom) VALUES (%s, %s, %s, %s, %s)",
                     (tenant, ids["company"], f"Acme {canary}", f"{canary}.example.com", Jsonb({"tier": canary})))
        conn.execute("INSERT INTO contacts (tenant_id, id, first_name, last_name, email, phone, company_id, owner_id,"
                     " custom) VALUES (%s, %s, %s, %s, %s, '+4915112345678', %s, %s, %s)",
                     (tenant, ids["contact"], canary, f"Doe {canary}", f"{canary}@example.com", ids["company"],
                      ids["user"], Jsonb({"hobby": canary})))
        conn.execute("INSERT INTO contacts (tenant_id, id, first_name, email) VALUES (%s, %s, %s, %s)",
                     (tenant, ids["shared"], f"Shared {canary}", SHARED_EMAIL))
        conn.execute("INSERT INTO pipelines (tenant_id, id, name, is_default) VALUES (%s, %s, %s, true)",
                     (tenant, ids["pipeline"], f"Sales {canary}"))
        conn.execute("INSERT INTO stages (tenant_id, id, pipeline_id, name, position, kind, probability)"
                     " VALUES (%s, %s, %s, %s, 0, 'open', 10)",
                     (tenant, ids["stage"], ids["pipeline"], f"New {canary}"))
        conn.execute("INSERT INTO leads (tenant_id, id, title, contact_id, company_id, pipeline_id, stage_id, status,"
                     " owner_id, value_amount_minor, value_currency, lost_reason, custom)"
                     " VALUES (%s, %s, %s, %s, %s, %s, %s, 'open', %s, 125000, 'EUR', %s, %s)",
                     (tenant, ids["lead"], f"Deal {canary}", ids["contact"], ids["company"], ids["pipeline"],
                      ids["stage"], ids["user"], f"Price {canary}", Jsonb({"source": canary})))
        conn.execute("INSERT INTO lead_stage_history (tenant_id, lead_id, to_stage_id, actor_user_id)"
                     " VALUES (%s, %s, %s, %s)", (tenant, ids["lead"], ids["stage"], ids["user"]))
        for column in ("lead_id", "contact_id", "company_id"):
            conn.execute(sql.SQL("INSERT INTO notes (tenant_id, body, author_user_id, {}) VALUES (%s, %s, %s, %s)"
                                 ).format(sql.Identifier(column)),
                         (tenant, f"Called them about {canary}", ids["user"], ids[column.removesuffix("_id")]))
        conn.execute("INSERT INTO custom_fields (tenant_id, object, key, label, type, options)"
                     " VALUES (%s, 'contact', 'hobby', %s, 'select', %s)",
                     (tenant, f"Hobby {canary}", Jsonb([canary, "chess"])))
        conn.execute("INSERT INTO idempotency_keys (tenant_id, key, route, request_hash, status, response_body,"
                     " location) VALUES (%s, %s, 'POST /contacts', %s, 201, %s, %s)",
                     (tenant, f"key-{canary}", canary.encode(), json.dumps({"first_name": canary}),
                      f"/contacts/{canary}"))
        conn.execute("INSERT INTO api_keys (tenant_id, name, prefix, key_hash, role) VALUES (%s, %s, %s, %s, 'admin')",
                     (tenant, f"Zapier {canary}", canary[:12], canary.encode()))
        conn.execute("INSERT INTO integration_credentials (tenant_id, provider, ciphertext, hints, key_id)"
                     " VALUES (%s, 'stripe', %s, %s, 'local:test')",
                     (tenant, f"not-really-encrypted {canary}".encode(), Jsonb({"secret_key": "…" + canary[-4:],
                                                                                "note": canary})))
        for action in ("lead.created", "note.created"):
            conn.execute("INSERT INTO audit_log (tenant_id, actor_user_id, action, target_type, target_id, ip,"
                         " user_agent, details) VALUES (%s, %s, %s, 'lead', %s, '203.0.113.7', %s, %s)",
                         (tenant, ids["user"], action, ids["lead"], f"Browser {canary}", Jsonb({"title": canary})))
        conn.execute("INSERT INTO login_tokens (token_hash, code_hash, purpose, email, workspace_id, role, next_path,"
                     " created_at, expires_at) VALUES (%s, %s, 'invitation', %s, %s, 'member', %s, now(),"
                     " now() + interval '15 minutes')",
                     (uuid.uuid4().bytes, canary.encode(), f"{canary}@example.com", tenant, f"/w/{canary}"))
        conn.execute("INSERT INTO backup_keys (tenant_id, wrapped_key, key_id) VALUES (%s, %s, 'local:test')",
                     (tenant, canary.encode()))
        conn.execute("INSERT INTO backups (tenant_id, blob_key, taken_at, size_bytes, row_count)"
                     " VALUES (%s, %s, now(), 10, 1)", (tenant, f"backups/{tenant}/2025-01-01.bin"))
        plant_inbox(conn, tenant, canary, ids)
        plant_webhooks(conn, tenant, canary)
        plant_products(conn, tenant, canary)
    if blobs is not None:
        for key in (f"tenants/{tenant}/attachments/{ids['lead']}.txt", f"exports/{tenant}/20250101T000000Z.json",
                    f"backups/{tenant}/2025-01-01.bin"):
            path = blobs / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"attachment of {canary}".encode())
    return ids


def plant_inbox(conn: Any, tenant: uuid.UUID, canary: str, ids: dict[str, uuid.UUID]) -> None:
    """Inbox rows (raw webhook payload, message body, call transcript, attachments, telephony opt-in) and an
    account audit entry naming the workspace, once the inbox tables exist."""
    if conn.execute("SELECT to_regclass('public.inbound_events') IS NULL").fetchone()[0]:
        return
    channel, conversation = uuid.uuid4(), uuid.uuid4()
    conn.execute("INSERT INTO channels (tenant_id, id, type, address, secrets_ciphertext, secrets_hints)"
                 " VALUES (%s, %s, 'email', %s, %s, %s)",
                 (tenant, channel, f"{canary}@inbox.example.com", canary.encode(), Jsonb({"key": canary[-4:]})))
    conn.execute("INSERT INTO webhook_routes (channel_id, workspace_id) VALUES (%s, %s)", (channel, tenant))
    conn.execute("INSERT INTO conversations (tenant_id, id, channel_id, contact_id, subject, thread_key)"
                 " VALUES (%s, %s, %s, %s, %s, %s)",
                 (tenant, conversation, channel, ids["contact"], f"Re: {canary}", f"<{canary}@mail>"))
    conn.execute("INSERT INTO messages (tenant_id, conversation_id, direction, body, email_message_id, status,"
                 " sent_at) VALUES (%s, %s, 'in', %s, %s, 'received', now())",
                 (tenant, conversation, f"Hello {canary}", f"<{canary}@mail>"))
    conn.execute("INSERT INTO inbound_events (tenant_id, channel_id, provider, provider_event_id, kind, payload)"
                 " VALUES (%s, %s, 'mailgun', %s, 'message', %s)",
                 (tenant, channel, f"evt-{canary}", Jsonb({"from": f"{canary}@example.com", "text": canary})))
    call, message = uuid.uuid4(), uuid.uuid4()
    conn.execute("INSERT INTO messages (tenant_id, id, conversation_id, direction, kind, body, status, sent_at)"
                 " VALUES (%s, %s, %s, 'in', 'document', %s, 'received', now())",
                 (tenant, message, conversation, f"See attached {canary}"))
    conn.execute("INSERT INTO calls (tenant_id, id, call_sid, from_number, contact_id, status, recording_enabled,"
                 " transcription_enabled, transcript) VALUES (%s, %s, %s, '+4915112345678', %s, 'completed', true,"
                 " true, %s)", (tenant, call, f"CA{canary}", ids["contact"], f"They said {canary}"))
    for column, owner, key in (("message_id", message, f"tenants/{tenant}/attachments/{ids['lead']}.txt"),
                               ("call_id", call, f"tenants/{tenant}/recordings/RE{canary}.mp3")):
        conn.execute(sql.SQL("INSERT INTO attachments (tenant_id, {}, filename, content_type, size_bytes, sha256,"
                             " blob_key) VALUES (%s, %s, %s, 'application/octet-stream', 21, %s, %s)").format(
                         sql.Identifier(column)), (tenant, owner, f"{canary}.bin", "0" * 64, key))
    conn.execute("INSERT INTO telephony_settings (tenant_id, recording_enabled, transcription_enabled)"
                 " VALUES (%s, true, true)", (tenant,))
    # An account audit entry of the member naming this workspace (no canary: account entries outlive it).
    conn.execute("INSERT INTO account_audit_log (user_id, action, ip, details) VALUES (%s, 'member.joined',"
                 " '203.0.113.7', %s)", (ids["user"], Jsonb({"workspace_id": str(tenant)})))


def plant_webhooks(conn: Any, tenant: uuid.UUID, canary: str) -> dict[str, uuid.UUID]:
    """An outgoing webhook endpoint (signing secrets: ciphertext stand-ins), a message, its delivery and one
    attempt, once the outgoing webhook tables exist; returns their ids."""
    if not _exists(conn, "webhook_endpoints"):
        return {}
    ids = {name: uuid.uuid4() for name in ("endpoint", "message", "delivery", "attempt")}
    conn.execute("INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, secret_ciphertext,"
                 " previous_secret_ciphertext, previous_secret_expires_at) VALUES (%s, %s, %s, %s, ARRAY['*'],"
                 " %s, %s, now() + interval '1 day')",
                 (tenant, ids["endpoint"], f"https://{canary}.example.test/hook", f"Hook {canary}",
                  b"\x00secret " + canary.encode(), b"\x00previous " + canary.encode()))
    conn.execute("INSERT INTO webhook_messages (tenant_id, id, type, resource, data)"
                 " VALUES (%s, %s, 'contact.created', 'contacts', %s)",
                 (tenant, ids["message"], Jsonb({"first_name": canary})))
    conn.execute("INSERT INTO webhook_deliveries (tenant_id, id, message_id, endpoint_id, status, attempts)"
                 " VALUES (%s, %s, %s, %s, 'succeeded', 1)", (tenant, ids["delivery"], ids["message"], ids["endpoint"]))
    conn.execute("INSERT INTO webhook_attempts (tenant_id, id, delivery_id, attempt, attempted_at, status_code,"
                 " duration_ms, response_excerpt) VALUES (%s, %s, %s, 1, now(), 200, 42, %s)",
                 (tenant, ids["attempt"], ids["delivery"], f"ok {canary}"))
    return ids


def plant_products(conn: Any, tenant: uuid.UUID, canary: str) -> None:
    """A product of the price book and a proposal for the planted lead, once their tables exist."""
    if not _exists(conn, "products"):
        return
    (product,) = conn.execute("INSERT INTO products (tenant_id, name, sku, description, unit_amount_minor, currency)"
                              " VALUES (%s, %s, %s, %s, 1999, 'EUR') RETURNING id",
                              (tenant, f"Plan {canary}", "SKU-1", f"About {canary}")).fetchone()
    if not _exists(conn, "proposals"):
        return
    (lead,) = conn.execute("SELECT id FROM leads WHERE tenant_id = %s LIMIT 1", (tenant,)).fetchone()
    (proposal,) = conn.execute("INSERT INTO proposals (tenant_id, lead_id, title, introduction, valid_until, currency,"
                               " subtotal_minor, tax_minor, total_minor) VALUES (%s, %s, %s, %s, '2027-01-01', 'EUR',"
                               " 1999, 0, 1999) RETURNING id",
                               (tenant, lead, f"Offer {canary}", f"Dear {canary}")).fetchone()
    conn.execute("INSERT INTO proposal_lines (tenant_id, proposal_id, position, product_id, sku, description, quantity,"
                 " unit_amount_minor, tax_rate_bp, net_minor, tax_minor) VALUES (%s, %s, 0, %s, 'SKU-1', %s, 1, 1999,"
                 " 0, 1999, 0)", (tenant, proposal, product, f"Plan {canary}"))
    if _exists(conn, "proposal_status_history"):
        conn.execute("INSERT INTO proposal_status_history (tenant_id, proposal_id, to_status) VALUES (%s, %s, 'draft')",
                     (tenant, proposal))


def _exists(conn: Any, table: str) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",)).fetchone()[0])


def tenant_table_names(db: TestDatabase) -> list[str]:
    """Every public table with a tenant_id column, plus workspaces (from information_schema)."""
    with db.admin() as conn:
        rows = conn.execute("SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t"
                            " USING (table_schema, table_name) WHERE c.table_schema = 'public'"
                            " AND t.table_type = 'BASE TABLE' AND c.column_name = 'tenant_id'").fetchall()
    return sorted({str(r[0]) for r in rows} | {"workspaces"})


def key_of(table: str) -> str:
    return "id" if table == "workspaces" else "tenant_id"


def row_counts(db: TestDatabase, tenant: uuid.UUID) -> dict[str, int]:
    """Rows of `tenant` in each tenant table, as the superuser sees them."""
    counts = {}
    with db.admin() as conn:
        for table in tenant_table_names(db):
            row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
                sql.Identifier(table), sql.Identifier(key_of(table))), (tenant,)).fetchone()
            assert row is not None
            counts[table] = int(row[0])  # type: ignore[call-overload]
    return counts


def snapshot(db: TestDatabase, tenant: uuid.UUID, blobs: Path) -> dict[str, Any]:
    """Every row of `tenant` (as JSON text, sorted) in every tenant table, and its blobs' bytes."""
    tables: dict[str, Any] = {}
    with db.admin() as conn:
        for table in tenant_table_names(db):
            rows = conn.execute(sql.SQL("SELECT row_to_json(t)::text FROM {} t WHERE {} = %s").format(
                sql.Identifier(table), sql.Identifier(key_of(table))), (tenant,)).fetchall()
            tables[table] = sorted(str(r[0]) for r in rows)
    files = {str(p.relative_to(blobs)): p.read_bytes() for p in blobs.rglob("*")
             if p.is_file() and str(tenant) in str(p)}
    return {"tables": tables, "blobs": files}


def find_everywhere(db: TestDatabase, needle: str, blobs: Path) -> list[str]:
    """Where `needle` occurs: every text-ish column of every public table, and every file under `blobs`."""
    found = []
    with db.admin() as conn:
        columns = conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' AND c.data_type = ANY(%s)",
            (list(TEXTISH),)).fetchall()
        assert len(columns) > 40  # the scan really covers the schema
        for table, column, kind in columns:
            if kind == "bytea":
                test = sql.SQL("position(convert_to(%s, 'UTF8') in {}) > 0").format(sql.Identifier(str(column)))
                param = needle
            else:
                test = sql.SQL("{}::text ILIKE %s").format(sql.Identifier(str(column)))
                param = f"%{needle}%"
            row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(str(table)), test),
                               (param,)).fetchone()
            if row and row[0]:
                found.append(f"{table}.{column}")
    found += [str(p) for p in blobs.rglob("*") if p.is_file() and needle.encode() in p.read_bytes().lower()]
    return found


def test_deletion_leaves_no_canary_anywhere_and_the_other_workspace_untouched(
        fresh_db: TestDatabase, jobs_db: Database, tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    canary_a, canary_b = new_canary(), new_canary()
    plant(fresh_db, a, canary_a, blobs)
    plant(fresh_db, b, canary_b, blobs)
    assert len(find_everywhere(fresh_db, canary_a, blobs)) > 25  # the canary really is everywhere first
    before_b = snapshot(fresh_db, b, blobs)
    delete_workspace(jobs_db, a, LocalBlobs(blobs))
    assert find_everywhere(fresh_db, canary_a, blobs) == []
    assert snapshot(fresh_db, b, blobs) == before_b
    with fresh_db.admin() as conn:  # R16: B still has its copy of the shared person
        assert conn.execute("SELECT tenant_id FROM contacts WHERE email = %s", (SHARED_EMAIL,)).fetchall() == [(b,)]
    assert find_everywhere(fresh_db, canary_b, blobs) != []


def test_audit_entries_of_a_deleted_workspace_keep_only_event_actor_ip_and_time(
        fresh_db: TestDatabase, jobs_db: Database, tmp_path: Path) -> None:
    a = make_tenant(fresh_db, "a")
    ids = plant(fresh_db, a, new_canary())
    kept = "SELECT action, actor_user_id, actor_api_key_id, host(ip), occurred_at FROM audit_log WHERE tenant_id = %s"
    with fresh_db.admin() as conn:
        before = sorted(conn.execute(kept, (a,)).fetchall(), key=str)
    receipt = delete_workspace(jobs_db, a, LocalBlobs(tmp_path))
    assert receipt.audit_entries_pseudonymized == 2
    with fresh_db.admin() as conn:
        assert sorted(conn.execute(kept, (a,)).fetchall(), key=str) == before
        assert before[0][1:4] == (ids["user"], None, "203.0.113.7")
        gone = conn.execute("SELECT details, user_agent, target_type, target_id FROM audit_log WHERE tenant_id = %s",
                            (a,)).fetchall()
        assert gone == [({}, None, None, None)] * 2
        assert conn.execute("SELECT workspace_id FROM workspace_tombstones").fetchall() == [(a,)]


def test_receipt_counts_what_was_deleted_and_a_second_run_deletes_nothing(
        fresh_db: TestDatabase, jobs_db: Database, tmp_path: Path) -> None:
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    plant(fresh_db, a, new_canary(), tmp_path)
    plant(fresh_db, b, new_canary(), tmp_path)
    expected = {t: n for t, n in row_counts(fresh_db, a).items() if n and t != "audit_log"}
    receipt = delete_workspace(jobs_db, a, LocalBlobs(tmp_path))
    assert receipt.found and receipt.rows == expected and receipt.blobs == 3
    assert set(expected) >= {"workspaces", "contacts", "leads", "notes", "backup_keys", "integration_credentials"}
    assert {t: n for t, n in row_counts(fresh_db, a).items() if n} == {"audit_log": 2}
    again = delete_workspace(jobs_db, a, LocalBlobs(tmp_path))
    assert again.as_dict() | {"seconds": 0} == {"workspace_id": str(a), "found": False, "rows": {},
                                                 "audit_entries_pseudonymized": 0, "blobs": 0, "seconds": 0}
    assert row_counts(fresh_db, b)["contacts"] == 2


def test_cli_refuses_without_yes_and_prints_a_receipt_with_it(
        fresh_db: TestDatabase, staff_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_tenant(fresh_db, "a")
    plant(fresh_db, a, new_canary())
    assert delete_tenant.main([str(a)]) == 2
    assert "--yes" in capsys.readouterr().err
    assert row_counts(fresh_db, a)["workspaces"] == 1
    assert delete_tenant.main([str(a), "--yes"]) == 0
    receipt = json.loads(capsys.readouterr().out)  # stdout is the receipt alone
    assert receipt["found"] is True and receipt["rows"]["contacts"] == 2
    assert row_counts(fresh_db, a)["workspaces"] == 0


def soft_deleted(db: TestDatabase, name: str, deleted_at: datetime | None) -> uuid.UUID:
    tenant = make_tenant(db, name)
    with db.admin() as conn:
        conn.execute("UPDATE workspaces SET deleted_at = %s WHERE id = %s", (deleted_at, tenant))
    return tenant


def existing(db: TestDatabase) -> set[uuid.UUID]:
    with db.admin() as conn:
        return {uuid.UUID(str(r[0])) for r in conn.execute("SELECT id FROM workspaces")}


def test_soft_deleted_workspace_is_purged_after_the_grace_period_and_not_before(
        fresh_db: TestDatabase, jobs_db: Database) -> None:
    grace = timedelta(days=3)  # WORKSPACE_PURGE_GRACE_DAYS' default
    recent = soft_deleted(fresh_db, "recent", NOW - timedelta(days=2))
    due = soft_deleted(fresh_db, "due", NOW - grace - timedelta(seconds=1))
    just_not = soft_deleted(fresh_db, "just-not", NOW - grace + timedelta(seconds=1))
    live = soft_deleted(fresh_db, "live", None)
    outcome = purge_workspaces.run(jobs_db, NOW)
    assert (outcome.counts["workspaces"], outcome.failed) == (1, [])
    assert existing(fresh_db) == {recent, just_not, live} and due not in existing(fresh_db)
    purge_workspaces.run(jobs_db, NOW + timedelta(days=1, seconds=1))
    assert existing(fresh_db) == {live}
    purge_workspaces.run(jobs_db, NOW + timedelta(days=3650))
    assert existing(fresh_db) == {live}  # never deleted by the purge unless soft-deleted


def test_overlapping_purge_workspaces_runs_delete_each_workspace_once(fresh_db: TestDatabase) -> None:
    due = {soft_deleted(fresh_db, f"due{n}", NOW - timedelta(days=5)) for n in range(3)}
    for tenant in due:
        plant(fresh_db, tenant, new_canary())
    live = soft_deleted(fresh_db, "live", None)
    pools = [Database(fresh_db.jobs_url, size=1, name="jobs") for _ in range(3)]
    start = threading.Barrier(len(pools))
    outcomes: list[Outcome] = []

    def invoke(db: Database) -> None:
        start.wait()
        outcomes.append(purge_workspaces.run(db, NOW))

    threads = [threading.Thread(target=invoke, args=(db,)) for db in pools]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for db in pools:
        db.close()
    assert len(outcomes) == 3 and all(o.failed == [] for o in outcomes)
    assert sum(o.counts.get("workspaces", 0) for o in outcomes) == 3  # each deleted by exactly one run
    assert existing(fresh_db) == {live}
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (6,)  # pseudonymized, kept
        assert conn.execute("SELECT count(*) FROM workspace_tombstones").fetchone() == (3,)
