"""Encrypted per-workspace logical backups (the export format) and their GFS retention.

Keys: each workspace has one random 256-bit data key, stored only wrapped by the master key (KMS in
production) in `backup_keys`. Deleting the workspace deletes that row, so every copy of every backup of
the workspace, wherever it went, becomes unreadable at once (crypto-shredding). Each backup is one AWS
Encryption SDK message under that data key (committing suite, framed, streamed file to file).
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chalicelib.blobs import BlobStore
from chalicelib.db import queries
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.jobs import gfs
from chalicelib.jobs.dump import dump_workspace
from chalicelib.jobs.progress import Progress
from chalicelib.observability import log_event
from chalicelib.vault.envelope import Vault

Q = queries.load(__package__)
log = logging.getLogger("crm.jobs.backup")
STAMP = "%Y%m%dT%H%M%SZ"
SUFFIX = ".json.enc"
DATA_KEY_BYTES = 32
PROVIDER_ID = "crm-backup"
FRAME_BYTES = 64 * 1024
CHUNK_BYTES = 1 << 20
# An object with no backups row younger than this may be a backup still being committed: left alone.
ORPHAN_GRACE = timedelta(days=1)


class BackupError(RuntimeError):
    """A backup could not be written or read (messages never carry key bytes or contents)."""


class BackupKeyMissing(BackupError):
    """The workspace has no backup key: its backups were crypto-shredded, or none was ever taken."""


def backup_key_context(tenant_id: uuid.UUID | str) -> dict[str, str]:
    """Encryption context of a workspace's wrapped data key (the Vault's four structural keys)."""
    # Vault.encrypt accepts exactly the credential context's keys; `purpose` is what separates the two
    # domains, so a wrapped backup key can never pass for a credential, nor the reverse.
    return {"tenant_id": str(uuid.UUID(str(tenant_id))), "provider": "backup", "purpose": "backup-key", "v": "1"}


def backup_context(tenant_id: uuid.UUID | str) -> dict[str, str]:
    """Encryption context of one backup object (compared on decrypt: the ESDK does not)."""
    return {"tenant_id": str(uuid.UUID(str(tenant_id))), "purpose": "backup"}


def prefix(tenant_id: uuid.UUID | str) -> str:
    """The blob prefix of a workspace's backups (jobs/delete.py removes everything under it)."""
    return f"backups/{uuid.UUID(str(tenant_id))}"


def blob_key(tenant_id: uuid.UUID | str, taken_at: datetime) -> str:
    """backups/<workspace>/<YYYYMMDDTHHMMSSZ>.json.enc"""
    return f"{prefix(tenant_id)}/{gfs.utc(taken_at).strftime(STAMP)}{SUFFIX}"


def stamp_of(key: str) -> datetime | None:
    """The time in a backup key's name, or None when the name is not one of ours."""
    name = key.rsplit("/", 1)[-1].removesuffix(SUFFIX)
    try:
        return gfs.utc(datetime.strptime(name, STAMP))
    except ValueError:
        return None


@dataclass(frozen=True)
class BackupInfo:
    """One backup written."""

    tenant_id: uuid.UUID
    blob_key: str
    taken_at: datetime
    size_bytes: int
    row_count: int


# --- data keys -----------------------------------------------------------------------------------

def data_key(db: Database, tenant_id: uuid.UUID, vault: Vault, *, create: bool = False) -> bytes:
    """The workspace's unwrapped backup data key (created on first use when `create`)."""
    context = backup_key_context(tenant_id)
    row = _key_row(db, tenant_id)
    if row is None:
        if not create:
            raise BackupKeyMissing(f"no backup key for workspace {tenant_id}")
        wrapped = vault.encrypt(secrets.token_bytes(DATA_KEY_BYTES), context)
        with tenant_tx(tenant_id, db=db) as conn:
            # Two first backups at once: one key wins, and both then use the stored one.
            conn.execute(Q["backup_key_add"], (tenant_id, wrapped, vault.key_id))
        row = _key_row(db, tenant_id)
        assert row is not None
    unwrapped = vault.decrypt(row[0], context)  # refuses a key row copied from another workspace
    if len(unwrapped.plaintext) != DATA_KEY_BYTES:
        raise BackupError("the stored backup key has the wrong length")
    if unwrapped.key_id != vault.key_id:
        # Re-wrap under the current master key, so retiring an old master key never strands backups.
        with tenant_tx(tenant_id, db=db) as conn:
            conn.execute(Q["backup_key_rewrap"], (vault.encrypt(unwrapped.plaintext, context), vault.key_id,
                                                  tenant_id, row[0]))
    return unwrapped.plaintext


def _key_row(db: Database, tenant_id: uuid.UUID) -> tuple[bytes, str] | None:
    with tenant_tx(tenant_id, db=db) as conn:
        row = conn.execute(Q["backup_key_get"], (tenant_id,)).fetchone()
    return None if row is None else (bytes(row[0]), str(row[1]))


# --- encryption (AWS Encryption SDK, imported lazily) --------------------------------------------

def esdk(tenant_id: uuid.UUID, key: bytes) -> tuple[Any, Any, Any]:
    """(client, master key made from the data key, algorithm)."""
    import aws_encryption_sdk as sdk
    from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKey

    # Committing suite only, in both directions (one ciphertext can never open under two keys), and
    # exactly one wrapped data key per message: anything else was not written by us.
    client = sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
                                     max_encrypted_data_keys=1)
    wrapping = WrappingKey(wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                           wrapping_key=key, wrapping_key_type=EncryptionKeyType.SYMMETRIC)
    # The key id names the workspace: another workspace's message is refused before any decryption.
    master = RawMasterKey(provider_id=PROVIDER_ID, key_id=f"backup:{tenant_id}".encode(), wrapping_key=wrapping)
    return client, master, Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY


def encrypt_file(source: Path, target: Path, *, tenant_id: uuid.UUID, key: bytes) -> None:
    """Encrypt `source` into `target` as one framed ESDK message (constant memory)."""
    client, master, algorithm = esdk(tenant_id, key)
    with open(source, "rb") as plain, open(target, "wb") as sink, client.stream(
            mode="e", source=plain, key_provider=master, encryption_context=backup_context(tenant_id),
            algorithm=algorithm, frame_length=FRAME_BYTES) as encryptor:
        while chunk := encryptor.read(CHUNK_BYTES):
            sink.write(chunk)


# --- backup and retention ------------------------------------------------------------------------

def backup_workspace(db: Database, tenant_id: uuid.UUID, blobs: BlobStore, vault: Vault, now: datetime, *,
                     progress: Progress | None = None, label: str = "backup") -> BackupInfo:
    """Back the workspace up now: dump, encrypt under its data key, store, index."""
    taken = gfs.utc(now)
    key = blob_key(tenant_id, taken)
    secret = data_key(db, tenant_id, vault, create=True)
    # Plaintext touches local disk only inside a private (0700) temporary directory, and only until
    # it is encrypted; the directory is removed whatever happens.
    with tempfile.TemporaryDirectory(prefix="crm-backup-") as tmp:
        plain, sealed = Path(tmp) / "backup.json", Path(tmp) / "backup.json.enc"
        rows = dump_workspace(db, tenant_id, plain, taken_at=taken, progress=progress, label=label)
        encrypt_file(plain, sealed, tenant_id=tenant_id, key=secret)
        plain.unlink()
        size = sealed.stat().st_size
        stored = False
        try:
            with tenant_tx(tenant_id, db=db, pipeline=False) as conn:
                # The row first: a second backup in the same second fails here, before it could
                # overwrite the first one's object.
                conn.execute(Q["backup_add"], (tenant_id, key, taken, size, rows))
                stored = True
                blobs.put_file(key, sealed)
        except BaseException:
            if stored:
                blobs.delete(key)  # never leave an object that no row points at
            raise
    log_event(log, "backup written", workspace_id=str(tenant_id), rows=rows, size_bytes=size)
    return BackupInfo(tenant_id, key, taken, size, rows)


def apply_retention(db: Database, tenant_id: uuid.UUID, blobs: BlobStore, now: datetime, dry_run: bool = False,
                    *, daily: int = 30, weekly: int = 12, monthly: int = 6) -> list[str]:
    """Expire the backups GFS does not keep (and stray objects); returns their keys (dry_run: lists only)."""
    with tenant_tx(tenant_id, db=db) as conn:
        rows = [(str(k), t) for k, t in conn.execute(Q["backups_of_workspace"], (tenant_id,)).fetchall()]
    kept = gfs.keep(rows, daily=daily, weekly=weekly, monthly=monthly, now=now)
    expired = sorted(k for k, _ in rows if k not in kept)
    known, cutoff = {k for k, _ in rows}, gfs.utc(now) - ORPHAN_GRACE
    # Objects no row points at (a crash between upload and commit) would otherwise outlive the policy.
    strays = [k for k in blobs.list(prefix(tenant_id))
              if k not in known and ((stamp := stamp_of(k)) is None or stamp < cutoff)]
    if dry_run:
        return sorted(expired + strays)
    if expired:
        with tenant_tx(tenant_id, db=db) as conn:
            conn.execute(Q["backups_expire"], (tenant_id, expired))
    # Rows before objects: a failed object delete leaves a stray, swept on the next run; never a row
    # pointing at nothing.
    for key in expired + strays:
        blobs.delete(key)
    log_event(log, "backup retention applied", workspace_id=str(tenant_id), expired=len(expired),
              strays=len(strays), kept=len(rows) - len(expired))
    return sorted(expired + strays)
