"""export_tenant: complete (catalog-driven), isolated (RLS), secrets as metadata only, verifiable, atomic.

What the export must hold comes from the catalogue and the allowlists below, never from the product's own
exclusion lists: a content table added to EXCLUDED_TABLES fails these tests.
"""

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
from psycopg.types.json import Jsonb

from chalicelib import audit
from chalicelib.blobs import LocalBlobs
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.jobs.export import WorkspaceNotFound, export_workspace, read_export
from chalicelib.vault.envelope import Vault
from chalicelib.vault.store import CredentialCache, put_credentials
from tests.conftest import ROOT, TestDatabase, make_tenant
from tests.functions.test_delete import SHARED_EMAIL, new_canary, plant, row_counts, tenant_table_names

# Column names that hold a secret or a digest of one: they must never reach an export.
SECRET_COLUMN = re.compile(r"ciphertext|(^|_)(key|token|code|subject)_hash$|wrapped_key|password")
# The reasons a manifest may give for leaving something out (the closed set README documents).
REASONS = {"derived", "key-material", "backup-index"}
# The only tables with a tenant_id an export may leave out, each with its reason. Every other table of the
# catalogue must be in the export, with rows.
NOT_EXPORTED = {
    "backup_keys": "key-material",  # the workspace's wrapped backup data key
    "backups": "backup-index",  # which backup objects exist: bookkeeping about backups, not content
    "search_terms": "derived",  # the words of searchable records, rebuilt by triggers from exported rows
}
# The only columns of exported tables an export may withhold, each with its reason.
NOT_EXPORTED_COLUMNS = {
    "api_keys": {"key_hash": "key-material"},  # HMAC of the bearer key
    "channels": {"secrets_ciphertext": "key-material"},  # the provider tokens, encrypted
    "integration_credentials": {"ciphertext": "key-material"},  # third-party secrets, encrypted
    # The outgoing webhooks' signing secrets (current and pre-rotation), encrypted.
    "webhook_endpoints": {"secret_ciphertext": "key-material", "previous_secret_ciphertext": "key-material"},
    "proposals": {"signnow_hook_secret": "key-material"},  # the secret SignNow signs a proposal's callbacks with
}
# The accounts section: list -> (source table, its columns the export withholds with their reason).
ACCOUNTS = {
    "members": ("users", {}),
    "invitations": ("login_tokens", {"token_hash": "key-material", "code_hash": "key-material"}),
    "account_audit_log": ("account_audit_log", {"subject_hash": "key-material"}),
    "webhook_routes": ("webhook_routes", {}),
}


@pytest.fixture
def two_workspaces(fresh_db: TestDatabase) -> tuple[uuid.UUID, str, uuid.UUID, str]:
    """A and B, each planted with its own canary (and the same person as a contact of both)."""
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    canary_a, canary_b = new_canary(), new_canary()
    plant(fresh_db, a, canary_a)
    plant(fresh_db, b, canary_b)
    return a, canary_a, b, canary_b


def raw_tables(text: str, section: str = "tables") -> dict[str, str]:
    """Each table's (or accounts list's) rows exactly as written in the file (between its brackets)."""
    decoder, found = json.JSONDecoder(), {}
    position = text.index(f'"{section}": {{') + len(f'"{section}": {{')
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
    """Every catalogue table with a tenant_id, save the allowlist."""
    return set(tenant_table_names(db)) - set(NOT_EXPORTED)


def catalogue_columns(db: TestDatabase, table: str) -> set[str]:
    with db.admin() as conn:
        return {str(r[0]) for r in conn.execute("SELECT column_name FROM information_schema.columns"
                                                " WHERE table_schema = 'public' AND table_name = %s", (table,))}


def test_export_has_every_tenant_table_and_the_database_row_counts(
        fresh_db: TestDatabase, jobs_db: Database, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str],
        tmp_path: Path) -> None:
    a = two_workspaces[0]
    manifest = export_workspace(jobs_db, a, tmp_path / "a.json")
    export = read_export(tmp_path / "a.json")
    assert (export["format"], export["format_version"], export["workspace"]["id"]) == ("tenant-crm-export", 2, str(a))
    assert set(export["tables"]) == expected_tables(fresh_db) == set(manifest.exported)
    counts = row_counts(fresh_db, a)
    assert {t: len(rows) for t, rows in export["tables"].items()} == {t: counts[t] for t in export["tables"]}
    assert sum(counts[t] for t in export["tables"]) == manifest.total_rows
    # Every exported table of the seeded workspace has rows: a table emptied by the export cannot hide.
    assert [t for t, rows in export["tables"].items() if not rows] == []


def test_manifest_names_every_catalogue_table_and_declares_each_exclusion_with_its_reason(
        fresh_db: TestDatabase, jobs_db: Database, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str],
        tmp_path: Path) -> None:
    export_workspace(jobs_db, two_workspaces[0], tmp_path / "a.json")
    manifest = read_export(tmp_path / "a.json")["manifest"]
    assert set(manifest["tables"]) == set(tenant_table_names(fresh_db))
    excluded = {t: e["excluded"] for t, e in manifest["tables"].items() if "excluded" in e}
    assert excluded == NOT_EXPORTED
    withheld = {t: e["excluded_columns"] for t, e in manifest["tables"].items() if "excluded_columns" in e}
    assert withheld == NOT_EXPORTED_COLUMNS
    assert {t: e["rows"] > 0 for t, e in manifest["tables"].items() if t not in excluded} == dict.fromkeys(
        expected_tables(fresh_db), True)
    assert set(manifest["reasons"]) == REASONS and all(manifest["reasons"].values())
    assert manifest["blobs"] == {"included": False}


def test_accounts_section_holds_members_invitations_audit_entries_and_routes_of_this_workspace_only(
        fresh_db: TestDatabase, jobs_db: Database, tmp_path: Path) -> None:
    a, b = make_tenant(fresh_db, "a"), make_tenant(fresh_db, "b")
    canary_a, canary_b = new_canary(), new_canary()
    ids_a, ids_b = plant(fresh_db, a, canary_a), plant(fresh_db, b, canary_b)
    outsider = uuid.uuid4()
    with fresh_db.admin() as conn:
        conn.execute("UPDATE users SET display_name = %s WHERE id = %s", (f"Ann {canary_a}", ids_a["user"]))
        conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (outsider, f"o-{outsider.hex}@example.com"))
        for user, details in ((ids_a["user"], {"workspace_id": str(b)}), (ids_a["user"], {}),
                              (outsider, {"workspace_id": str(a)})):  # not about A, or not by a member of A
            conn.execute("INSERT INTO account_audit_log (user_id, action, details) VALUES (%s, 'elsewhere', %s)",
                         (user, Jsonb(details)))
    manifest = export_workspace(jobs_db, a, tmp_path / "a.json")
    text = (tmp_path / "a.json").read_text()
    accounts = json.loads(text)["accounts"]
    assert set(accounts) == set(ACCOUNTS)
    (member,) = accounts["members"]
    assert (member["id"], member["email"], member["display_name"]) == (
        str(ids_a["user"]), f"m-{ids_a['user'].hex}@example.com", f"Ann {canary_a}")
    (invitation,) = accounts["invitations"]
    assert (invitation["email"], invitation["workspace_id"], invitation["role"]) == (
        f"{canary_a}@example.com", str(a), "member")
    (entry,) = accounts["account_audit_log"]
    assert (entry["user_id"], entry["action"], entry["details"]) == (str(ids_a["user"]), "member.joined",
                                                                     {"workspace_id": str(a)})
    (route,) = accounts["webhook_routes"]
    assert route["workspace_id"] == str(a) and route["channel_id"] == json.loads(text)["tables"]["channels"][0]["id"]
    assert canary_b not in text and ids_b["user"].hex not in text and str(b) not in text and outsider.hex not in text
    raw = raw_tables(text, "accounts")
    assert manifest.accounts == {name: {"source": source, "rows": 1, "sha256": hashlib.sha256(
        raw[name].encode()).hexdigest(), **({"excluded_columns": withheld} if withheld else {})}
        for name, (source, withheld) in ACCOUNTS.items()}


def test_accounts_lists_carry_every_column_of_their_table_but_the_declared_key_material(
        fresh_db: TestDatabase, jobs_db: Database, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str],
        tmp_path: Path) -> None:
    export_workspace(jobs_db, two_workspaces[0], tmp_path / "a.json")
    export = read_export(tmp_path / "a.json")
    for name, (source, withheld) in ACCOUNTS.items():
        (row, *_rest) = export["accounts"][name]
        assert set(row) == catalogue_columns(fresh_db, source) - set(withheld), name
        assert set(withheld.values()) <= REASONS
        assert export["manifest"]["accounts"][name].get("excluded_columns", {}) == withheld


def test_no_token_hash_or_secret_of_the_workspace_or_its_members_reaches_the_export(
        fresh_db: TestDatabase, jobs_db: Database, tmp_path: Path) -> None:
    a = make_tenant(fresh_db, "a")
    ids = plant(fresh_db, a, new_canary())
    secrets = {column: b"SECRETCANARY" + uuid.uuid4().bytes for column in (
        "login_tokens.token_hash", "login_tokens.code_hash", "sessions.token_hash", "account_audit_log.subject_hash",
        "api_keys.key_hash", "channels.secrets_ciphertext", "integration_credentials.ciphertext",
        "backup_keys.wrapped_key", "webhook_endpoints.secret_ciphertext",
        "webhook_endpoints.previous_secret_ciphertext")}
    with fresh_db.admin() as conn:
        conn.execute("UPDATE login_tokens SET token_hash = %s, code_hash = %s WHERE workspace_id = %s",
                     (secrets["login_tokens.token_hash"], secrets["login_tokens.code_hash"], a))
        conn.execute("INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at)"
                     " VALUES (%s, %s, now(), now(), now() + interval '1 day')",
                     (secrets["sessions.token_hash"], ids["user"]))
        conn.execute("UPDATE account_audit_log SET subject_hash = %s WHERE user_id = %s",
                     (secrets["account_audit_log.subject_hash"], ids["user"]))
        for column in ("api_keys.key_hash", "channels.secrets_ciphertext", "integration_credentials.ciphertext",
                       "backup_keys.wrapped_key", "webhook_endpoints.secret_ciphertext",
                       "webhook_endpoints.previous_secret_ciphertext"):
            table, name = column.split(".")
            conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE tenant_id = %s").format(
                sql.Identifier(table), sql.Identifier(name)), (secrets[column], a))
    export_workspace(jobs_db, a, tmp_path / "a.json", blobs=LocalBlobs(tmp_path / "blobs"))
    text = (tmp_path / "a.json").read_text()
    export = json.loads(text)
    assert export["accounts"]["invitations"] and export["accounts"]["account_audit_log"]  # the rows are there
    (endpoint,) = export["tables"]["webhook_endpoints"]  # the endpoint is there, its secrets are not
    assert endpoint["url"] and not {"secret_ciphertext", "previous_secret_ciphertext"} & set(endpoint)
    for column, value in secrets.items():
        for form in (value.hex(), base64.b64encode(value).decode(), "SECRETCANARY"):
            assert form not in text, column


def test_no_secret_column_of_any_tenant_table_is_exported(fresh_db: TestDatabase) -> None:
    with fresh_db.admin() as conn:
        columns = conn.execute("SELECT table_name, column_name FROM information_schema.columns"
                               " WHERE table_schema = 'public' AND table_name = ANY(%s)",
                               (sorted(expected_tables(fresh_db) | {s for s, _ in ACCOUNTS.values()}),)).fetchall()
    secret = {(str(t), str(c)) for t, c in columns if SECRET_COLUMN.search(str(c))}
    assert ("integration_credentials", "ciphertext") in secret  # the pattern finds what it must
    withheld = {(t, c) for t, cs in NOT_EXPORTED_COLUMNS.items() for c in cs}
    withheld |= {(s, c) for s, cs in ACCOUNTS.values() for c in cs}
    assert secret - withheld == set()

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


def test_manifest_rows_and_digests_match_the_file(
        fresh_db: TestDatabase, jobs_db: Database, two_workspaces: tuple[uuid.UUID, str, uuid.UUID, str],
        tmp_path: Path) -> None:
    export_workspace(jobs_db, two_workspaces[0], tmp_path / "a.json")
    text = (tmp_path / "a.json").read_text(encoding="utf-8")
    export, raw = json.loads(text), raw_tables(text)
    written = {t: e for t, e in export["manifest"]["tables"].items() if "excluded" not in e}
    assert set(raw) == set(written)
    for table, entry in written.items():
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
    assert read_export(destination)["manifest"] == manifest.as_dict()
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
    assert printed["tables"]["contacts"] == 2 and printed["excluded"] == NOT_EXPORTED
    assert printed["blobs_included"] is True and export["manifest"]["blobs"] == {"included": True, "objects": 1}
    assert export["blobs"] == {f"tenants/{a}/attachments/contract.pdf": base64.b64encode(attachments[a]).decode()}
    assert done.stdout.count("\n") == 1  # the summary alone: logs go to stderr
    log_lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert any(line.get("msg") == "export written" and line.get("count") == printed["rows"] for line in log_lines)
