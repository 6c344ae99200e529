"""Encrypted per-workspace backups, GFS retention, restore, crypto-shredding (backup_tenants, restore_tenant).

What a backup must hold comes from the catalogue and the allowlist below, never from the product's own
exclusion lists: a content table added to EXCLUDED_TABLES fails these tests.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from chalicelib.blobs import LocalBlobs
from chalicelib.db.pool import Database
from chalicelib.jobs import gfs
from chalicelib.jobs.backup import (
    BackupError,
    BackupKeyMissing,
    apply_retention,
    backup_workspace,
    blob_key,
    data_key,
    encrypt_file,
)
from chalicelib.jobs.common import dependency_order
from chalicelib.jobs.delete import delete_workspace
from chalicelib.jobs.export import read_export
from chalicelib.jobs.restore import RestoreError, decrypt_file, restore_workspace
from chalicelib.outgoing import signing
from chalicelib.outgoing.endpoints import secret_context
from chalicelib.vault.envelope import CredentialIntegrityError, Vault
from functions import backup_tenants, restore_tenant
from tests.conftest import TestDatabase, make_tenant
from tests.functions.test_delete import key_of, plant, tenant_table_names

NOW = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
# The only tables with a tenant_id a backup may leave out, each with its reason. Every other table of the
# catalogue must be in the backup, with rows, and come back with the same rows after a restore.
NOT_BACKED_UP = {
    "backup_keys": "key-material",  # the key the backups are encrypted under: a backup cannot hold its own key
    "backups": "backup-index",  # which backup objects exist: bookkeeping about backups, not content
    "search_terms": "derived",  # the words of searchable records, rebuilt by triggers on restore
}


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault.local(tmp_path / "master.key")


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobs:
    return LocalBlobs(tmp_path / "blobs")


def new_canary() -> str:
    return "canary" + uuid.uuid4().hex[:16]


def seed(db: TestDatabase, name: str, canary: str, *, bulk: int = 0) -> uuid.UUID:
    """A workspace with rows in the tenant tables, awkward values included (quotes, backslashes, bytes).

    `bulk` more contacts make the dump span many COPY blocks and the restore many batches.
    """
    tenant = make_tenant(db, name)
    user, company, contact, pipeline, stage, lead = (uuid.uuid4() for _ in range(6))
    awkward = f'{canary} "quoted" back\\slash tab\there\nnewline ünï €'
    with db.admin() as conn:
        conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user, f"u-{user.hex}@example.com"))
        conn.execute("UPDATE workspaces SET name = %s, created_by = %s WHERE id = %s", (f"W {canary}", user, tenant))
        conn.execute("INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, 'owner')", (tenant, user))
        conn.execute("INSERT INTO companies (tenant_id, id, name, domain, custom) VALUES (%s, %s, %s, %s, %s)",
                     (tenant, company, awkward, "acme.example", Jsonb({"tier": canary, "n": [1, 2.5, None]})))
        conn.execute("INSERT INTO contacts (tenant_id, id, first_name, last_name, email, phone, company_id, owner_id)"
                     " VALUES (%s, %s, %s, 'Doe', %s, '+4915112345678', %s, %s)",
                     (tenant, contact, canary, f"{canary}@example.com", company, user))
        conn.execute("INSERT INTO pipelines (tenant_id, id, name, is_default) VALUES (%s, %s, 'Sales', true)",
                     (tenant, pipeline))
        conn.execute("INSERT INTO stages (tenant_id, id, pipeline_id, name, position, kind, probability)"
                     " VALUES (%s, %s, %s, 'New', 0, 'open', 10)", (tenant, stage, pipeline))
        conn.execute("INSERT INTO leads (tenant_id, id, title, contact_id, company_id, pipeline_id, stage_id, status,"
                     " owner_id, value_amount_minor, value_currency, expected_close_date, custom)"
                     " VALUES (%s, %s, %s, %s, %s, %s, %s, 'open', %s, 9007199254740993, 'EUR', '2028-02-29', %s)",
                     (tenant, lead, f"Deal {canary}", contact, company, pipeline, stage, user,
                      Jsonb({"source": awkward})))
        conn.execute("INSERT INTO lead_stage_history (tenant_id, lead_id, to_stage_id, actor_user_id)"
                     " VALUES (%s, %s, %s, %s)", (tenant, lead, stage, user))
        conn.execute("INSERT INTO notes (tenant_id, body, lead_id, author_user_id) VALUES (%s, %s, %s, %s)",
                     (tenant, awkward, lead, user))
        conn.execute("INSERT INTO custom_fields (tenant_id, object, key, label, type, options)"
                     " VALUES (%s, 'contact', 'hobby', %s, 'select', %s)", (tenant, canary, Jsonb([canary, "chess"])))
        conn.execute("INSERT INTO idempotency_keys (tenant_id, key, route, request_hash, status, response_body)"
                     " VALUES (%s, %s, 'POST /contacts', %s, 201, %s)", (tenant, canary, b"\x00\xff\\x", awkward))
        conn.execute("INSERT INTO api_keys (tenant_id, name, prefix, key_hash, role) VALUES (%s, %s, 'abcd1234', %s,"
                     " 'admin')", (tenant, f"Zapier {canary}", canary.encode() + b"\x00\x01"))
        conn.execute("INSERT INTO integration_credentials (tenant_id, provider, ciphertext, hints, key_id)"
                     " VALUES (%s, 'stripe', %s, '{}', 'local:test')", (tenant, b"\x01\x02" + canary.encode()))
        conn.execute("INSERT INTO audit_log (tenant_id, actor_user_id, action, ip, details)"
                     " VALUES (%s, %s, 'lead.created', '203.0.113.7', %s)", (tenant, user, Jsonb({"t": canary})))
        conn.execute("INSERT INTO contacts (tenant_id, first_name, last_name, custom, created_at)"
                     " SELECT %s, 'n' || i, left(%s, 100), jsonb_build_object('i', i, 'x', %s::text),"
                     " now() - i * interval '1 min' FROM generate_series(1, %s) i", (tenant, awkward, awkward, bulk))
    return tenant


def content_tables(db: TestDatabase) -> list[tuple[str, str]]:
    """(table, tenant key) of every catalogue table with a tenant_id a backup must carry, parents first."""
    names = [n for n in tenant_table_names(db) if n not in NOT_BACKED_UP]
    with db.admin() as conn:
        return [(n, key_of(n)) for n in dependency_order(conn, names)]


def seed_everything(db: TestDatabase, name: str, canary: str) -> uuid.UUID:
    """A workspace with rows in every tenant table (plant), less the planted backup key and index."""
    tenant = make_tenant(db, name)
    plant(db, tenant, canary)
    with db.admin() as conn:
        conn.execute("DELETE FROM backups WHERE tenant_id = %s", (tenant,))
        conn.execute("DELETE FROM backup_keys WHERE tenant_id = %s", (tenant,))
    return tenant


def generated_columns(db: TestDatabase) -> dict[str, dict[str, str]]:
    """Generated columns per table, from the catalogue (a backup leaves them out: `derived`)."""
    found: dict[str, dict[str, str]] = {}
    with db.admin() as conn:
        for table, column in conn.execute("SELECT table_name, column_name FROM information_schema.columns"
                                          " WHERE table_schema = 'public' AND is_generated = 'ALWAYS'"):
            found.setdefault(str(table), {})[str(column)] = "derived"
    return found

def rows_of(db: TestDatabase, tenant: uuid.UUID) -> dict[str, list[str]]:
    """Every row (all columns, generated ones included) of `tenant` per table, as the superuser sees them."""
    found: dict[str, list[str]] = {}
    with db.admin() as conn:
        for table, key in content_tables(db):
            rows = conn.execute(sql.SQL("SELECT row_to_json(x)::text FROM {} x WHERE {} = %s").format(
                sql.Identifier(table), sql.Identifier(key)), (tenant,)).fetchall()
            found[table] = sorted(str(r[0]) for r in rows)
    return found


def _search_terms(db: TestDatabase, tenant: uuid.UUID) -> list[tuple[object, ...]]:
    with db.admin() as conn:
        return conn.execute("SELECT object, term, record_id FROM search_terms WHERE tenant_id = %s ORDER BY 1, 2, 3",
                            (tenant,)).fetchall()


def wipe_content(db: TestDatabase, tenant: uuid.UUID) -> None:
    """Lose the workspace's data by hand (children first), keeping its row and so its backup key."""
    with db.admin() as conn:
        for table, key in reversed(content_tables(db)):
            if table != "workspaces":
                conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(table),
                                                                            sql.Identifier(key)), (tenant,))
        conn.execute("UPDATE workspaces SET name = 'renamed since', deleted_at = now() WHERE id = %s", (tenant,))


def test_backup_writes_an_encrypted_object_that_holds_the_whole_workspace(
        fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs, vault: Vault, tmp_path: Path) -> None:
    canary, other = new_canary(), new_canary()
    a = seed(fresh_db, "a", canary)
    seed(fresh_db, "b", other)
    info = backup_workspace(jobs_db, a, blobs, vault, NOW)
    assert info.blob_key == f"backups/{a}/20250601T020000Z.json.enc" == blob_key(a, NOW)
    assert blobs.list(f"backups/{a}") == [info.blob_key]
    sealed = (tmp_path / "blobs" / info.blob_key).read_bytes()
    assert canary.encode() not in sealed and b"Zapier" not in sealed and b"tenant-crm-export" not in sealed
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT blob_key, taken_at, size_bytes, row_count FROM backups WHERE tenant_id = %s",
                            (a,)).fetchall() == [(info.blob_key, NOW, len(sealed), info.row_count)]
        stored = conn.execute("SELECT key_id, octet_length(wrapped_key) FROM backup_keys WHERE tenant_id = %s",
                              (a,)).fetchone()
    assert stored is not None and stored[0] == vault.key_id
    assert isinstance(stored[1], int) and stored[1] > 32  # stored wrapped, never raw
    plain = tmp_path / "plain.json"
    decrypt_file(tmp_path / "blobs" / info.blob_key, plain, tenant_id=a, key=data_key(jobs_db, a, vault))
    document = read_export(plain)  # the export format: one JSON document
    assert (document["format"], document["format_version"], document["kind"]) == ("tenant-crm-export", 2, "backup")
    assert document["workspace"]["id"] == str(a)
    assert sum(m.get("rows", 0) for m in document["manifest"]["tables"].values()) == info.row_count == sum(
        len(rows) for rows in rows_of(fresh_db, a).values())
    # Unlike the export, the backup keeps what a restore needs (still only ciphertext and HMACs).
    assert "key_hash" in document["tables"]["api_keys"][0] and "ciphertext" in document["tables"][
        "integration_credentials"][0]
    assert "search" not in document["tables"]["companies"][0]  # generated: recomputed on restore
    assert other not in plain.read_text()


def test_restore_round_trip_yields_identical_rows(fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs,
                                                  vault: Vault) -> None:
    a, b = seed(fresh_db, "a", new_canary(), bulk=2500), seed(fresh_db, "b", new_canary())
    backup_workspace(jobs_db, a, blobs, vault, NOW)
    before, other_before, words_before = rows_of(fresh_db, a), rows_of(fresh_db, b), _search_terms(fresh_db, a)
    wipe_content(fresh_db, a)
    assert sum(map(len, rows_of(fresh_db, a).values())) == 1  # just the (changed) workspace row
    assert _search_terms(fresh_db, a) == []
    receipt = restore_workspace(jobs_db, a, blobs, vault)
    assert rows_of(fresh_db, a) == before
    # Not in the backup (derived): the restored records' triggers wrote their words again.
    assert _search_terms(fresh_db, a) == words_before and len(words_before) > 2500
    assert rows_of(fresh_db, b) == other_before
    assert receipt.workspace_id == str(a) and receipt.skipped == {}
    assert (receipt.rows["leads"], receipt.rows["contacts"]) == (1, 2501)


def test_backup_and_restore_carry_every_catalogue_table_with_rows(
        fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs, vault: Vault, tmp_path: Path) -> None:
    a, b = seed_everything(fresh_db, "a", new_canary()), seed_everything(fresh_db, "b", new_canary())
    info = backup_workspace(jobs_db, a, blobs, vault, NOW)
    plain = tmp_path / "plain.json"
    decrypt_file(tmp_path / "blobs" / info.blob_key, plain, tenant_id=a, key=data_key(jobs_db, a, vault))
    document = read_export(plain)
    catalogue = set(tenant_table_names(fresh_db))
    expected = catalogue - set(NOT_BACKED_UP)
    assert set(document["tables"]) == expected
    assert [t for t, rows in document["tables"].items() if not rows] == []  # every table has rows
    manifest = document["manifest"]["tables"]
    assert set(manifest) == catalogue
    assert {t: e["excluded"] for t, e in manifest.items() if "excluded" in e} == NOT_BACKED_UP
    assert {t: e["rows"] for t, e in manifest.items() if t in expected} == {
        t: len(rows) for t, rows in document["tables"].items()}
    generated = generated_columns(fresh_db)
    assert {t: e["excluded_columns"] for t, e in manifest.items() if "excluded_columns" in e} == {
        t: c for t, c in generated.items() if t in expected}
    assert set(document["manifest"]["reasons"]) == {"derived", "key-material", "backup-index"}
    before, other = rows_of(fresh_db, a), rows_of(fresh_db, b)
    wipe_content(fresh_db, a)
    receipt = restore_workspace(jobs_db, a, blobs, vault)
    after = rows_of(fresh_db, a)
    assert set(after) == expected and [t for t, rows in after.items() if not rows] == []
    assert after == before and rows_of(fresh_db, b) == other
    assert set(receipt.rows) == expected and receipt.excluded == NOT_BACKED_UP


def test_a_backup_of_format_version_1_still_restores(
        fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs, vault: Vault, tmp_path: Path) -> None:
    a = seed(fresh_db, "a", new_canary())
    info = backup_workspace(jobs_db, a, blobs, vault, NOW)
    key, sealed, plain = data_key(jobs_db, a, vault), tmp_path / "blobs" / info.blob_key, tmp_path / "plain.json"
    decrypt_file(sealed, plain, tenant_id=a, key=key)
    # Version 1 wrote the tables' rows and digests alone as its manifest.
    head, _, tail = plain.read_bytes().partition(b'}, "manifest": ')
    manifest = json.loads(tail[:-2])["tables"]
    old = {t: {"rows": e["rows"], "sha256": e["sha256"]} for t, e in manifest.items() if "excluded" not in e}
    plain.write_bytes(head.replace(b'"format_version": 2', b'"format_version": 1', 1) + b'}, "manifest": '
                      + json.dumps(old).encode() + b"}\n")
    encrypt_file(plain, sealed, tenant_id=a, key=key)
    with fresh_db.admin() as conn:
        conn.execute("UPDATE backups SET size_bytes = %s WHERE tenant_id = %s", (sealed.stat().st_size, a))
    before = rows_of(fresh_db, a)
    wipe_content(fresh_db, a)
    receipt = restore_workspace(jobs_db, a, blobs, vault)
    assert rows_of(fresh_db, a) == before and receipt.excluded == {}


def test_restore_refuses_a_workspace_that_still_has_rows(fresh_db: TestDatabase, jobs_db: Database,
                                                         blobs: LocalBlobs, vault: Vault) -> None:
    a = seed(fresh_db, "a", new_canary())
    backup_workspace(jobs_db, a, blobs, vault, NOW)
    before = rows_of(fresh_db, a)
    with pytest.raises(RestoreError, match=r"still has rows.*--as-new"):
        restore_workspace(jobs_db, a, blobs, vault)
    assert rows_of(fresh_db, a) == before
    with pytest.raises(RestoreError, match="has no backup"):
        restore_workspace(jobs_db, a, blobs, vault, backup=f"backups/{a}/20000101T000000Z.json.enc")


def test_restore_as_new_copies_the_workspace_under_a_new_id(fresh_db: TestDatabase, jobs_db: Database,
                                                            blobs: LocalBlobs, vault: Vault) -> None:
    a = seed(fresh_db, "a", new_canary())
    first = backup_workspace(jobs_db, a, blobs, vault, NOW)
    with fresh_db.admin() as conn:
        conn.execute("DELETE FROM notes WHERE tenant_id = %s", (a,))
    backup_workspace(jobs_db, a, blobs, vault, NOW + timedelta(days=1))
    original = rows_of(fresh_db, a)
    receipt = restore_workspace(jobs_db, a, blobs, vault, backup=first.blob_key, as_new=True)
    copy = uuid.UUID(receipt.workspace_id)
    assert copy != a and receipt.backup_key == first.blob_key
    restored = {t: sorted(r.replace(str(copy), str(a)) for r in rows) for t, rows in rows_of(fresh_db, copy).items()}
    assert len(restored["notes"]) == 1 and original["notes"] == []  # the chosen (older) backup
    assert restored["integration_credentials"] == [] and receipt.skipped == {"integration_credentials": 1}
    same = {"notes", "integration_credentials", "api_keys"}
    assert {t: r for t, r in restored.items() if t not in same} == {t: r for t, r in original.items() if t not in same}
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM api_keys WHERE tenant_id = %s AND revoked_at IS NOT NULL",
                            (copy,)).fetchone() == (1,)  # a bearer key opens one workspace only
        assert conn.execute("SELECT count(*) FROM backup_keys WHERE tenant_id = %s", (copy,)).fetchone() == (0,)
    assert rows_of(fresh_db, a) == original  # the source is untouched


WEBHOOK_TABLES = ("webhook_endpoints", "webhook_messages", "webhook_deliveries", "webhook_attempts")
WEBHOOK_SECRETS = ("secret_ciphertext", "previous_secret_ciphertext")


def webhook_chain(db: TestDatabase, tenant: uuid.UUID) -> list[tuple[Any, ...]]:
    """Each attempt of `tenant` joined to its delivery, message and endpoint on (tenant_id, id), as the FKs do."""
    with db.admin() as conn:
        return conn.execute(
            "SELECT a.id, d.id, m.id, e.id, e.secret_ciphertext, e.previous_secret_ciphertext, m.data"
            "  FROM webhook_attempts a"
            "  JOIN webhook_deliveries d ON d.tenant_id = a.tenant_id AND d.id = a.delivery_id"
            "  JOIN webhook_messages m ON m.tenant_id = d.tenant_id AND m.id = d.message_id"
            "  JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id"
            " WHERE a.tenant_id = %s ORDER BY a.id", (tenant,)).fetchall()


def test_outgoing_webhooks_are_backed_up_with_their_signing_secrets_and_restored_as_new_consistently(
        fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs, vault: Vault, tmp_path: Path) -> None:
    a, b = seed_everything(fresh_db, "a", new_canary()), seed_everything(fresh_db, "b", new_canary())
    secret = signing.new_secret()
    with fresh_db.admin() as conn:  # a real envelope, bound to the workspace and the endpoint as the API binds it
        row = conn.execute("SELECT id FROM webhook_endpoints WHERE tenant_id = %s", (a,)).fetchone()
        assert row is not None
        endpoint_id = uuid.UUID(str(row[0]))
        conn.execute("UPDATE webhook_endpoints SET secret_ciphertext = %s WHERE tenant_id = %s", (
            vault.encrypt(secret.encode(), secret_context(a, endpoint_id)), a))
    info = backup_workspace(jobs_db, a, blobs, vault, NOW)
    plain = tmp_path / "plain.json"
    decrypt_file(tmp_path / "blobs" / info.blob_key, plain, tenant_id=a, key=data_key(jobs_db, a, vault))
    document = read_export(plain)
    # Like channels' secrets_ciphertext: the export withholds the ciphertexts, the (encrypted) backup keeps
    # them, so a restored workspace's endpoints sign as before.
    (endpoint,) = document["tables"]["webhook_endpoints"]
    assert set(WEBHOOK_SECRETS) <= set(endpoint) and "secrets_ciphertext" in document["tables"]["channels"][0]
    assert all(len(document["tables"][t]) == 1 for t in WEBHOOK_TABLES)
    chain, other = webhook_chain(fresh_db, a), webhook_chain(fresh_db, b)
    assert len(chain) == 1
    receipt = restore_workspace(jobs_db, a, blobs, vault, as_new=True)
    copy = uuid.UUID(receipt.workspace_id)
    assert copy != a and {t: receipt.rows[t] for t in WEBHOOK_TABLES} == dict.fromkeys(WEBHOOK_TABLES, 1)
    # Every reference of the copy resolves inside the copy (the FKs carry tenant_id), with the same ids,
    # ciphertext bytes (as channels' are copied) and payloads.
    assert webhook_chain(fresh_db, copy) == chain
    with fresh_db.admin() as conn:
        for table in WEBHOOK_TABLES:
            assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(
                sql.Identifier(table)), (copy,)).fetchone() == (1,), table
    assert webhook_chain(fresh_db, a) == chain and webhook_chain(fresh_db, b) == other  # the rest untouched
    with fresh_db.admin() as conn:  # its secret does not open in the copy: the copy's endpoints start disabled
        assert conn.execute("SELECT enabled, disabled_reason FROM webhook_endpoints WHERE tenant_id = %s",
                            (copy,)).fetchall() == [(False, "operator")]
    # As with channels, the copy's ciphertext is bound to the source workspace: it does not open as the copy's.
    with pytest.raises(CredentialIntegrityError):
        vault.decrypt(bytes(chain[0][4]), secret_context(copy, endpoint_id))
    # In place: the same rows come back, and the endpoint's secret opens (it signs as before).
    wipe_content(fresh_db, a)
    assert webhook_chain(fresh_db, a) == []
    restore_workspace(jobs_db, a, blobs, vault)
    restored = webhook_chain(fresh_db, a)
    assert restored == chain
    assert vault.decrypt(bytes(restored[0][4]), secret_context(a, endpoint_id)).plaintext == secret.encode()


def test_deleting_the_workspace_crypto_shreds_every_copy_of_its_backups(
        fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs, vault: Vault, tmp_path: Path) -> None:
    a = seed(fresh_db, "a", new_canary())
    info = backup_workspace(jobs_db, a, blobs, vault, NOW)
    leaked = tmp_path / "copy-made-before-deletion.enc"
    leaked.write_bytes((tmp_path / "blobs" / info.blob_key).read_bytes())
    decrypt_file(leaked, tmp_path / "control.json", tenant_id=a, key=data_key(jobs_db, a, vault))  # the copy is good
    delete_workspace(jobs_db, a, blobs)
    assert blobs.list(f"backups/{a}") == []
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM backup_keys WHERE tenant_id = %s", (a,)).fetchone() == (0,)
    with pytest.raises(BackupKeyMissing):
        data_key(jobs_db, a, vault)
    with pytest.raises(RestoreError, match="no backups"):
        restore_workspace(jobs_db, a, blobs, vault)
    # Neither the master key nor any other key opens the copy: its data key existed only in the row.
    master = (tmp_path / "master.key").read_bytes()
    for guess in (master, bytes(32), uuid.uuid4().bytes * 2):
        with pytest.raises(BackupError, match="cannot be decrypted"):
            decrypt_file(leaked, tmp_path / "out.json", tenant_id=a, key=guess)
        assert not (tmp_path / "out.json").exists()


def test_a_tampered_or_swapped_object_is_refused(fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs,
                                                 vault: Vault, tmp_path: Path) -> None:
    a, b = seed(fresh_db, "a", new_canary()), seed(fresh_db, "b", new_canary())
    info_a, info_b = (backup_workspace(jobs_db, t, blobs, vault, NOW) for t in (a, b))
    path_a, path_b = tmp_path / "blobs" / info_a.blob_key, tmp_path / "blobs" / info_b.blob_key
    key_a = data_key(jobs_db, a, vault)
    good = path_a.read_bytes()
    for bad in (good[:-1] + bytes([good[-1] ^ 1]), good[: len(good) // 2], good + b"x", path_b.read_bytes()):
        path_a.write_bytes(bad)
        with pytest.raises(BackupError):
            decrypt_file(path_a, tmp_path / "out.json", tenant_id=a, key=key_a)
    wipe_content(fresh_db, a)
    path_a.write_bytes(path_b.read_bytes())  # B's backup put where A's should be (sizes may even match)
    with fresh_db.admin() as conn:
        conn.execute("UPDATE backups SET size_bytes = %s WHERE tenant_id = %s", (path_b.stat().st_size, a))
    with pytest.raises(BackupError):
        restore_workspace(jobs_db, a, blobs, vault)
    assert sum(map(len, rows_of(fresh_db, a).values())) == 1


def test_overlapping_runs_for_the_same_slot_do_the_work_once(fresh_db: TestDatabase, jobs_db: Database,
                                                             blobs: LocalBlobs, vault: Vault) -> None:
    tenants = [seed(fresh_db, f"w{n}", new_canary()) for n in range(3)]
    barrier = threading.Barrier(3)
    results: list[backup_tenants.BackupRun] = []

    def invoke() -> None:
        barrier.wait()
        results.append(backup_tenants.run(jobs_db, NOW, blobs=blobs, vault=vault))

    threads = [threading.Thread(target=invoke) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.claimed for r in results) == [False, False, True]
    (done,) = [r for r in results if r.claimed]
    assert done.counts["backups"] == 3 and done.failed == []
    with fresh_db.admin() as conn:
        per_workspace = conn.execute("SELECT tenant_id, count(*) FROM backups GROUP BY 1").fetchall()
        assert sorted(map(str, per_workspace)) == sorted(str((t, 1)) for t in tenants)
        assert conn.execute("SELECT counts->>'backups' FROM job_runs WHERE name = 'backup_tenants'").fetchall() == [
            ("3",)]


def seed_history(fresh_db: TestDatabase, blobs: LocalBlobs, tenant: uuid.UUID, days: list[date],
                 tmp_path: Path) -> list[str]:
    """Index rows and (dummy) objects of daily backups at 02:00 UTC on `days`."""
    dummy = tmp_path / "dummy.enc"
    dummy.write_bytes(b"not a real backup")
    keys = []
    with fresh_db.admin() as conn:
        for day in days:
            taken = datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
            keys.append(blob_key(tenant, taken))
            blobs.put_file(keys[-1], dummy)
            conn.execute("INSERT INTO backups (tenant_id, blob_key, taken_at, size_bytes, row_count)"
                         " VALUES (%s, %s, %s, 17, 0)", (tenant, keys[-1], taken))
    return keys


def stored_keys(fresh_db: TestDatabase, tenant: uuid.UUID) -> list[str]:
    with fresh_db.admin() as conn:
        return sorted(str(r[0]) for r in conn.execute("SELECT blob_key FROM backups WHERE tenant_id = %s", (tenant,)))


def stamp(day: str) -> str:
    return day.replace("-", "") + "T020000Z.json.enc"


def test_retention_is_applied_after_each_run(fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs,
                                            vault: Vault, tmp_path: Path) -> None:
    a = seed(fresh_db, "a", new_canary())
    april_1 = date(2025, 4, 1)
    seed_history(fresh_db, blobs, a, [april_1 + timedelta(days=n) for n in range(61)], tmp_path)  # Apr 1 .. May 31
    stray_old, stray_new = f"backups/{a}/20250301T020000Z.json.enc", f"backups/{a}/20250601T010000Z.json.enc"
    for key in (stray_old, stray_new):  # objects no row points at (a crash between upload and commit)
        blobs.put_file(key, tmp_path / "dummy.enc")
    result = backup_tenants.run(jobs_db, NOW, blobs=blobs, vault=vault)  # Sun 2025-06-01 02:00
    assert result.failed == [] and result.counts["backups"] == 1
    kept = stored_keys(fresh_db, a)
    # 30 dailies: Jun 1 and May 3..31. 12 ISO weeks wanted, 9 have backups (W14 Mon Mar 31 .. W22 Sun Jun 1):
    # their Sundays Apr 27, 20, 13, 6 are new, the rest already dailies. Months: Jun 1, May 31 and Apr 30.
    # Neither bucket is full, so the oldest backup (Apr 1) stays too (restic 0.17+).
    expected = {"2025-06-01"} | {f"2025-05-{d:02d}" for d in range(3, 32)} | {
        "2025-04-27", "2025-04-20", "2025-04-13", "2025-04-06", "2025-04-30", "2025-04-01"}
    assert kept == sorted(f"backups/{a}/{stamp(d)}" for d in expected) and len(kept) == 36
    assert result.counts["expired"] == 62 - 36 + 1  # + the stray older than a day
    assert sorted(blobs.list(f"backups/{a}")) == sorted([*kept, stray_new])  # the fresh stray may be in flight
    # Retention is stable: a second pass expires nothing.
    assert apply_retention(jobs_db, a, blobs, NOW) == []
    rows = [(k, gfs.utc(datetime.strptime(k.rsplit("/", 1)[1][:16], "%Y%m%dT%H%M%SZ"))) for k in kept]
    assert gfs.keep(rows) == set(kept)


def test_dry_run_lists_what_would_expire_and_changes_nothing(fresh_db: TestDatabase, jobs_db: Database,
                                                             blobs: LocalBlobs, vault: Vault, tmp_path: Path) -> None:
    a = seed(fresh_db, "a", new_canary())
    keys = seed_history(fresh_db, blobs, a, [date(2025, 5, 1) + timedelta(days=n) for n in range(31)], tmp_path)
    result = backup_tenants.run(jobs_db, NOW, blobs=blobs, vault=vault, dry_run=True)
    # 31 days of May: 30 dailies keep May 2..31 (the monthly is May 31; W18's Sunday May 4 is a daily); the
    # daily bucket is full, but weekly and monthly are not, so the oldest (May 1) stays as well.
    assert result.expired == [] and result.counts == {"workspaces": 1, "would_expire": 0}
    more = seed_history(fresh_db, blobs, a, [date(2025, 4, 28), date(2025, 4, 29)], tmp_path)
    result = backup_tenants.run(jobs_db, NOW, blobs=blobs, vault=vault, dry_run=True)
    # Now Thu May 1 is neither a daily (May 2..31), nor the newest of W18 (Mon Apr 28 .. Sun May 4), nor of
    # May; Apr 29 is April's monthly and Apr 28 the oldest, kept while the weekly bucket is not full.
    assert result.expired == [keys[0]] and result.counts == {"workspaces": 1, "would_expire": 1}
    assert stored_keys(fresh_db, a) == sorted(keys + more)
    assert sorted(blobs.list(f"backups/{a}")) == sorted(keys + more)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM job_runs").fetchone() == (0,)  # no slot used up


@pytest.fixture
def cli(staff_env: Path) -> Callable[..., Any]:
    """Run a function's main() as from a shell: DATA_DIR (key file, blobs) of this test, its database."""
    return lambda module, *argv: module.main(list(argv))


def test_one_failing_workspace_does_not_stop_the_others_and_the_exit_code_says_so(
        fresh_db: TestDatabase, jobs_db: Database, cli: Callable[..., Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    canaries = [new_canary() for _ in range(3)]
    a, b, c = (seed(fresh_db, f"w{n}", canary) for n, canary in enumerate(canaries))
    assert cli(backup_tenants, "--now", "2025-05-31T02:00:00+00:00") == 0
    with fresh_db.admin() as conn:  # B's key row now holds A's wrapped key: refused by the context check
        conn.execute("UPDATE backup_keys SET wrapped_key = (SELECT wrapped_key FROM backup_keys WHERE tenant_id = %s)"
                     " WHERE tenant_id = %s", (a, b))
    capsys.readouterr()
    assert cli(backup_tenants, "--now", NOW.isoformat()) == 1
    output = capsys.readouterr()
    with fresh_db.admin() as conn:
        counts = {r[0]: r[1] for r in conn.execute("SELECT tenant_id, count(*) FROM backups GROUP BY 1")}
    assert counts == {a: 2, b: 1, c: 2}
    summary = json.loads(output.out)
    assert (summary["failed"], summary["counts"]["backups"]) == ([str(b)], 2)
    assert not any(canary in output.out + output.err for canary in canaries)  # counts, never contents
    with pytest.raises(CredentialIntegrityError):
        data_key(jobs_db, b, Vault.local(tmp_path / "data" / "master.key"))
    # The same slot again: claimed already, nothing done.
    assert cli(backup_tenants, "--now", NOW.isoformat()) == 0
    output = capsys.readouterr()
    assert json.loads(output.out) == {"claimed": False} and "nothing done" in output.err


def test_restore_tenant_command_line(fresh_db: TestDatabase, cli: Callable[..., Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    a = seed(fresh_db, "a", new_canary())
    assert cli(backup_tenants, "--now", NOW.isoformat()) == 0
    before = rows_of(fresh_db, a)
    capsys.readouterr()
    assert cli(restore_tenant, str(a)) == 1
    assert "still has rows" in capsys.readouterr().err
    assert cli(restore_tenant, str(a), "--as-new") == 0
    output = capsys.readouterr()
    copy = uuid.UUID(json.loads(output.out)["workspace_id"])
    assert f"restored as new workspace {copy}" in output.err
    assert len(rows_of(fresh_db, copy)["leads"]) == 1
    wipe_content(fresh_db, a)
    assert cli(restore_tenant, str(a), "--backup", f"backups/{a}/20250601T020000Z.json.enc") == 0
    assert rows_of(fresh_db, a) == before


def test_backup_keys_move_to_the_current_master_key(fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs,
                                                   tmp_path: Path) -> None:
    old = Vault.local(tmp_path / "old.key")
    both = Vault.local(tmp_path / "new.key", previous_key_files=[tmp_path / "old.key"])
    a = seed(fresh_db, "a", new_canary())
    first = backup_workspace(jobs_db, a, blobs, old, NOW)
    backup_workspace(jobs_db, a, blobs, both, NOW + timedelta(days=1))  # unwraps with the old key, re-wraps
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT key_id FROM backup_keys WHERE tenant_id = %s", (a,)).fetchone() == (both.key_id,)
    before = rows_of(fresh_db, a)
    wipe_content(fresh_db, a)
    only_new = Vault.local(tmp_path / "new.key")  # the old master key is no longer needed, even for old backups
    restore_workspace(jobs_db, a, blobs, only_new, backup=first.blob_key)
    assert rows_of(fresh_db, a) == before


def test_backup_and_restore_with_a_kms_master_key_under_moto(
        fresh_db: TestDatabase, jobs_db: Database, blobs: LocalBlobs, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    for name, value in (("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    a = seed(fresh_db, "a", new_canary())
    with mock_aws():
        arn = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
        backup_workspace(jobs_db, a, blobs, Vault.kms(arn), NOW)
        before = rows_of(fresh_db, a)
        wipe_content(fresh_db, a)
        restore_workspace(jobs_db, a, blobs, Vault.kms(arn))
    assert rows_of(fresh_db, a) == before
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT key_id FROM backup_keys WHERE tenant_id = %s", (a,)).fetchone() == (arn,)
