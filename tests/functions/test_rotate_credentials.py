"""functions.rotate_credentials: re-encryption under the current key, idempotent, tenant by tenant."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from chalicelib import audit
from chalicelib.db.pool import Database, use_database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.vault.envelope import CredentialIntegrityError, Vault, VaultUnavailable
from chalicelib.vault.store import CredentialCache, get_credentials, put_credentials
from functions.rotate_credentials import all_tenant_ids, handler, rotate
from tests.conftest import TestDatabase, make_tenant


def data_for(provider: str, secret: str) -> dict[str, str]:
    return {
        "twilio": {"account_sid": "AC" + secret, "auth_token": secret},
        "stripe": {"secret_key": f"sk_test_CANARY{secret}"},
        "signnow": {"api_token": f"CANARY-secret-{secret}"},
    }[provider]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Vault, Vault]:
    """(old vault, new vault that may still read the old key)."""
    old = Vault.local(tmp_path / "old.key")
    return old, Vault.local(tmp_path / "new.key", previous_key_files=[tmp_path / "old.key"])


class FlakyVault(Vault):
    """A vault whose key service fails for one tenant (injected, not patched)."""

    failing_tenant = ""

    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        if context["tenant_id"] == self.failing_tenant:
            raise VaultUnavailable("the key service is unavailable")
        return super().encrypt(plaintext, context)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def seed(fresh_db: TestDatabase, jobs_db: Database, vault: Vault, count: int = 3) -> dict[tuple[uuid.UUID, str], str]:
    """`count` tenants with twilio, stripe and signnow credentials; returns the secret of each row."""
    secrets: dict[tuple[uuid.UUID, str], str] = {}
    for n in range(count):
        tenant = make_tenant(fresh_db, f"w{n}")
        with tenant_tx(tenant, db=jobs_db) as conn:
            for provider in ("twilio", "stripe", "signnow"):
                secret = uuid.uuid4().hex
                put_credentials(conn, tenant_id=tenant, provider=provider, data=data_for(provider, secret),
                                actor=audit.SYSTEM, vault=vault, cache=CredentialCache(ttl=0))
                secrets[(tenant, provider)] = secret
    return secrets


def stored(fresh_db: TestDatabase) -> dict[tuple[uuid.UUID, str], tuple[bytes, str, object]]:
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT tenant_id, provider, ciphertext, key_id, rotated_at"
                            " FROM integration_credentials").fetchall()
    return {(uuid.UUID(str(t)), str(p)): (bytes(c), str(k), r) for t, p, c, k, r in rows}  # type: ignore[call-overload]


def test_rotation_re_encrypts_every_row_under_the_new_key(fresh_db: TestDatabase, jobs_db: Database,
                                                          keys: tuple[Vault, Vault], tmp_path: Path) -> None:
    old, new = keys
    secrets = seed(fresh_db, jobs_db, old)
    before = stored(fresh_db)
    result = rotate(db=jobs_db, vault=new)
    assert (result.tenants, result.rotated, result.skipped, result.failed, result.failed_tenants) == (3, 9, 0, 0, 0)
    after = stored(fresh_db)
    assert {key_id for _, key_id, _ in after.values()} == {new.key_id} != {old.key_id}
    assert all(rotated_at is not None for _, _, rotated_at in after.values())
    old_ciphertexts = {c for c, _, _ in before.values()}
    assert old_ciphertexts.isdisjoint(c for c, _, _ in after.values())
    only_new = Vault.local(tmp_path / "new.key")  # the old key is no longer needed for anything
    for (tenant, provider), secret in secrets.items():
        with tenant_tx(tenant, db=jobs_db) as conn:
            model = get_credentials(conn, tenant_id=tenant, provider=provider, vault=only_new,
                                    cache=CredentialCache(ttl=0))
        assert secret in model.to_plaintext().decode()
    with pytest.raises(CredentialIntegrityError):
        tenant, provider = next(iter(secrets))
        old.decrypt(after[(tenant, provider)][0], {"tenant_id": str(tenant), "provider": provider,
                                                   "purpose": "integration-credentials", "v": "1"})
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action = 'credentials.rotated'").fetchone() == (9,)


def test_rotation_is_idempotent(fresh_db: TestDatabase, jobs_db: Database, keys: tuple[Vault, Vault]) -> None:
    old, new = keys
    seed(fresh_db, jobs_db, old)
    rotate(db=jobs_db, vault=new)
    once = stored(fresh_db)
    again = rotate(db=jobs_db, vault=new)
    assert (again.rotated, again.skipped, again.failed) == (0, 9, 0)
    assert stored(fresh_db) == once


def test_a_tampered_row_fails_alone_and_is_audited(fresh_db: TestDatabase, jobs_db: Database,
                                                   keys: tuple[Vault, Vault]) -> None:
    old, new = keys
    seed(fresh_db, jobs_db, old)
    a, b, _c = all_tenant_ids(jobs_db)
    with fresh_db.admin() as conn:  # B's twilio slot now holds A's ciphertext (K01 during rotation)
        conn.execute("UPDATE integration_credentials SET ciphertext = (SELECT ciphertext FROM integration_credentials"
                     " WHERE tenant_id = %s AND provider = 'twilio') WHERE tenant_id = %s AND provider = 'twilio'",
                     (a, b))
    result = rotate(db=jobs_db, vault=new)
    assert (result.rotated, result.failed, result.failed_tenants) == (8, 1, 0)
    assert stored(fresh_db)[(b, "twilio")][1] == old.key_id
    with fresh_db.admin() as conn:
        row = conn.execute("SELECT details FROM audit_log WHERE tenant_id = %s"
                           " AND action = 'credentials.integrity_failure'", (b,)).fetchone()
    assert row == ({"provider": "twilio", "reason": "context-mismatch", "during": "rotation"},)


def test_one_tenant_failing_does_not_stop_the_others(fresh_db: TestDatabase, jobs_db: Database,
                                                     keys: tuple[Vault, Vault]) -> None:
    old, new = keys
    seed(fresh_db, jobs_db, old)
    a, b, c = all_tenant_ids(jobs_db)
    flaky = FlakyVault(new.keyring)
    flaky.failing_tenant = str(b)
    result = rotate(db=jobs_db, vault=flaky)
    assert (result.rotated, result.failed_tenants) == (6, 1)
    after = stored(fresh_db)
    # B's transaction rolled back as a whole: none of its rows half-rotated.
    assert {after[(b, p)][1] for p in ("twilio", "stripe", "signnow")} == {old.key_id}
    assert {after[(t, p)][1] for t in (a, c) for p in ("twilio", "stripe", "signnow")} == {new.key_id}
    retry = rotate(db=jobs_db, vault=new)
    assert (retry.rotated, retry.skipped, retry.failed_tenants) == (3, 6, 0)


def test_dry_run_counts_and_writes_nothing(fresh_db: TestDatabase, jobs_db: Database,
                                           keys: tuple[Vault, Vault]) -> None:
    old, new = keys
    seed(fresh_db, jobs_db, old, count=2)
    before = stored(fresh_db)
    result = rotate(db=jobs_db, vault=new, dry_run=True)
    assert (result.rotated, result.skipped, result.failed) == (6, 0, 0)
    assert stored(fresh_db) == before


def test_tenant_ids_narrow_the_run(fresh_db: TestDatabase, jobs_db: Database, keys: tuple[Vault, Vault]) -> None:
    old, new = keys
    seed(fresh_db, jobs_db, old)
    _a, b, _c = all_tenant_ids(jobs_db)
    result = rotate(db=jobs_db, vault=new, tenant_ids=[str(b)])
    assert (result.tenants, result.rotated) == (1, 3)
    assert {k[0] for k, v in stored(fresh_db).items() if v[1] == new.key_id} == {b}


def test_jobs_role_lists_every_workspace(fresh_db: TestDatabase, jobs_db: Database) -> None:
    tenants = {make_tenant(fresh_db, f"w{n}") for n in range(5)}
    assert all_tenant_ids(jobs_db) == sorted(tenants)


def test_log_line_carries_counts_only_and_progress_goes_to_a_tty(
        fresh_db: TestDatabase, jobs_db: Database, keys: tuple[Vault, Vault], json_log: io.StringIO) -> None:
    old, new = keys
    secrets = seed(fresh_db, jobs_db, old)
    progress = Tty()
    rotate(db=jobs_db, vault=new, progress=progress)
    assert "3/3" in progress.getvalue()
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    (done,) = [line for line in lines if line["logger"] == "crm.jobs.rotate"]
    assert {k: done[k] for k in ("rotated", "skipped", "failed")} == {"rotated": 9, "skipped": 0, "failed": 0}
    assert not any(secret in json_log.getvalue() for secret in secrets.values())
    assert "CANARY" not in json_log.getvalue()
    quiet = io.StringIO()  # not a terminal: no progress output
    rotate(db=jobs_db, vault=new, progress=quiet)
    assert quiet.getvalue() == ""


def test_rotation_between_kms_keys_under_moto(fresh_db: TestDatabase, jobs_db: Database,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    for name, value in (("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        old_arn, new_arn = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
        secrets = seed(fresh_db, jobs_db, Vault.kms(old_arn), count=2)
        result = rotate(db=jobs_db, vault=Vault.kms(new_arn, previous_key_arns=[old_arn]))
        assert (result.rotated, result.failed) == (6, 0)
        assert {v[1] for v in stored(fresh_db).values()} == {new_arn}
        (tenant, provider), secret = next(iter(secrets.items()))
        with tenant_tx(tenant, db=jobs_db) as conn:
            model = get_credentials(conn, tenant_id=tenant, provider=provider, vault=Vault.kms(new_arn),
                                    cache=CredentialCache(ttl=0))
        assert secret in model.to_plaintext().decode()


def test_handler_rotates_the_tenants_of_the_event(fresh_db: TestDatabase, jobs_db: Database,
                                                  json_log: io.StringIO) -> None:
    from chalicelib.settings import get_settings

    current = Vault.from_settings(get_settings())  # $DATA_DIR/master.key of the test process
    use_database(jobs_db, "jobs")
    try:
        seed(fresh_db, jobs_db, current, count=2)
        a, _b = all_tenant_ids(jobs_db)
        with fresh_db.admin() as conn:
            conn.execute("UPDATE integration_credentials SET key_id = 'local:retired' WHERE tenant_id = %s", (a,))
        counts: dict[str, Any] = handler({"tenant_ids": [str(a)]}, None)
    finally:
        use_database(None, "jobs")
    assert counts == {"tenants": 1, "rotated": 3, "skipped": 0, "failed": 0, "failed_tenants": 0}
