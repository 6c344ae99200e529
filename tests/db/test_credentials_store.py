"""The credentials store on a real database: RLS, audit, the context check on tampered rows (K01), the cache
never crossing tenants (P06) and no plaintext anywhere but the return value of get_credentials (K06/O01)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import errors as pg_errors
from psycopg import sql

from chalicelib import audit
from chalicelib.db.pool import Database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.errors import NotFound, ValidationFailed
from chalicelib.vault.envelope import CredentialIntegrityError, Vault
from chalicelib.vault.providers import TwilioCredentials
from chalicelib.vault.store import (
    CredentialCache,
    credential_cache,
    delete_credentials,
    get_credentials,
    list_credentials,
    put_credentials,
    use_vault,
)
from tests.conftest import TestDatabase, make_tenant

ACTOR = audit.Actor(user_id=None, ip="203.0.113.7", user_agent="pytest")


def credentials_for(secret: str) -> dict[str, dict[str, str]]:
    """Valid credentials for every provider, each embedding `secret` (32 hex characters)."""
    canary = f"CANARY-secret-{secret}"
    return {
        "twilio": {"account_sid": "AC" + secret, "auth_token": secret},
        "stripe": {"secret_key": f"sk_test_CANARY{secret}", "webhook_secret": f"whsec_CANARY{secret}"},
        "signnow": {"api_token": canary},
        "whatsapp": {"phone_number_id": "106540352242922", "access_token": canary, "app_secret": secret,
                     "verify_token": canary},
    }


def reveal(model: Any) -> dict[str, Any]:
    return {name: value.get_secret_value() if hasattr(value, "get_secret_value") else value
            for name, value in model}


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    installed = Vault.local(tmp_path / "master.key")
    use_vault(installed)
    yield installed
    use_vault(None)


def put(db: Database, tenant: uuid.UUID, provider: str, data: dict[str, str]) -> None:
    with tenant_tx(tenant, db=db) as conn:
        put_credentials(conn, tenant_id=tenant, provider=provider, data=data, actor=ACTOR)


def get(db: Database, tenant: uuid.UUID, provider: str, cache: CredentialCache | None = None) -> Any:
    with tenant_tx(tenant, db=db) as conn:
        return get_credentials(conn, tenant_id=tenant, provider=provider, cache=cache)


def audit_actions(fresh_db: TestDatabase, tenant: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT action, details FROM audit_log WHERE tenant_id = %s ORDER BY occurred_at, id",
                            (tenant,)).fetchall()
    return [(str(action), dict(details)) for action, details in rows]  # type: ignore[call-overload]


def copy_ciphertext(fresh_db: TestDatabase, source: tuple[uuid.UUID, str], target: tuple[uuid.UUID, str]) -> None:
    with fresh_db.admin() as conn:
        updated = conn.execute(
            "UPDATE integration_credentials SET ciphertext = (SELECT ciphertext FROM integration_credentials"
            " WHERE tenant_id = %s AND provider = %s) WHERE tenant_id = %s AND provider = %s RETURNING id",
            (*source, *target)).fetchall()
    assert len(updated) == 1


def test_put_then_get_round_trips_every_provider(fresh_db: TestDatabase, app_db: Database, vault: Vault) -> None:
    tenant = make_tenant(fresh_db)
    for provider, data in credentials_for(uuid.uuid4().hex).items():
        put(app_db, tenant, provider, data)
        credential_cache().clear()
        assert {k: v for k, v in reveal(get(app_db, tenant, provider)).items() if v is not None} == data


def test_list_shows_every_provider_with_masked_hints_only(fresh_db: TestDatabase, app_db: Database,
                                                         vault: Vault) -> None:
    tenant, secret = make_tenant(fresh_db), uuid.uuid4().hex
    put(app_db, tenant, "twilio", credentials_for(secret)["twilio"])
    put(app_db, tenant, "stripe", {"secret_key": f"sk_live_{secret}"})
    with tenant_tx(tenant, db=app_db) as conn:
        summaries = {s.provider: s for s in list_credentials(conn, tenant_id=tenant)}
    assert list(summaries) == ["twilio", "stripe", "signnow", "whatsapp"]
    assert summaries["twilio"].configured and summaries["twilio"].updated_at is not None
    assert summaries["twilio"].hints == {"account_sid": "…" + secret[-4:], "auth_token": "…" + secret[-4:]}
    assert summaries["stripe"].hints == {"secret_key": "…" + secret[-4:], "mode": "live"}
    assert not summaries["signnow"].configured and summaries["signnow"].hints == {}
    assert secret not in repr(summaries)


def test_put_replaces_the_row_and_audits_without_secrets(fresh_db: TestDatabase, app_db: Database,
                                                        vault: Vault) -> None:
    tenant = make_tenant(fresh_db)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    put(app_db, tenant, "twilio", credentials_for(first)["twilio"])
    put(app_db, tenant, "twilio", credentials_for(second)["twilio"])
    assert reveal(get(app_db, tenant, "twilio"))["auth_token"] == second
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT key_id FROM integration_credentials WHERE tenant_id = %s", (tenant,)).fetchall()
    assert rows == [(vault.key_id,)]
    assert audit_actions(fresh_db, tenant) == [("credentials.updated", {"provider": "twilio"})] * 2


def test_delete_removes_the_row_audits_and_forgets_the_cache(fresh_db: TestDatabase, app_db: Database,
                                                            vault: Vault) -> None:
    tenant = make_tenant(fresh_db)
    put(app_db, tenant, "signnow", credentials_for(uuid.uuid4().hex)["signnow"])
    get(app_db, tenant, "signnow")  # now cached
    for expected in (True, False):
        with tenant_tx(tenant, db=app_db) as conn:
            assert delete_credentials(conn, tenant_id=tenant, provider="signnow", actor=ACTOR) is expected
    with pytest.raises(NotFound):
        get(app_db, tenant, "signnow")
    assert [a for a, _ in audit_actions(fresh_db, tenant)] == ["credentials.updated", "credentials.deleted"]


def test_unknown_or_unconfigured_provider_is_not_found(fresh_db: TestDatabase, app_db: Database,
                                                      vault: Vault) -> None:
    tenant = make_tenant(fresh_db)
    with pytest.raises(NotFound), tenant_tx(tenant, db=app_db) as conn:
        put_credentials(conn, tenant_id=tenant, provider="paypal", data={}, actor=ACTOR)
    with pytest.raises(NotFound), tenant_tx(tenant, db=app_db) as conn:
        delete_credentials(conn, tenant_id=tenant, provider="paypal", actor=ACTOR)
    for provider in ("paypal", "stripe"):
        with pytest.raises(NotFound):
            get(app_db, tenant, provider)


def test_invalid_credentials_fail_validation_naming_fields_only(fresh_db: TestDatabase, app_db: Database,
                                                               vault: Vault) -> None:
    tenant, secret = make_tenant(fresh_db), uuid.uuid4().hex
    with pytest.raises(ValidationFailed) as caught, tenant_tx(tenant, db=app_db) as conn:
        put_credentials(conn, tenant_id=tenant, provider="stripe",
                        data={"secret_key": f"pk_live_{secret}", "webhook_secret": secret}, actor=ACTOR)
    assert sorted(e.field for e in caught.value.errors) == ["secret_key", "webhook_secret"]
    assert secret not in repr(caught.value.errors)
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM integration_credentials").fetchone() == (0,)


def test_another_tenants_credentials_are_out_of_reach(fresh_db: TestDatabase, app_db: Database,
                                                     vault: Vault) -> None:
    a, b = make_tenant(fresh_db), make_tenant(fresh_db)
    put(app_db, b, "twilio", credentials_for(uuid.uuid4().hex)["twilio"])
    with pytest.raises(NotFound), tenant_tx(a, db=app_db) as conn:
        get_credentials(conn, tenant_id=b, provider="twilio", cache=CredentialCache(ttl=0))
    with pytest.raises(pg_errors.InsufficientPrivilege), tenant_tx(a, db=app_db) as conn:
        put_credentials(conn, tenant_id=b, provider="stripe", data={"secret_key": "sk_test_" + "x" * 20},
                        actor=ACTOR)
    with tenant_tx(a, db=app_db) as conn:
        assert not any(s.configured for s in list_credentials(conn, tenant_id=b))
        assert delete_credentials(conn, tenant_id=b, provider="twilio", actor=ACTOR) is False


def test_ciphertext_copied_from_another_workspace_fails_and_is_audited(
        fresh_db: TestDatabase, app_db: Database, vault: Vault) -> None:
    a, b = make_tenant(fresh_db, "alpha"), make_tenant(fresh_db, "beta")
    secret_b = uuid.uuid4().hex
    put(app_db, a, "twilio", credentials_for(uuid.uuid4().hex)["twilio"])
    put(app_db, b, "twilio", credentials_for(secret_b)["twilio"])
    copy_ciphertext(fresh_db, (b, "twilio"), (a, "twilio"))
    with pytest.raises(CredentialIntegrityError) as caught, tenant_tx(a, db=app_db) as conn:
        get_credentials(conn, tenant_id=a, provider="twilio")
    assert caught.value.reason == "context-mismatch" and secret_b not in str(caught.value)
    # The caller's transaction rolled back; the alert was committed on a connection of its own.
    assert audit_actions(fresh_db, a)[-1] == (
        "credentials.integrity_failure", {"provider": "twilio", "reason": "context-mismatch", "during": "use"})
    assert all(action != "credentials.integrity_failure" for action, _ in audit_actions(fresh_db, b))
    assert reveal(get(app_db, b, "twilio"))["auth_token"] == secret_b  # B itself is unaffected


def test_ciphertext_moved_to_another_provider_slot_fails_and_is_audited(
        fresh_db: TestDatabase, app_db: Database, vault: Vault) -> None:
    tenant = make_tenant(fresh_db)
    data = credentials_for(uuid.uuid4().hex)
    put(app_db, tenant, "signnow", data["signnow"])
    put(app_db, tenant, "whatsapp", data["whatsapp"])
    copy_ciphertext(fresh_db, (tenant, "signnow"), (tenant, "whatsapp"))
    with pytest.raises(CredentialIntegrityError, match="context-mismatch"):
        get(app_db, tenant, "whatsapp")
    assert audit_actions(fresh_db, tenant)[-1][0] == "credentials.integrity_failure"


def test_a_flipped_byte_in_the_stored_ciphertext_fails_and_is_audited(
        fresh_db: TestDatabase, app_db: Database, vault: Vault) -> None:
    tenant = make_tenant(fresh_db)
    put(app_db, tenant, "stripe", credentials_for(uuid.uuid4().hex)["stripe"])
    with fresh_db.admin() as conn:
        conn.execute("UPDATE integration_credentials SET ciphertext ="
                     " set_byte(ciphertext, 300, get_byte(ciphertext, 300) # 1)")
    with pytest.raises(CredentialIntegrityError):
        get(app_db, tenant, "stripe")
    assert audit_actions(fresh_db, tenant)[-1][1]["reason"] == "tampered-or-malformed"


def test_cache_never_returns_one_tenants_secret_for_another(fresh_db: TestDatabase, app_db: Database,
                                                           vault: Vault) -> None:
    now = [1000.0]
    cache = CredentialCache(ttl=60, clock=lambda: now[0])
    a, b = make_tenant(fresh_db), make_tenant(fresh_db)
    secret_a, secret_b = uuid.uuid4().hex, uuid.uuid4().hex
    put(app_db, a, "twilio", credentials_for(secret_a)["twilio"])
    put(app_db, b, "twilio", credentials_for(secret_b)["twilio"])
    for _ in range(3):  # A then B then A..., in one process, one cache
        assert reveal(get(app_db, a, "twilio", cache))["auth_token"] == secret_a
        assert reveal(get(app_db, b, "twilio", cache))["auth_token"] == secret_b
    # Same tenant id given as text or UUID: one entry per tenant, never a neighbour's.
    assert reveal(get(app_db, b, "twilio", cache))["auth_token"] == secret_b
    assert cache.get(a, "twilio") is not cache.get(b, "twilio")
    # A tenant without credentials gets NotFound, never another tenant's cached entry.
    with pytest.raises(NotFound):
        get(app_db, make_tenant(fresh_db), "twilio", cache)


def test_cache_serves_hits_without_the_database_until_the_ttl_passes(
        fresh_db: TestDatabase, app_db: Database, vault: Vault) -> None:
    now = [1000.0]
    cache = CredentialCache(ttl=60, clock=lambda: now[0])
    tenant = make_tenant(fresh_db)
    put(app_db, tenant, "twilio", credentials_for(uuid.uuid4().hex)["twilio"])
    first = get(app_db, tenant, "twilio", cache)
    with fresh_db.admin() as conn:  # gone behind the cache's back (another process deleted it)
        conn.execute("DELETE FROM integration_credentials")
    now[0] += 59
    assert get(app_db, tenant, "twilio", cache) is first
    now[0] += 2
    with pytest.raises(NotFound):
        get(app_db, tenant, "twilio", cache)


def test_put_and_delete_invalidate_the_cache(fresh_db: TestDatabase, app_db: Database, vault: Vault) -> None:
    cache = CredentialCache(ttl=60)
    tenant = make_tenant(fresh_db)
    old, new = uuid.uuid4().hex, uuid.uuid4().hex
    put(app_db, tenant, "twilio", credentials_for(old)["twilio"])
    assert reveal(get(app_db, tenant, "twilio", cache))["auth_token"] == old
    with tenant_tx(tenant, db=app_db) as conn:
        put_credentials(conn, tenant_id=tenant, provider="twilio", data=credentials_for(new)["twilio"],
                        actor=ACTOR, cache=cache)
    model = get(app_db, tenant, "twilio", cache)
    assert isinstance(model, TwilioCredentials) and model.auth_token.get_secret_value() == new
    with tenant_tx(tenant, db=app_db) as conn:
        delete_credentials(conn, tenant_id=tenant, provider="twilio", actor=ACTOR, cache=cache)
    assert cache.get(tenant, "twilio") is None


def _columns(conn: Any) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = conn.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        " AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea', 'ARRAY')"
        " AND (table_schema, table_name) IN (SELECT table_schema, table_name FROM information_schema.tables"
        "  WHERE table_type = 'BASE TABLE')").fetchall()
    return rows


def _hits(conn: Any, column: tuple[str, str, str, str], needle: str) -> int:
    schema, table, name, data_type = column
    cast = sql.SQL("%s::bytea") if data_type == "bytea" else sql.SQL("%s")
    target = sql.Identifier(name) if data_type == "bytea" else sql.SQL("{}::text").format(sql.Identifier(name))
    query = sql.SQL("SELECT count(*) FROM {} WHERE position({} IN {}) > 0").format(
        sql.Identifier(schema, table), cast, target)
    row = conn.execute(query, (needle.encode() if data_type == "bytea" else needle,)).fetchone()
    return int(row[0])


def test_canaries_reach_no_column_of_any_table_and_no_log_line(
        fresh_db: TestDatabase, app_db: Database, vault: Vault, json_log: io.StringIO) -> None:
    secret = uuid.uuid4().hex
    a, b = make_tenant(fresh_db), make_tenant(fresh_db)
    for tenant in (a, b):
        for provider, data in credentials_for(secret).items():
            put(app_db, tenant, provider, data)
            assert reveal(get(app_db, tenant, provider))  # decrypted, cached, used
        with tenant_tx(tenant, db=app_db) as conn:
            list_credentials(conn, tenant_id=tenant)
    copy_ciphertext(fresh_db, (b, "stripe"), (a, "stripe"))
    credential_cache().clear()
    with pytest.raises(CredentialIntegrityError):
        get(app_db, a, "stripe")
    with pytest.raises(ValidationFailed), tenant_tx(a, db=app_db) as conn:
        put_credentials(conn, tenant_id=a, provider="twilio", data={"auth_token": f"CANARY-secret-{secret}"},
                        actor=ACTOR)
    with tenant_tx(a, db=app_db) as conn:
        delete_credentials(conn, tenant_id=a, provider="signnow", actor=ACTOR)
    needles = (secret, "CANARY")
    with fresh_db.admin() as conn:
        columns = _columns(conn)
        assert ("public", "integration_credentials", "ciphertext", "bytea") in columns
        # Positive control: the same sweep does find what really is stored (the audit's user agent).
        assert sum(_hits(conn, column, "pytest") for column in columns) >= 1
        for column in columns:
            for needle in needles:
                assert _hits(conn, column, needle) == 0, f"{needle[:6]}… in {column[1]}.{column[2]}"
    logs = json_log.getvalue()
    assert "credentials integrity failure" in logs
    assert all(needle not in logs for needle in needles)
