"""Webhook endpoints of a workspace: where its events go, which types, and the signing secret (vault-encrypted).

The secret is shown once, when it is made (create, rotate-secret); afterwards only the dispatcher decrypts it.
A URL must be one the outbound guard may call (https, a public address; an OUTBOUND_ALLOW_HOSTS host:port
locally): refused at create time with 422, and checked again at every delivery because DNS can change.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chalicelib import audit, errors, outbound, versions
from chalicelib.db import queries
from chalicelib.db.types import Conn
from chalicelib.outgoing import signing
from chalicelib.outgoing.events import EVENT_TYPES
from chalicelib.settings import get_settings
from chalicelib.vault.store import get_vault

Q = queries.load(__package__)
ROTATION_GRACE = timedelta(hours=24)
Url = Annotated[str, Field(min_length=1, max_length=2000, description="https URL of a public host")]
EventTypes = Annotated[list[str], Field(min_length=1, max_length=100,
                                        description="Event types (see GET /webhook-event-types), or [\"*\"] for all")]


def _check_types(value: list[str]) -> list[str]:
    unknown = sorted(set(value) - EVENT_TYPES - {"*"})
    if unknown:
        raise ValueError(f"unknown event types: {', '.join(unknown)}")
    return sorted(set(value))


class EndpointIn(BaseModel):
    """A new endpoint."""

    model_config = ConfigDict(extra="forbid")
    url: Url
    event_types: EventTypes
    description: str = Field(default="", max_length=500)
    enabled: bool = True
    rate_limit_per_s: int | None = Field(default=None, ge=1, le=1000,
                                         description="At most this many deliveries per second (none: no limit)")

    _types = field_validator("event_types")(_check_types)


class EndpointPatch(BaseModel):
    """Fields to change; the secret changes only through rotate-secret."""

    model_config = ConfigDict(extra="forbid")
    url: Url | None = None
    event_types: EventTypes | None = None
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None
    rate_limit_per_s: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_types(value)


class EndpointOut(BaseModel):
    """An endpoint as shown: never its secret."""

    id: uuid.UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    rate_limit_per_s: int | None
    disabled_reason: str | None = Field(description="gone (the receiver answered 410), failing (5 days of "
                                                    "failures) or operator; null while enabled")
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    """The new endpoint and its signing secret, shown this once."""

    secret: str = Field(description="whsec_…: verify deliveries with it (Standard Webhooks); shown once")


class SecretRotated(BaseModel):
    """The new signing secret (shown once); the previous one keeps signing until previous_secret_expires_at."""

    secret: str
    previous_secret_expires_at: datetime


def secret_context(tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> dict[str, str]:
    """The vault context of an endpoint's secret: bound to the workspace and the endpoint."""
    return {"tenant_id": str(tenant_id), "provider": f"webhook-endpoint:{endpoint_id}", "purpose": "webhook",
            "v": "1"}


def _out(row: tuple[Any, ...]) -> EndpointOut:
    return EndpointOut(id=row[0], url=row[1], description=row[2], event_types=list(row[3]), enabled=row[4],
                       rate_limit_per_s=row[5], disabled_reason=row[6], created_at=row[7], updated_at=row[8])


def etag(endpoint: EndpointOut) -> str:
    """The endpoint version's ETag."""
    return versions.etag(endpoint.id, endpoint.updated_at)


def check_url(url: str) -> None:
    """422 unless the outbound guard may call `url` (it is checked again at every delivery)."""
    try:
        outbound.resolve_checked(url, allow=get_settings().outbound_allow)
    except outbound.OutboundRefused as exc:
        raise errors.ValidationFailed("this URL cannot receive webhooks", errors=[
            errors.FieldError("url", str(exc), "url_refused")]) from None


def _encrypt(tenant_id: uuid.UUID, endpoint_id: uuid.UUID, secret: str) -> bytes:
    return get_vault().encrypt(secret.encode(), secret_context(tenant_id, endpoint_id))


def create(conn: Conn, *, tenant_id: uuid.UUID, spec: EndpointIn, actor: audit.Actor, now: datetime
           ) -> EndpointCreated:
    """Store an endpoint with a new secret (encrypted); audited without the URL's query or the secret."""
    check_url(spec.url)
    endpoint_id, secret = uuid.uuid4(), signing.new_secret()
    row = conn.execute(Q["endpoint_insert"], (
        tenant_id, endpoint_id, spec.url, spec.description, spec.event_types, spec.enabled, spec.rate_limit_per_s,
        _encrypt(tenant_id, endpoint_id, secret), now, now)).fetchone()
    assert row is not None
    audit.record(conn, tenant_id=tenant_id, action="webhook_endpoint.created", actor=actor,
                 target_type="webhook_endpoint", target_id=endpoint_id, details={"event_types": spec.event_types})
    return EndpointCreated(**_out(row).model_dump(), secret=secret)


def list_pending(conn: Conn) -> Any:
    """Queue the list; the result gives the endpoints."""
    cursor = conn.execute(Q["endpoint_list"])
    return lambda: [_out(r) for r in cursor.fetchall()]


def get_pending(conn: Conn, endpoint_id: uuid.UUID) -> Any:
    """Queue one endpoint's read; the result gives it (404 when there is none in this workspace)."""
    cursor = conn.execute(Q["endpoint_get"], (endpoint_id,))

    def result() -> EndpointOut:
        row = cursor.fetchone()
        if row is None:
            raise errors.NotFound("no such webhook endpoint")
        return _out(row)
    return result


def _locked(conn: Conn, endpoint_id: uuid.UUID, expected: frozenset[str] | None) -> EndpointOut:
    row = conn.execute(Q["endpoint_lock"], (endpoint_id,)).fetchone()
    if row is None:
        raise errors.NotFound("no such webhook endpoint")
    current = _out(row)
    versions.check(expected, etag(current), "webhook endpoint")
    return current


def patch(conn: Conn, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, spec: EndpointPatch,
          expected: frozenset[str] | None, actor: audit.Actor, now: datetime) -> EndpointOut:
    """Change an endpoint's settings (honours If-Match); audited with the names of the changed fields."""
    current = _locked(conn, endpoint_id, expected)
    sent = spec.model_fields_set
    nulls = sorted(name for name in sent - {"rate_limit_per_s"} if getattr(spec, name) is None)
    if nulls:
        raise errors.ValidationFailed("some fields cannot be null", errors=[
            errors.FieldError(name, "cannot be null", "null_not_allowed") for name in nulls])
    if not sent:
        return current
    values = {**current.model_dump(), **{name: getattr(spec, name) for name in sent}}
    if "url" in sent:
        check_url(str(values["url"]))
    row = conn.execute(Q["endpoint_update"], {**values, "id": endpoint_id, "now": now}).fetchone()
    assert row is not None
    audit.record(conn, tenant_id=tenant_id, action="webhook_endpoint.updated", actor=actor,
                 target_type="webhook_endpoint", target_id=endpoint_id, details={"fields": sorted(sent)})
    return _out(row)


def rotate_secret(conn: Conn, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, actor: audit.Actor,
                  now: datetime) -> SecretRotated:
    """A new secret; the old one stays valid for ROTATION_GRACE, and deliveries carry both signatures."""
    _locked(conn, endpoint_id, None)
    secret, until = signing.new_secret(), now + ROTATION_GRACE
    row = conn.execute(Q["endpoint_rotate_secret"],
                       (until, _encrypt(tenant_id, endpoint_id, secret), now, endpoint_id)).fetchone()
    assert row is not None
    audit.record(conn, tenant_id=tenant_id, action="webhook_endpoint.secret_rotated", actor=actor,
                 target_type="webhook_endpoint", target_id=endpoint_id)
    return SecretRotated(secret=secret, previous_secret_expires_at=until)


def delete(conn: Conn, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, actor: audit.Actor) -> None:
    """Delete an endpoint: its pending deliveries stop, its log goes with it."""
    if not conn.execute(Q["endpoint_delete"], {"id": endpoint_id}).fetchall():
        raise errors.NotFound("no such webhook endpoint")
    audit.record(conn, tenant_id=tenant_id, action="webhook_endpoint.deleted", actor=actor,
                 target_type="webhook_endpoint", target_id=endpoint_id)
