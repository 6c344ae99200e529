"""Inbox channels (a WhatsApp number or an inbound email route) and their vault-encrypted secrets."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, RootModel, SecretStr

from chalicelib import audit, errors, versions
from chalicelib.auth.addresses import EmailAddress
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.inbox import webhook_records
from chalicelib.ttlcache import TTLCache
from chalicelib.vault.envelope import credential_context
from chalicelib.vault.providers import masked
from chalicelib.vault.store import get_vault

Token = Annotated[SecretStr, Field(min_length=8, max_length=1024)]
Name = Annotated[str, Field(min_length=1, max_length=100, description="The operator's name for the channel")]


class WhatsAppChannelIn(BaseModel):
    """A WhatsApp Business number of the Cloud API."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["whatsapp"]
    name: Name | None = None
    phone_number_id: str = Field(pattern=r"^[0-9]{5,32}$")
    display_phone_number: str | None = Field(default=None, max_length=32)
    access_token: Token
    app_secret: Token
    verify_token: Token


class EmailChannelIn(BaseModel):
    """An inbound email route (Mailgun)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["email"]
    name: Name | None = None
    signing_key: Token
    address: EmailAddress | None = None


class ChannelIn(RootModel[Annotated[WhatsAppChannelIn | EmailChannelIn, Field(discriminator="type")]]):
    """Either kind of channel, told apart by `type`."""


class ChannelOut(BaseModel):
    """A channel: never its secrets, only masked hints."""

    id: uuid.UUID
    type: Literal["whatsapp", "email"]
    name: str | None
    phone_number_id: str | None
    display_phone_number: str | None
    address: str | None
    webhook_url: str
    hints: dict[str, str]
    created_at: datetime


class ChannelPatch(BaseModel):
    """What an owner or admin may change of a channel; a secret is replaced, never read back."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    display_phone_number: str | None = Field(default=None, max_length=32)
    address: EmailAddress | None = None
    access_token: Token | None = None
    app_secret: Token | None = None
    verify_token: Token | None = None
    signing_key: Token | None = None


# The fields a PATCH may send for each type; the rest (type, phone_number_id) are what the channel is.
EDITABLE = {"whatsapp": frozenset({"name", "display_phone_number", "access_token", "app_secret", "verify_token"}),
            "email": frozenset({"name", "address", "signing_key"})}
# What a PATCH may set to null (secrets are required: replaced, never removed).
CLEARABLE = frozenset({"name", "display_phone_number", "address"})


class ChannelSecrets(BaseModel):
    """Decrypted secrets of a channel (never logged, never returned)."""

    access_token: SecretStr | None = None
    app_secret: SecretStr | None = None
    verify_token: SecretStr | None = None
    signing_key: SecretStr | None = None


_SECRET_FIELDS = ("access_token", "app_secret", "verify_token", "signing_key")
# Keyed by (workspace, channel): one workspace's secrets can never be served for another's channel. The
# entry holds the digest of the ciphertext it was decrypted from: replaced secrets (PATCH) are decrypted
# afresh by every process at its next load, not served from a stale entry for up to a minute.
_SECRETS: TTLCache[tuple[uuid.UUID, uuid.UUID], tuple[bytes, ChannelSecrets]] = TTLCache(60.0)
# channel -> workspace; a deleted channel's stale entry still fails at load() (its row is gone).
_ROUTES: TTLCache[uuid.UUID, uuid.UUID] = TTLCache(60.0)
Q = queries.load(__package__)


def webhook_url(base_url: str, channel_type: str, channel_id: uuid.UUID) -> str:
    """Where the provider must send this channel's deliveries."""
    return f"{base_url}/webhooks/{channel_type}/{channel_id}"


def _context(tenant_id: uuid.UUID, channel_id: uuid.UUID) -> dict[str, str]:
    # Bound to the workspace AND the channel: a ciphertext copied to another channel fails to decrypt.
    return credential_context(tenant_id, f"channel:{channel_id}")


def _out(row: tuple[Any, ...], base_url: str) -> ChannelOut:
    # The API columns of channel_insert, channel_list, channel_load and channel_update, in that order.
    return ChannelOut(id=row[0], type=row[1], name=row[7], phone_number_id=row[2], display_phone_number=row[3],
                      address=row[4], webhook_url=webhook_url(base_url, row[1], row[0]), hints=dict(row[5]),
                      created_at=row[6])


def _etag(row: tuple[Any, ...]) -> str:
    return versions.etag(row[0], row[8])


def create(conn: Conn, *, tenant_id: uuid.UUID, spec: WhatsAppChannelIn | EmailChannelIn, actor: audit.Actor,
           base_url: str) -> ChannelOut:
    """Store a channel with its secrets encrypted under the master key, and route its webhook here."""
    channel_id = uuid.uuid4()
    secrets = {name: getattr(spec, name).get_secret_value() for name in _SECRET_FIELDS if hasattr(spec, name)}
    ciphertext = get_vault().encrypt(json.dumps(secrets).encode(), _context(tenant_id, channel_id))
    hints = {name: masked(value) for name, value in secrets.items()}
    try:
        # No savepoint (tenant_tx pipelines its transaction): a duplicate aborts the whole request.
        found = conn.execute(Q["channel_insert"], (
            tenant_id, channel_id, spec.type, getattr(spec, "phone_number_id", None),
            getattr(spec, "display_phone_number", None), getattr(spec, "address", None), ciphertext,
            Jsonb(hints), spec.name)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise errors.Conflict("this WhatsApp number is already a channel of this workspace") from None
    assert found is not None
    webhook_records.route(conn, channel_id, tenant_id)
    audit.record(conn, tenant_id=tenant_id, action="channel.created", actor=actor, target_type="channel",
                 target_id=channel_id, details={"type": spec.type})
    return _out(found, base_url)


def list_channels_pending(conn: Conn, *, base_url: str) -> Callable[[], list[ChannelOut]]:
    """Queue the read of the current workspace's channels (nothing decrypted); call the result for them."""
    cursor = conn.execute(Q["channel_list"])
    return lambda: [_out(r, base_url) for r in cursor.fetchall()]


def get_pending(conn: Conn, channel_id: uuid.UUID, *, base_url: str
                ) -> Callable[[], tuple[ChannelOut, str] | None]:
    """Queue the read of one channel (nothing decrypted); the result gives it and its ETag, or None."""
    cursor = conn.execute(Q["channel_load"], (channel_id,))

    def result() -> tuple[ChannelOut, str] | None:
        row = cursor.fetchone()
        return None if row is None else (_out(row, base_url), _etag(row))
    return result


def patch(conn: Conn, *, tenant_id: uuid.UUID, channel_id: uuid.UUID, spec: ChannelPatch,
          expected: frozenset[str] | None, actor: audit.Actor, base_url: str) -> tuple[ChannelOut, str]:
    """Change a channel's name and settings or replace its secrets; returns the channel and its new ETag."""
    # Locked: the If-Match checked here stays true until the write. 412 on a stale version; 422 for a field
    # the channel's type has not, or a secret sent as null. Audited with the changed field names, no value.
    row = conn.execute(Q["channel_lock"], (channel_id,)).fetchone()
    if row is None:
        raise errors.NotFound("no such channel")
    versions.check(expected, _etag(row), "channel")
    sent = spec.model_fields_set
    problems = [errors.FieldError(name, f"not a setting of a {row[1]} channel", "extra_forbidden")
                for name in sorted(sent - EDITABLE[row[1]])]
    problems += [errors.FieldError(name, "cannot be null", "null_not_allowed")
                 for name in sorted(sent - CLEARABLE) if getattr(spec, name) is None]
    if problems:
        raise errors.ValidationFailed("some fields cannot be changed this way", errors=problems)
    if not sent:
        return _out(row, base_url), _etag(row)
    name, display, address, hints, ciphertext = row[7], row[3], row[4], dict(row[5]), bytes(row[9])
    name = spec.name if "name" in sent else name
    display = spec.display_phone_number if "display_phone_number" in sent else display
    address = spec.address if "address" in sent else address
    replaced = {field: getattr(spec, field).get_secret_value() for field in sorted(sent) if field in _SECRET_FIELDS}
    if replaced:
        context = _context(tenant_id, channel_id)
        current = json.loads(get_vault().decrypt(ciphertext, context).plaintext)
        ciphertext = get_vault().encrypt(json.dumps({**current, **replaced}).encode(), context)
        hints.update({field: masked(value) for field, value in replaced.items()})
    updated = conn.execute(Q["channel_update"], (name, display, address, ciphertext, Jsonb(hints),
                                                 channel_id)).fetchone()
    assert updated is not None
    audit.record(conn, tenant_id=tenant_id, action="channel.updated", actor=actor, target_type="channel",
                 target_id=channel_id, details={"fields": sorted(sent)})
    return _out(updated, base_url), _etag(updated)


def delete(conn: Conn, *, tenant_id: uuid.UUID, channel_id: uuid.UUID, actor: audit.Actor) -> None:
    """Delete a channel (its conversations go with it) and stop routing its webhook."""
    if not conn.execute(Q["channel_delete"], (channel_id,)).fetchall():
        raise errors.NotFound("no such channel")
    conn.execute(Q["webhook_route_delete"], (channel_id, tenant_id))
    _SECRETS.drop((tenant_id, channel_id))
    _ROUTES.drop(channel_id)
    audit.record(conn, tenant_id=tenant_id, action="channel.deleted", actor=actor, target_type="channel",
                 target_id=channel_id)


def load(conn: Conn, *, tenant_id: uuid.UUID, channel_id: uuid.UUID) -> tuple[ChannelOut, ChannelSecrets] | None:
    """A channel of the current workspace with its decrypted secrets, or None.

    The row is always read (one query, under RLS); only the decryption is cached for a minute, so a
    deleted channel or another workspace's channel id never comes back from the cache, nor do replaced secrets.
    """
    row = conn.execute(Q["channel_load"], (channel_id,)).fetchone()
    if row is None:
        _SECRETS.drop((tenant_id, channel_id))
        return None
    ciphertext = bytes(row[9])
    cached = _SECRETS.get((tenant_id, channel_id))
    # The decryption is reused only for the very ciphertext it came from: secrets replaced by any process
    # are new bytes in the row, read just now.
    if cached is not None and cached[0] == ciphertext:
        secrets = cached[1]
    else:
        plaintext = get_vault().decrypt(ciphertext, _context(tenant_id, channel_id)).plaintext
        secrets = ChannelSecrets.model_validate(json.loads(plaintext))
        _SECRETS.put((tenant_id, channel_id), (ciphertext, secrets))
    return _out(row, ""), secrets


def route(conn: Conn, channel_id: uuid.UUID) -> uuid.UUID | None:
    """The workspace of a webhook URL's channel id (read before any tenant is known)."""
    cached = _ROUTES.get(channel_id)
    if cached is not None:
        return cached
    row = conn.execute(Q["webhook_route_workspace"], (channel_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    _ROUTES.put(channel_id, row[0])
    return uuid.UUID(str(row[0]))


def cached_route(channel_id: uuid.UUID) -> uuid.UUID | None:
    """The workspace of a channel id if it was looked up recently (no database round trip)."""
    return _ROUTES.get(channel_id)
