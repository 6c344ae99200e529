"""Envelope encryption (K02-K05) and the master keys, without a database: raw AES key files and KMS under moto."""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_encryption_sdk as sdk
import botocore.session
import pytest
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header

from chalicelib.errors import NotFound, ValidationFailed
from chalicelib.settings import load_settings
from chalicelib.vault.envelope import (
    CONTEXT_KEYS,
    CredentialIntegrityError,
    Vault,
    VaultUnavailable,
    credential_context,
)
from chalicelib.vault.keys import KeyFileError, load_or_create_key_file, local_key_id, local_keyring, read_key_file
from chalicelib.vault.providers import StripeCredentials, TwilioCredentials, parse_credentials

ROOT = Path(__file__).resolve().parents[2]
PLAINTEXT = b'{"account_sid":"AC' + b"a" * 32 + b'","auth_token":"' + b"b" * 32 + b'"}'


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault.local(tmp_path / "master.key")


@pytest.fixture
def context() -> dict[str, str]:
    return credential_context(uuid.uuid4(), "twilio")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    for name, value in (("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_SESSION_TOKEN", "testing")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def _kms_key() -> str:
    import boto3

    return str(boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"])


def _recording_session() -> tuple[Any, Counter[str]]:
    session = botocore.session.Session()
    calls: Counter[str] = Counter()

    def record(**kwargs: Any) -> None:
        calls[kwargs["model"].name] += 1

    session.register("before-call.kms", record)
    return session, calls


def _header(ciphertext: bytes) -> Any:
    header, _raw = deserialize_header(io.BytesIO(ciphertext))
    return header


def _reason(vault: Vault, ciphertext: bytes, context: dict[str, str]) -> str:
    with pytest.raises(CredentialIntegrityError) as caught:
        vault.decrypt(ciphertext, context)
    return caught.value.reason


# --- round trips and the message header -----------------------------------------------------------------

def test_local_key_round_trip(vault: Vault, context: dict[str, str]) -> None:
    ciphertext = vault.encrypt(PLAINTEXT, context)
    assert PLAINTEXT not in ciphertext
    decrypted = vault.decrypt(ciphertext, context)
    assert decrypted.plaintext == PLAINTEXT
    assert decrypted.key_id == vault.key_id and vault.key_id.startswith("local:")
    assert b"auth_token" not in repr(decrypted).encode()


def test_kms_round_trip_under_moto(aws: None, context: dict[str, str]) -> None:
    session, _calls = _recording_session()
    vault = Vault.kms(_kms_key(), botocore_session=session)
    ciphertext = vault.encrypt(PLAINTEXT, context)
    assert vault.decrypt(ciphertext, context).plaintext == PLAINTEXT
    assert vault.decrypt(ciphertext, context).key_id == vault.key_id
    edks = _header(ciphertext).encrypted_data_keys
    assert [edk.key_provider.provider_id for edk in edks] == ["aws-kms"]


def test_kms_data_keys_are_cached_so_steady_state_makes_no_kms_calls(aws: None, context: dict[str, str]) -> None:
    session, calls = _recording_session()
    vault = Vault.kms(_kms_key(), botocore_session=session)
    first = vault.encrypt(PLAINTEXT, context)
    vault.encrypt(PLAINTEXT, context)
    for _ in range(5):
        vault.decrypt(first, context)
    assert calls == Counter({"GenerateDataKey": 1, "Decrypt": 1})
    # Another tenant's context never reuses that data key: one more GenerateDataKey.
    vault.encrypt(PLAINTEXT, credential_context(uuid.uuid4(), "twilio"))
    assert calls["GenerateDataKey"] == 2


def test_header_uses_the_non_signing_key_committing_suite(vault: Vault, context: dict[str, str]) -> None:
    header = _header(vault.encrypt(PLAINTEXT, context))
    assert header.algorithm is Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    assert header.algorithm.is_committing() and "COMMIT_KEY" in header.algorithm.name
    assert len(header.encrypted_data_keys) == 1


def test_signing_suite_is_available_and_also_committing(tmp_path: Path, context: dict[str, str]) -> None:
    vault = Vault.local(tmp_path / "master.key", signed=True)
    ciphertext = vault.encrypt(PLAINTEXT, context)
    assert _header(ciphertext).algorithm is Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
    assert vault.decrypt(ciphertext, context).plaintext == PLAINTEXT


def test_encryption_context_is_exactly_the_four_structural_keys(vault: Vault) -> None:
    tenant = uuid.uuid4()
    header = _header(vault.encrypt(PLAINTEXT, credential_context(tenant, "stripe")))
    assert header.encryption_context == {"tenant_id": str(tenant), "provider": "stripe",
                                         "purpose": "integration-credentials", "v": "1"}
    assert set(header.encryption_context) == set(CONTEXT_KEYS)


def test_encrypt_refuses_any_other_context(vault: Vault, context: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="exactly"):
        vault.encrypt(PLAINTEXT, {**context, "email": "someone@example.com"})


# --- K01 context checks, K04 tampering -------------------------------------------------------------------

@pytest.mark.parametrize("swap", ["tenant_id", "provider", "purpose", "v"])
def test_a_message_for_another_context_is_refused(vault: Vault, context: dict[str, str], swap: str) -> None:
    ciphertext = vault.encrypt(PLAINTEXT, context)
    other = {**context, swap: str(uuid.uuid4()) if swap == "tenant_id" else "stripe" if swap == "provider" else "x"}
    assert _reason(vault, ciphertext, other) == "context-mismatch"


def test_every_single_byte_change_is_refused(vault: Vault, context: dict[str, str]) -> None:
    ciphertext = vault.encrypt(PLAINTEXT, context)
    rng = random.Random(20240501)
    changes = [(i, delta) for i in range(len(ciphertext)) for delta in (0x01, 0x80, 0xFF)]
    changes += [(rng.randrange(len(ciphertext)), rng.randrange(1, 256)) for _ in range(1000)]
    for position, delta in changes:
        tampered = bytearray(ciphertext)
        tampered[position] ^= delta
        with pytest.raises(CredentialIntegrityError):
            vault.decrypt(bytes(tampered), context)


def test_truncated_and_extended_ciphertexts_are_refused(vault: Vault, context: dict[str, str]) -> None:
    ciphertext = vault.encrypt(PLAINTEXT, context)
    for length in range(len(ciphertext)):
        with pytest.raises(CredentialIntegrityError):
            vault.decrypt(ciphertext[:length], context)
    for extra in (b"\x00", b"x" * 100, ciphertext):
        assert _reason(vault, ciphertext + extra, context) == "trailing-data"


def test_a_message_under_a_key_we_do_not_hold_is_refused(tmp_path: Path, vault: Vault,
                                                        context: dict[str, str]) -> None:
    stranger = Vault.local(tmp_path / "other.key")
    assert _reason(vault, stranger.encrypt(PLAINTEXT, context), context) == "data-key-not-decryptable"


# --- K03 commitment --------------------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [Algorithm.AES_256_GCM_IV12_TAG16_HKDF_SHA256,
                                    Algorithm.AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384])
def test_a_legacy_non_committing_message_is_refused(vault: Vault, context: dict[str, str], legacy: Any) -> None:
    old_client = sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
    ciphertext, header = old_client.encrypt(source=PLAINTEXT, key_provider=vault.keyring.encrypt_provider,
                                            encryption_context=context, algorithm=legacy)
    assert not header.algorithm.is_committing()
    # The same key and context: only the commitment policy stands between it and a successful decrypt.
    plaintext, _ = old_client.decrypt(source=ciphertext, key_provider=vault.keyring.decrypt_provider)
    assert plaintext == PLAINTEXT
    assert _reason(vault, ciphertext, context) == "not-key-committing"


# --- K05 strict keys and the EDK limit -------------------------------------------------------------------

def test_a_message_with_several_data_keys_is_refused(tmp_path: Path, vault: Vault, context: dict[str, str]) -> None:
    extra = [load_or_create_key_file(tmp_path / f"extra{i}.key") for i in range(2)]
    ours = read_key_file(tmp_path / "master.key")
    wide = local_keyring(ours, extra)  # its decrypt provider wraps under all three keys
    client = sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    ciphertext, header = client.encrypt(source=PLAINTEXT, key_provider=wide.decrypt_provider,
                                        encryption_context=context)
    assert len(header.encrypted_data_keys) == 3
    assert _reason(vault, ciphertext, context) == "too-many-data-keys"


def test_a_header_claiming_ten_thousand_data_keys_is_refused_fast(vault: Vault, context: dict[str, str]) -> None:
    ciphertext = bytearray(vault.encrypt(PLAINTEXT, context))
    # Message format v2: version (1) | suite id (2) | message id (32) | context length (2) | context | EDK count (2)
    (context_length,) = struct.unpack_from(">H", ciphertext, 35)
    count_at = 37 + context_length
    assert struct.unpack_from(">H", ciphertext, count_at) == (1,)
    struct.pack_into(">H", ciphertext, count_at, 10_000)
    # Refused while reading the header (the reason says so), before any data key is unwrapped.
    assert _reason(vault, bytes(ciphertext), context) == "too-many-data-keys"


def test_a_data_key_naming_a_foreign_kms_key_is_refused_without_calling_kms(
        aws: None, context: dict[str, str]) -> None:
    ours, attackers = _kms_key(), _kms_key()
    attacker = sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    ciphertext, _ = attacker.encrypt(
        source=PLAINTEXT, encryption_context=context,
        key_provider=sdk.StrictAwsKmsMasterKeyProvider(key_ids=[attackers]))
    session, calls = _recording_session()
    vault = Vault.kms(ours, botocore_session=session)
    assert _reason(vault, ciphertext, context) == "data-key-not-decryptable"
    assert calls["Decrypt"] == 0


def test_kms_keys_must_be_full_arns(aws: None) -> None:
    with pytest.raises(ValueError, match="ARN"):
        Vault.kms("alias/credentials")


# --- the local key file ----------------------------------------------------------------------------------

def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.key"
    first = Vault.local(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert path.stat().st_size == 32
    assert Vault.local(path).key_id == first.key_id == local_key_id(path.read_bytes())
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temporary file left behind


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    load_or_create_key_file(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="group or others") as caught:
        Vault.local(path)
    assert path.read_bytes().hex() not in str(caught.value)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_key_file_of_the_wrong_length_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "master.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"k" * size)
    os.close(fd)
    with pytest.raises(KeyFileError, match="exactly 32 bytes"):
        Vault.local(path)


def test_a_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    load_or_create_key_file(tmp_path / "real.key")
    (tmp_path / "master.key").symlink_to(tmp_path / "real.key")
    with pytest.raises(KeyFileError):
        Vault.local(tmp_path / "master.key")


def test_previous_key_files_decrypt_but_never_encrypt(tmp_path: Path, context: dict[str, str]) -> None:
    old = Vault.local(tmp_path / "old.key")
    ciphertext = old.encrypt(PLAINTEXT, context)
    new = Vault.local(tmp_path / "new.key", previous_key_files=[tmp_path / "old.key"])
    decrypted = new.decrypt(ciphertext, context)
    assert (decrypted.plaintext, decrypted.key_id) == (PLAINTEXT, old.key_id)
    assert new.decrypt(new.encrypt(PLAINTEXT, context), context).key_id == new.key_id != old.key_id
    assert len(_header(new.encrypt(PLAINTEXT, context)).encrypted_data_keys) == 1


def test_vault_from_settings_uses_the_key_file_in_data_dir(tmp_path: Path) -> None:
    vault = Vault.from_settings(load_settings(data_dir=tmp_path, master_key_source="local"))
    assert vault.key_id == local_key_id((tmp_path / "master.key").read_bytes())


def test_vault_from_settings_uses_the_kms_key_arn(aws: None) -> None:
    arn = _kms_key()
    vault = Vault.from_settings(load_settings(master_key_source="kms", kms_key_arn=arn))
    assert vault.key_id == arn


# --- providers -------------------------------------------------------------------------------------------

def test_unknown_provider_is_not_found() -> None:
    with pytest.raises(NotFound):
        parse_credentials("paypal", {})


def test_bad_shapes_name_fields_and_never_echo_values() -> None:
    canary = f"CANARY-secret-{uuid.uuid4().hex}"
    with pytest.raises(ValidationFailed) as caught:
        parse_credentials("twilio", {"account_sid": canary, "auth_token": canary, canary: "x", "extra_one": 1})
    fields = sorted(e.field for e in caught.value.errors)
    assert fields == ["(unknown field)", "account_sid", "auth_token", "extra_one"]
    assert canary not in repr(caught.value.errors) and canary not in str(caught.value)
    with pytest.raises(ValidationFailed) as missing:
        parse_credentials("stripe", {})
    assert [(e.field, e.code) for e in missing.value.errors] == [("secret_key", "missing")]
    with pytest.raises(ValidationFailed):
        parse_credentials("stripe", ["sk_test_x"])


def test_models_hide_secrets_and_hint_only_the_last_four() -> None:
    token = uuid.uuid4().hex
    model = parse_credentials("twilio", {"account_sid": "AC" + "1" * 28 + "9876", "auth_token": token})
    assert isinstance(model, TwilioCredentials)
    assert token not in repr(model) and token not in str(model) and token not in model.model_dump_json()
    assert model.hints() == {"account_sid": "…9876", "auth_token": "…" + token[-4:]}
    stripe = parse_credentials("stripe", {"secret_key": "sk_live_" + "A" * 20 + "wxyz"})
    assert isinstance(stripe, StripeCredentials)
    assert stripe.hints() == {"secret_key": "…wxyz", "mode": "live"}


# --- cold start --------------------------------------------------------------------------------------------

def test_importing_the_store_imports_no_encryption_sdk_or_boto() -> None:
    code = ("import sys, chalicelib.vault.store, chalicelib.vault.envelope; "
            "print(sorted(m for m in ('boto3', 'botocore', 'aws_encryption_sdk') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unreachable_kms_is_unavailable_not_an_integrity_failure(
        context: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    for name, value in (("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        arn = _kms_key()
        ciphertext = Vault.kms(arn).encrypt(PLAINTEXT, context)
    # Outside moto, with the KMS endpoint pointing at a closed port: a network failure, not tampering.
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    vault = Vault.kms(arn, data_key_cache_seconds=0)
    with pytest.raises(VaultUnavailable):
        vault.decrypt(ciphertext, context)
    with pytest.raises(VaultUnavailable):
        vault.encrypt(PLAINTEXT, context)
