"""Restore a workspace from one of its encrypted backups: one transaction, parents first, in batches.

The backup is decrypted (and authenticated) to a private temporary file, indexed and checked against its
manifest before the database is touched, then each table's rows go in with
`INSERT ... SELECT ... FROM jsonb_populate_recordset(...)` in dependency order, under the target
workspace's RLS context (jobs role). Any failure rolls the whole restore back.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, LiteralString

import psycopg
from psycopg import sql

from chalicelib.blobs import BlobStore
from chalicelib.db import queries
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.db.types import Conn
from chalicelib.jobs.backup import CHUNK_BYTES, BackupError, backup_context, data_key, esdk
from chalicelib.jobs.common import TenantTable, dependency_order
from chalicelib.jobs.dump import KIND, backup_tables
from chalicelib.jobs.export import FORMAT, FORMAT_VERSION
from chalicelib.jobs.progress import Progress
from chalicelib.observability import log_event
from chalicelib.vault.envelope import Vault

Q = queries.load(__package__)
log = logging.getLogger("crm.jobs.restore")
BATCH_ROWS = 1000
BATCH_BYTES = 4 << 20
_TABLES_OPEN = b'"tables": {\n'
_MANIFEST = b'}, "manifest": '
# Backup formats this code restores: 1 (manifest: the tables written) and 2 (every catalog table named).
VERSIONS = (1, FORMAT_VERSION)


class RestoreError(BackupError):
    """The restore was refused, or the backup cannot be used; the message says why."""


@dataclass
class RestoreReceipt:
    """What a restore wrote."""

    workspace_id: str
    source_workspace_id: str
    backup_key: str
    taken_at: str
    rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    # Tables the backup itself left out, with their reason (common.REASONS); empty for a version 1 backup.
    excluded: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able receipt."""
        return {"workspace_id": self.workspace_id, "source_workspace_id": self.source_workspace_id,
                "backup_key": self.backup_key, "taken_at": self.taken_at, "rows": self.rows,
                "skipped": self.skipped, "excluded": self.excluded}


def decrypt_file(source: Path, target: Path, *, tenant_id: uuid.UUID, key: bytes) -> None:
    """Decrypt and authenticate a backup object; BackupError unless it is whole, ours and this workspace's."""
    client, master, algorithm = esdk(tenant_id, key)
    size = source.stat().st_size
    try:
        with open(source, "rb") as sealed, open(target, "wb") as sink:
            # decrypt-unsigned: we never write signed messages, so one is not ours. Not a `with` block:
            # the SDK's __exit__ logs a traceback of its own whenever a stream ends early.
            decryptor = client.stream(mode="decrypt-unsigned", source=sealed, key_provider=master)
            try:
                header = decryptor.header
                # The ESDK authenticates the context but compares it with nothing: that is ours to do.
                if header.algorithm != algorithm or dict(header.encryption_context) != backup_context(tenant_id):
                    raise BackupError("the backup belongs to another workspace or was not written by this system")
                while chunk := decryptor.read(CHUNK_BYTES):
                    sink.write(chunk)
                # Frames are released as they authenticate; only the footer proves nothing was cut off.
                # Trailing bytes after the message are tampering too.
                if not hasattr(decryptor, "footer") or sealed.tell() != size:
                    raise BackupError("the backup is truncated or has trailing data")
            finally:
                with contextlib.suppress(Exception):  # "footer not read" after a failure: already reported
                    decryptor.close()
    except BackupError:
        target.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - the SDK's errors (and their frames) stay out of logs
        target.unlink(missing_ok=True)
        raise BackupError(f"the backup cannot be decrypted ({type(exc).__name__})") from None


def choose_backup(db: Database, tenant_id: uuid.UUID, key: str | None = None) -> tuple[str, datetime, int]:
    """(blob key, taken_at, size) of the named backup of the workspace, or of its newest."""
    with tenant_tx(tenant_id, db=db) as conn:
        if key is None:
            row = conn.execute(Q["backup_newest"], (tenant_id,)).fetchone()
        else:
            row = conn.execute(Q["backup_named"], (tenant_id, key)).fetchone()
    if row is None:
        raise RestoreError(f"workspace {tenant_id} has no backup {key}" if key else
                           f"workspace {tenant_id} has no backups")
    return str(row[0]), row[1], int(row[2])


@dataclass(frozen=True)
class _Section:
    start: int
    rows: int


def _manifest(manifest: dict[str, Any], version: int) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(rows and digest per table written, reason per table left out) of a backup's manifest."""
    if version == 1:  # tables written only; what was left out is what the rules of the day left out
        return manifest, {}
    tables: dict[str, dict[str, Any]] = manifest["tables"]
    written = {name: {"rows": e["rows"], "sha256": e["sha256"]} for name, e in tables.items() if "excluded" not in e}
    return written, {name: str(e["excluded"]) for name, e in tables.items() if "excluded" in e}


def _index(plain: IO[bytes]) -> tuple[dict[str, _Section], dict[str, str]]:
    """Where each table's rows are in the file and what it left out (with reasons); checks layout and manifest."""
    first = plain.readline()
    if not first.endswith(_TABLES_OPEN):
        raise RestoreError("not a backup file")
    head = json.loads(first[:-len(_TABLES_OPEN)] + b'"tables": {}}')
    if (head.get("format"), head.get("kind")) != (FORMAT, KIND) or head.get("format_version") not in VERSIONS:
        raise RestoreError("unsupported backup format")
    sections: dict[str, _Section] = {}
    found: dict[str, dict[str, Any]] = {}
    current: str | None = None
    start = rows = 0
    digest = hashlib.sha256()
    while line := plain.readline():
        text = line.rstrip(b"\n")
        if text[:1] == b"{" or text[:2] == b",{":
            if current is None:
                raise RestoreError("malformed backup: a row outside a table")
            digest.update((b"," if rows else b"") + text.removeprefix(b","))
            rows += 1
        elif text == b"]" and current is not None:
            sections[current] = _Section(start, rows)
            found[current] = {"rows": rows, "sha256": digest.hexdigest()}
            current = None
        elif text[:1] == b'"' or text[:3] == b', "':
            current = str(json.loads(text.removeprefix(b", ").removesuffix(b": [")))
            start, rows, digest = plain.tell(), 0, hashlib.sha256()
        elif text.startswith(_MANIFEST) and current is None:
            # The AEAD already proves the file is the one we wrote; the manifest proves we read it right.
            written, excluded = _manifest(json.loads(text[len(_MANIFEST):-1]), int(head["format_version"]))
            if written != found:
                raise RestoreError("the backup does not match its manifest")
            return sections, excluded
        else:
            raise RestoreError("malformed backup")
    raise RestoreError("the backup ends early")


def _batches(plain: IO[bytes], section: _Section) -> Iterator[list[bytes]]:
    """A table's rows (their JSON text) in batches, read as they are needed: memory stays flat."""
    plain.seek(section.start)
    batch: list[bytes] = []
    size = 0
    for _ in range(section.rows):
        row = plain.readline().rstrip(b"\n").removeprefix(b",")
        batch.append(row)
        size += len(row)
        if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


_COPIED_ENDPOINT: dict[str, LiteralString] = {"enabled": "false", "disabled_reason": "'operator'"}


def _expressions(table: TenantTable, columns: list[str], as_new: bool) -> sql.Composable:
    parts: list[sql.Composable] = []
    for column in columns:
        if as_new and column == table.key:
            parts.append(sql.SQL("%(tenant)s::uuid"))
        elif as_new and table.name == "api_keys" and column == "revoked_at":
            # A bearer key must open one workspace only: the copy's keys start out revoked.
            parts.append(sql.SQL("coalesce(revoked_at, now())"))
        elif as_new and table.name == "webhook_endpoints" and column in _COPIED_ENDPOINT:
            # Its signing secret is bound to the source workspace (encryption context): the copy's endpoints
            # start disabled, and an admin rotates the secret before enabling one.
            parts.append(sql.SQL(_COPIED_ENDPOINT[column]))
        else:
            parts.append(sql.Identifier(column))
    return sql.SQL(", ").join(parts)


def _load_table(conn: Conn, table: TenantTable, batches: Iterator[list[bytes]], target: uuid.UUID, as_new: bool,
                exists: bool, progress: Progress | None) -> None:
    head = next(batches)
    first = json.loads(head[0])
    unknown = sorted(set(first) - set(table.columns))
    if unknown:
        raise RestoreError(f"the backup has columns the schema no longer has: {table.name}.{', '.join(unknown)}")
    columns = [c for c in table.columns if c in first]  # columns added since the backup take their default
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    source = sql.Identifier("public", table.name)
    done = 0
    for batch in itertools.chain([head], batches):
        params = {"rows": (b"[" + b",".join(batch) + b"]").decode(), "tenant": target}
        if exists:  # the workspace row itself, kept in place (its backup key hangs off it)
            conn.execute(sql.SQL("UPDATE {} SET ({}) = (SELECT {} FROM jsonb_populate_recordset(NULL::{},"
                                 " %(rows)s::jsonb)) WHERE id = %(tenant)s").format(
                source, names, _expressions(table, columns, as_new), source), params)
        else:
            conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM jsonb_populate_recordset(NULL::{},"
                                 " %(rows)s::jsonb)").format(
                source, names, _expressions(table, columns, as_new), source), params)
        done += len(batch)
        if progress is not None:
            progress.advance(table.name, done)


def _occupied(conn: Conn, tables: list[TenantTable], tenant_id: uuid.UUID) -> list[str]:
    found = []
    for table in tables:
        if table.name != "workspaces" and conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} = %s)").format(
                sql.Identifier(table.name), sql.Identifier(table.key)), (tenant_id,)).fetchone() == (True,):
            found.append(table.name)
    return found


def load(conn: Conn, plain: IO[bytes], target: uuid.UUID, *, as_new: bool,
         progress: Progress | None = None) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    """Insert a decrypted backup's rows under `target`; returns rows, skipped rows and left-out tables."""
    sections, excluded = _index(plain)
    tables = {t.name: t for t in backup_tables(conn)}
    missing = sorted(set(sections) - set(tables))
    if missing:
        raise RestoreError(f"the backup has tables the schema no longer has: {', '.join(missing)}")
    occupied = _occupied(conn, list(tables.values()), target)
    if occupied:
        raise RestoreError(f"workspace {target} still has rows ({', '.join(occupied)}): delete them first,"
                           " or restore with --as-new")
    rows: dict[str, int] = {}
    skipped: dict[str, int] = {}
    order = [n for n in dependency_order(conn, list(tables)) if n in sections and sections[n].rows]
    if as_new and "integration_credentials" in order:
        # Their ciphertexts are bound to the original workspace id (encryption context), and a copy
        # would duplicate third-party secrets into a second workspace: they are re-entered instead.
        order.remove("integration_credentials")
        skipped["integration_credentials"] = sections["integration_credentials"].rows
    if progress is not None:
        progress.begin("restore", {name: sections[name].rows for name in order})
    for name in order:
        section = sections[name]
        exists = name == "workspaces" and conn.execute(Q["workspace_exists"], (target,)).fetchone() is not None
        try:
            _load_table(conn, tables[name], _batches(plain, section), target, as_new, exists, progress)
        except psycopg.errors.ForeignKeyViolation as exc:
            constraint = exc.diag.constraint_name or "a foreign key"
            raise RestoreError(f"{name}: a row refers to a row that no longer exists ({constraint})") from None
        rows[name] = section.rows
    return rows, skipped, excluded


def restore_workspace(db: Database, tenant_id: uuid.UUID, blobs: BlobStore, vault: Vault, *,
                      backup: str | None = None, as_new: bool = False,
                      progress: Progress | None = None) -> RestoreReceipt:
    """Restore the workspace from `backup` (default: its newest), in place or under a new id."""
    key, taken_at, size = choose_backup(db, tenant_id, backup)
    secret = data_key(db, tenant_id, vault)
    target = uuid.uuid4() if as_new else tenant_id
    receipt = RestoreReceipt(str(target), str(tenant_id), key, taken_at.isoformat())
    # The decrypted backup exists only in a private (0700) temporary directory, removed on the way out.
    with tempfile.TemporaryDirectory(prefix="crm-restore-") as tmp:
        sealed, plain = Path(tmp) / "backup.json.enc", Path(tmp) / "backup.json"
        blobs.get_file(key, sealed)
        if sealed.stat().st_size != size:
            raise RestoreError(f"backup {key} does not have the size its index row records")
        decrypt_file(sealed, plain, tenant_id=tenant_id, key=secret)
        sealed.unlink()
        with open(plain, "rb") as source, tenant_tx(target, db=db, pipeline=False) as conn:
            receipt.rows, receipt.skipped, receipt.excluded = load(conn, source, target, as_new=as_new,
                                                                   progress=progress)
    log_event(log, "workspace restored", workspace_id=str(target), source_workspace_id=str(tenant_id),
              as_new=as_new, rows=sum(receipt.rows.values()), skipped=sum(receipt.skipped.values()))
    return receipt
