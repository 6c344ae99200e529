"""Credentials store: one encrypted row per tenant and provider, read through a short per-process cache.

Every function takes the connection of `tenant_tx(tenant_id)`: RLS, not the WHERE clause, is what keeps
another tenant's row out of reach. Plaintext exists only inside get_credentials' return value: never in
a summary, a log line, an audit entry, an error message or the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, overload
from uuid import UUID

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from chalicelib import audit
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.errors import NotFound
from chalicelib.vault.envelope import CredentialIntegrityError, Vault, credential_context
from chalicelib.vault.providers import (
    PROVIDERS,
    ProviderCredentials,
    SignNowCredentials,
    StripeCredentials,
    TwilioCredentials,
    WhatsAppCredentials,
    load_plaintext,
    model_for,
    parse_credentials,
)

Q = queries.load(__package__)
TARGET = "integration_credentials"
log = logging.getLogger("crm.vault")


class CredentialSummary(BaseModel):
    """What may be shown about a provider's credentials: configured or not, masked hints, when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    configured: bool
    hints: dict[str, str] = {}
    updated_at: datetime | None = None


class CredentialCache:
    """Decrypted credentials by (tenant, provider) for `ttl` seconds; ttl <= 0 disables it."""

    def __init__(self, ttl: float = 60.0, *, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 1024) -> None:
        self.ttl = ttl
        self._clock = clock
        self._max = max_entries
        # Keyed by the tenant's UUID *and* the provider: an entry can only ever be returned for the very
        # tenant it was decrypted for (P06). Short TTL: a change made by another process shows within it.
        self._entries: dict[tuple[UUID, str], tuple[float, ProviderCredentials]] = {}
        self._lock = threading.Lock()

    def get(self, tenant_id: UUID, provider: str) -> ProviderCredentials | None:
        """The live entry or None."""
        entry = self._entries.get((tenant_id, provider))
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            self.invalidate(tenant_id, provider)
            return None
        return entry[1]

    def put(self, tenant_id: UUID, provider: str, value: ProviderCredentials) -> None:
        """Remember `value` for `ttl` seconds."""
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.pop(next(iter(self._entries)))  # oldest insertion first; bounded memory
            self._entries[(tenant_id, provider)] = (self._clock() + self.ttl, value)

    def invalidate(self, tenant_id: UUID, provider: str) -> None:
        """Forget one entry (on put, delete and expiry)."""
        with self._lock:
            self._entries.pop((tenant_id, provider), None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()


class _State:
    lock = threading.Lock()
    vault: Vault | None = None
    cache = CredentialCache()


def use_vault(vault: Vault | None) -> None:
    """Install (or with None, forget) the process-wide vault; clears the cache."""
    with _State.lock:
        _State.vault = vault
    _State.cache.clear()


def get_vault() -> Vault:
    """The process-wide vault, built from settings on first use (so cold starts import no ESDK)."""
    with _State.lock:
        if _State.vault is None:
            from chalicelib.settings import get_settings

            _State.vault = Vault.from_settings(get_settings())
        return _State.vault


def credential_cache() -> CredentialCache:
    """The process-wide cache of decrypted credentials."""
    return _State.cache


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def put_credentials(conn: Conn, *, tenant_id: UUID | str, provider: str, data: Mapping[str, Any],
                    actor: audit.Actor, vault: Vault | None = None,
                    cache: CredentialCache | None = None) -> CredentialSummary:
    """Validate, encrypt and store (replace) one provider's credentials; audit "credentials.updated"."""
    tenant = _uuid(tenant_id)
    model = parse_credentials(provider, data)
    active = vault if vault is not None else get_vault()
    ciphertext = active.encrypt(model.to_plaintext(), credential_context(tenant, provider))
    row = conn.execute(
        Q["credentials_put"],
        (tenant, provider, ciphertext, Jsonb(model.hints()), active.key_id)).fetchone()
    assert row is not None
    audit.record(conn, tenant_id=tenant, action="credentials.updated", actor=actor, target_type=TARGET,
                 target_id=row[0], details={"provider": provider})
    (cache if cache is not None else _State.cache).invalidate(tenant, provider)
    return CredentialSummary(provider=provider, configured=True, hints=model.hints(), updated_at=row[1])


def list_credentials_pending(conn: Conn, *, tenant_id: UUID | str) -> Callable[[], list[CredentialSummary]]:
    """Queue the read of every known provider, configured or not, with masked hints (never a secret, and
    nothing decrypted); call the result for them."""
    cursor = conn.execute(Q["credentials_summaries"], (_uuid(tenant_id),))

    def summaries() -> list[CredentialSummary]:
        found = {str(provider): (hints or {}, updated) for provider, hints, updated in cursor.fetchall()}
        result = []
        for provider in PROVIDERS:
            hints, updated = found.get(provider, ({}, None))
            result.append(CredentialSummary(provider=provider, configured=provider in found, updated_at=updated,
                                            hints={str(k): str(v) for k, v in hints.items()}))
        return result
    return summaries


def list_credentials(conn: Conn, *, tenant_id: UUID | str) -> list[CredentialSummary]:
    """Every known provider, configured or not, with masked hints (never a secret)."""
    return list_credentials_pending(conn, tenant_id=tenant_id)()


def delete_credentials(conn: Conn, *, tenant_id: UUID | str, provider: str, actor: audit.Actor,
                       cache: CredentialCache | None = None) -> bool:
    """Delete one provider's credentials; True when there were some (audit "credentials.deleted")."""
    tenant = _uuid(tenant_id)
    model_for(provider)
    row = conn.execute(Q["credentials_delete"], (tenant, provider)).fetchone()
    (cache if cache is not None else _State.cache).invalidate(tenant, provider)
    if row is None:
        return False
    audit.record(conn, tenant_id=tenant, action="credentials.deleted", actor=actor, target_type=TARGET,
                 target_id=row[0], details={"provider": provider})
    return True


@overload
def get_credentials(conn: Conn, *, tenant_id: UUID | str, provider: Literal["twilio"],
                    vault: Vault | None = ..., cache: CredentialCache | None = ...) -> TwilioCredentials: ...
@overload
def get_credentials(conn: Conn, *, tenant_id: UUID | str, provider: Literal["stripe"],
                    vault: Vault | None = ..., cache: CredentialCache | None = ...) -> StripeCredentials: ...
@overload
def get_credentials(conn: Conn, *, tenant_id: UUID | str, provider: Literal["signnow"],
                    vault: Vault | None = ..., cache: CredentialCache | None = ...) -> SignNowCredentials: ...
@overload
def get_credentials(conn: Conn, *, tenant_id: UUID | str, provider: Literal["whatsapp"],
                    vault: Vault | None = ..., cache: CredentialCache | None = ...) -> WhatsAppCredentials: ...
@overload
def get_credentials(conn: Conn, *, tenant_id: UUID | str, provider: str,
                    vault: Vault | None = ..., cache: CredentialCache | None = ...) -> ProviderCredentials: ...


def get_credentials(conn: Conn, *, tenant_id: UUID | str, provider: str, vault: Vault | None = None,
                    cache: CredentialCache | None = None) -> ProviderCredentials:
    """Decrypted credentials for internal use (NotFound when not configured; CredentialIntegrityError)."""
    tenant = _uuid(tenant_id)
    store = cache if cache is not None else _State.cache
    hit = store.get(tenant, provider)
    if hit is not None:
        return hit
    model_for(provider)
    row = conn.execute(Q["credentials_get"], (tenant, provider)).fetchone()
    if row is None:
        raise NotFound("integration not configured")
    active = vault if vault is not None else get_vault()
    try:
        decrypted = active.decrypt(bytes(row[1]), credential_context(tenant, provider))
    except CredentialIntegrityError as exc:
        _alert_out_of_band(conn, tenant_id=tenant, provider=provider, row_id=row[0], reason=exc.reason)
        raise
    model = load_plaintext(provider, decrypted.plaintext)
    store.put(tenant, provider, model)
    return model


def _alert_out_of_band(conn: Conn, *, tenant_id: UUID, provider: str, row_id: UUID, reason: str) -> None:
    """Log and audit an integrity failure in a transaction of its own.

    The caller's transaction is about to roll back (we raise), which would take an audit entry written
    on `conn` with it: the alert is written on a short-lived second connection to the same database as
    the same role, through tenant_tx, and committed at once.
    """
    from chalicelib.db.pool import side_database
    from chalicelib.db.tenancy import tenant_tx

    fields = {"tenant_id": str(tenant_id), "provider": provider, "reason": reason}
    log.error("credentials integrity failure", extra={"fields": fields})
    try:
        side = side_database(conn, name="vault-alert")
        try:
            with tenant_tx(tenant_id, db=side) as alert_conn:
                record_integrity_failure(alert_conn, tenant_id=tenant_id, provider=provider, row_id=row_id,
                                         reason=reason)
        finally:
            side.close()
    except Exception:  # the integrity error itself must still reach the caller (log.exception: no BLE001)
        log.exception("could not record a credentials integrity failure in the audit log",
                      extra={"fields": fields})


def record_integrity_failure(conn: Conn, *, tenant_id: UUID, provider: str, row_id: UUID | None,
                             reason: str, during: str = "use") -> None:
    """Audit "credentials.integrity_failure" (the reason code and provider only) in `conn`'s transaction."""
    audit.record(conn, tenant_id=tenant_id, action="credentials.integrity_failure", target_type=TARGET,
                 target_id=row_id, details={"provider": provider, "reason": reason, "during": during})


def workspace_ids_after(conn: Conn, *, after: UUID, limit: int) -> list[UUID]:
    """One keyset page of workspace ids after `after` (as the jobs role, which alone may list workspaces)."""
    return [_uuid(r[0]) for r in conn.execute(Q["workspace_ids_page"], (after, limit)).fetchall()]


@dataclass
class RotationCounts:
    """Credentials re-encrypted, already under the current key, or not decryptable."""

    rotated: int = 0
    skipped: int = 0
    failed: int = 0


def rotate_tenant(conn: Conn, *, tenant_id: UUID | str, vault: Vault, dry_run: bool = False) -> RotationCounts:
    """Re-encrypt one tenant's credentials under the vault's current key (idempotent; rows locked)."""
    tenant = _uuid(tenant_id)
    counts = RotationCounts()
    # FOR UPDATE: a concurrent run waits here, then re-reads the row, sees the new key id and skips it.
    rows = conn.execute(Q["credentials_lock_for_rotation"], (tenant,)).fetchall()
    for row_id, provider, ciphertext, key_id in rows:
        if key_id == vault.key_id:
            counts.skipped += 1
            continue
        context = credential_context(tenant, str(provider))
        try:
            decrypted = vault.decrypt(bytes(ciphertext), context)
        except CredentialIntegrityError as exc:
            counts.failed += 1
            if not dry_run:  # this transaction commits, so the audit entry can be written in it
                record_integrity_failure(conn, tenant_id=tenant, provider=str(provider), row_id=row_id,
                                         reason=exc.reason, during="rotation")
            continue
        counts.rotated += 1
        if dry_run:
            continue
        conn.execute(Q["credentials_rewrap"],
                     (vault.encrypt(decrypted.plaintext, context), vault.key_id, tenant, row_id)).fetchone()
        audit.record(conn, tenant_id=tenant, action="credentials.rotated", target_type=TARGET, target_id=row_id,
                     details={"provider": str(provider)})
    return counts
