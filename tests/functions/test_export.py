"""export_tenant: complete (catalog-driven), isolated (RLS), secrets as metadata only, verifiable, atomic."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from chalicelib import audit
from chalicelib.blobs import LocalBlobs
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.jobs.common import EXCLUDED_COLUMNS, EXCLUDED_TABLES
from chalicelib.jobs.export import FORMAT, WorkspaceNotFound, export_workspace, read_export
from chalicelib.vault.envelope import Vault
from chalicelib.vault.store import CredentialCache, put_credentials
from tests.conftest import ROOT, TestDatabase, make_tenant
from tests.functions.test_delete import SHARED_EMAIL, new_canary, plant, row_counts, tenant_table_names

# Column names that hold a secret or a digest of one: they must never reach an export.
SECRET_COLUMN = re.compile(r"ciphertext|(^|_)(key|token|code)_hash$|wrapped_key|password")


@pytest.fixture
def two_workspaces(fresh_db: TestDatabase) -> tuple[uuid.UUID, str, uuid.UUID, str]:
    """A and B, each planted with its own canary (and the same person as a contact of both)."""
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    canary_a, canary_b = new_canary(), new_canary()
    plant(fresh_db, a, canary_a)
    plant(fresh_db, b, canary_b)
    return a, canary_a, b, canary_b


def raw_tables(text: str) -> dict[str, str]:
    """Each table's rows exactly as written in the file (between its brackets), for the digests."""
    decoder, found = json.JSONDecoder(), {}
    position = text.index('"tables": {') + len('"tables": {')
    while text[position] != "}":
        name, position = decoder.raw_decode(text, position)
        assert text[position:position + 2] == ": "
        start = position + 2
        _rows, position = decoder.raw_decode(text, start)
        found[name] = text[start + 1:position - 1]
        if text[position:position + 2] == ", ":
            position += 2
    return found


def expected_tables(db: TestDatabase) -> set[str]:
    return set(tenant_table_names(db)) - EXCLUDED_TABLES


def test_export_has_every_tenant_table_and_the_database_row_counts(
        fresh_db: TestDatabase, jobs_db: Database, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str],
        tmp_path: Path) -> None:
    a = two_workspaces[0]
    manifest = export_workspace(jobs_db, a, tmp_path / "a.json")
    export = read_export(tmp_path / "a.json")
    assert (export["format"], export["format_version"], export["workspace"]["id"]) == (FORMAT, 1, str(a))
    assert set(export["tables"]) == expected_tables(fresh_db) == set(manifest.tables)
    counts = row_counts(fresh_db, a)
    assert {t: len(rows) for t, rows in export["tables"].items()} == {t: counts[t] for t in export["tables"]}
    assert sum(counts[t] for t in export["tables"]) == manifest.total_rows
    assert min(counts[t] for t in ("contacts", "leads", "notes", "audit_log", "memberships")) >= 1


def test_a_new_tenant_table_is_exported_without_code_changes(
        fresh_db: TestDatabase, jobs_db: Database, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str],
        tmp_path: Path) -> None:
    a, _canary_a, b, _canary_b = two_workspaces
    with fresh_db.admin() as conn:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE crm_owner")
            conn.execute("CREATE TABLE public.loyalty_points (tenant_id uuid NOT NULL REFERENCES public.workspaces"
                         " (id) ON DELETE CASCADE, id uuid NOT NULL DEFAULT gen_random_uuid(), points integer NOT NULL,"
                         " reason text, PRIMARY KEY (tenant_id, id))")
            conn.execute("CALL app.secure_tenant_table('public.loyalty_points')")
        for tenant, points in ((a, (5, 7)), (b, (100,))):
            for value in points:
                conn.execute("INSERT INTO loyalty_points (tenant_id, points, reason) VALUES (%s, %s, 'signup')",
                             (tenant, value))
    export_workspace(jobs_db, a, tmp_path / "a.json")
    rows = read_export(tmp_path / "a.json")["tables"]["loyalty_points"]
    assert sorted(r["points"] for r in rows) == [5, 7]
    assert {r["tenant_id"] for r in rows} == {str(a)}


def test_no_row_of_another_workspace_reaches_the_export(
        fresh_db: TestDatabase, jobs_db: Database, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str],
        tmp_path: Path) -> None:
    a, canary_a, b, canary_b = two_workspaces
    export_workspace(jobs_db, a, tmp_path / "a.json", blobs=LocalBlobs(tmp_path / "blobs"))
    text = (tmp_path / "a.json").read_text()
    assert canary_a in text and canary_b not in text and str(b) not in text
    export = json.loads(text)
    for table, rows in export["tables"].items():
        key = "id" if table == "workspaces" else "tenant_id"
        assert {r[key] for r in rows} <= {str(a)}, table
    # R16: the same address is a contact of A and of B; only A's copy is exported.
    shared = [c for c in export["tables"]["contacts"] if c["email"] == SHARED_EMAIL]
    assert len(shared) == 1 and shared[0]["first_name"] == f"Shared {canary_a}"


def test_credentials_are_exported_as_metadata_only(
        fresh_db: TestDatabase, jobs_db: Database, tmp_path: Path) -> None:
    a = make_tenant(fresh_db, "a")
    secret = "sk_test_CANARY" + uuid.uuid4().hex
    with tenant_tx(a, db=jobs_db) as conn:
        summary = put_credentials(conn, tenant_id=a, provider="stripe", data={"secret_key": secret},
                                  actor=audit.SYSTEM, vault=Vault.local(tmp_path / "master.key"),
                                  cache=CredentialCache(ttl=0))
    export_workspace(jobs_db, a, tmp_path / "a.json")
    text = (tmp_path / "a.json").read_text()
    assert secret not in text and secret[-12:] not in text
    (row,) = json.loads(text)["tables"]["integration_credentials"]
    assert "ciphertext" not in row
    assert row["provider"] == "stripe" and row["hints"] == summary.hints and secret[-4:] in json.dumps(row["hints"])
    assert {"created_at", "updated_at", "key_id"} <= set(row)


def test_no_secret_column_of_any_tenant_table_is_exported(fresh_db: TestDatabase) -> None:
    with fresh_db.admin() as conn:
        columns = conn.execute("SELECT table_name, column_name FROM information_schema.columns"
                               " WHERE table_schema = 'public' AND table_name = ANY(%s)",
                               (sorted(expected_tables(fresh_db)),)).fetchall()
    secret = {(str(t), str(c)) for t, c in columns if SECRET_COLUMN.search(str(c))}
    assert ("integration_credentials", "ciphertext") in secret  # the pattern finds what it must
    assert {(t, c) for t, c in secret if c not in EXCLUDED_COLUMNS.get(t, set())} == set()


def test_manifest_rows_and_digests_match_the_file(
        fresh_db: TestDatabase, jobs_db: Database, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str],
        tmp_path: Path) -> None:
    export_workspace(jobs_db, two_workspaces[0], tmp_path / "a.json")
    text = (tmp_path / "a.json").read_text(encoding="utf-8")
    export, raw = json.loads(text), raw_tables(text)
    assert set(raw) == set(export["manifest"])
    for table, entry in export["manifest"].items():
        assert entry["rows"] == len(export["tables"][table]), table
        assert entry["sha256"] == hashlib.sha256(raw[table].encode("utf-8")).hexdigest(), table


def test_text_needing_escapes_survives_the_export_exactly(
        fresh_db: TestDatabase, jobs_db: Database, tmp_path: Path) -> None:
    a = make_tenant(fresh_db, "a")
    tricky = 'back\\slash \\\\ "quoted"\ttab\nnew line\r ünïcödé 🚀 \\n not-a-newline \x01'
    with fresh_db.admin() as conn:
        conn.execute("INSERT INTO companies (tenant_id, name, custom)"
                     " VALUES (%s, 'x', jsonb_build_object('k', %s::text))", (a, tricky))
        conn.execute(sql.SQL("INSERT INTO notes (tenant_id, body, company_id) SELECT tenant_id, %s, id FROM companies"
                             " WHERE tenant_id = %s"), (tricky, a))
    export_workspace(jobs_db, a, tmp_path / "a.json")
    tables = read_export(tmp_path / "a.json")["tables"]
    assert tables["notes"][0]["body"] == tricky and tables["companies"][0]["custom"] == {"k": tricky}


class Crash:
    """A progress watcher that kills the export at its `after`-th report (a crash mid-file)."""

    def __init__(self, after: int) -> None:
        self.after = after

    def begin(self, label: str, totals: Mapping[str, int]) -> None:
        pass

    def advance(self, table: str, done: int) -> None:
        self.after -= 1
        if not self.after:
            raise RuntimeError("killed mid-export")


def test_a_crash_mid_export_leaves_no_file_and_a_rerun_succeeds(
        fresh_db: TestDatabase, jobs_db: Database, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str],
        tmp_path: Path) -> None:
    a = two_workspaces[0]
    destination = tmp_path / "out" / "a.json"
    with pytest.raises(RuntimeError):
        export_workspace(jobs_db, a, destination, progress=Crash(after=5))
    assert list(destination.parent.iterdir()) == []  # neither the file nor a .partial leftover
    manifest = export_workspace(jobs_db, a, destination)
    assert read_export(destination)["manifest"] == manifest.tables
    assert [p.name for p in destination.parent.iterdir()] == ["a.json"]


def test_a_crash_never_replaces_an_earlier_complete_export(
        fresh_db: TestDatabase, jobs_db: Database, tmp_path: Path) -> None:
    a = make_tenant(fresh_db, "a")
    destination = tmp_path / "a.json"
    export_workspace(jobs_db, a, destination)
    before = destination.read_bytes()

    with fresh_db.admin() as conn:
        conn.execute("INSERT INTO companies (tenant_id, name) VALUES (%s, 'new')", (a,))
    with pytest.raises(RuntimeError):
        export_workspace(jobs_db, a, destination, progress=Crash(after=1))
    assert destination.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_unknown_workspace_is_refused_without_a_file(fresh_db: TestDatabase, jobs_db: Database,
                                                     tmp_path: Path) -> None:
    with pytest.raises(WorkspaceNotFound):
        export_workspace(jobs_db, uuid.uuid4(), tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_end_to_end_with_blobs(
        fresh_db: TestDatabase, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str], tmp_path: Path) -> None:
    a, _canary_a, b, _canary_b = two_workspaces
    data_dir = tmp_path / "data"
    attachments = {a: b"%PDF of A \x00\xff", b: b"%PDF of B"}
    for tenant, content in attachments.items():
        path = data_dir / "blobs" / "tenants" / str(tenant) / "attachments" / "contract.pdf"
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SENTRY_DSN")}
    env.update(JOBS_DATABASE_URL=fresh_db.jobs_url, DATA_DIR=str(data_dir), STAGE="local", LOG_LEVEL="INFO")
    out = tmp_path / "export" / "a.json"
    done = subprocess.run([sys.executable, "-m", "functions.export_tenant", str(a), "--out", str(out),
                           "--with-blobs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    export = read_export(out)
    assert printed["rows"] == sum(len(rows) for rows in export["tables"].values()) > 20
    assert printed["tables"]["contacts"] == 2
    assert export["blobs"] == {f"tenants/{a}/attachments/contract.pdf": base64.b64encode(attachments[a]).decode()}
    assert done.stdout.count("\n") == 1  # the summary alone: logs go to stderr
    log_lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert any(line.get("msg") == "export written" and line.get("count") == printed["rows"] for line in log_lines)
