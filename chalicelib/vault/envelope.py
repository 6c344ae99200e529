"""Envelope encryption of integration credentials with the AWS Encryption SDK (ESDK).

Every credential is its own ESDK message: a fresh data key per message, wrapped by one master key
(KMS in prod, a raw AES-256 key file locally), AES-256-GCM with key commitment. The encryption context
names the tenant and the provider and is compared on decrypt, so a ciphertext copied into another
workspace's row or another provider's slot is refused even though it is a perfectly valid message.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from chalicelib.vault.keys import (
    Keyring,
    default_key_path,
    kms_keyring,
    load_or_create_key_file,
    local_keyring,
    read_key_file,
)

if TYPE_CHECKING:
    from chalicelib.settings import Settings

PURPOSE = "integration-credentials"
CONTEXT_VERSION = "1"
# Exactly these keys, all structural: the context is plaintext in the message header and, with KMS,
# in CloudTrail, so it must never hold PII or any part of a secret (K02).
CONTEXT_KEYS = ("tenant_id", "provider", "purpose", "v")
# Added by the ESDK itself to messages of signing suites (the ECDSA verification key).
_SDK_CONTEXT_KEY = "aws-crypto-public-key"
MAX_MESSAGE_BYTES = 65_536  # the same bound as the column's CHECK: never parse an absurd blob


class VaultError(RuntimeError):
    """Encryption or decryption could not be done (messages never carry plaintext or key bytes)."""


class VaultUnavailable(VaultError):
    """The key service (KMS) could not be reached; retry later. Not a sign of tampering."""


class CredentialIntegrityError(VaultError):
    """A stored ciphertext is not an authentic message for this tenant and provider. `reason` is a code."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"stored credentials failed the integrity check ({reason})")
        self.reason = reason


def credential_context(tenant_id: UUID | str, provider: str) -> dict[str, str]:
    """The encryption context of one tenant's credentials for one provider."""
    return {"tenant_id": str(UUID(str(tenant_id))), "provider": provider, "purpose": PURPOSE,
            "v": CONTEXT_VERSION}


@dataclass(frozen=True)
class Decrypted:
    """A verified plaintext and the master key that unwrapped its data key."""

    plaintext: bytes = field(repr=False)  # a repr that reaches a log line or Sentry must not carry it
    key_id: str = ""


_REASONS = {
    # ESDK exception name -> reason code recorded in the audit entry (never the exception's message).
    "MaxEncryptedDataKeysExceeded": "too-many-data-keys",
    "ActionNotAllowedError": "not-key-committing",
    "DecryptKeyError": "data-key-not-decryptable",
}


class Vault:
    """Encrypt and decrypt credential plaintexts under one keyring; thread-safe, one per process."""

    def __init__(self, keyring: Keyring, *, signed: bool = False, max_encrypted_data_keys: int = 1,
                 data_key_cache_seconds: float = 60.0, data_key_cache_capacity: int = 512) -> None:
        import aws_encryption_sdk as sdk
        from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy

        self.keyring = keyring
        # Key commitment (K03): REQUIRE_ENCRYPT_REQUIRE_DECRYPT refuses to write or read any message
        # of a non-committing suite, so one ciphertext can never decrypt to two plaintexts under two
        # keys. max_encrypted_data_keys (K05): we always wrap under exactly one master key, so a
        # message with more data keys is not ours, and it is refused while parsing the header,
        # before any key (or KMS) is tried.
        self._client = sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
            max_encrypted_data_keys=max_encrypted_data_keys)
        # The non-signing committing suite by default. The ECDSA-P384 signing suite only adds
        # asymmetric authenticity (proof that a holder of the signing key wrote it, for readers who
        # may decrypt but must not encrypt); here the same party encrypts and decrypts, so it would
        # buy nothing for ~6x the cost per operation. `signed=True` exists for the benchmark.
        self.algorithm = (Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384 if signed
                          else Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY)
        self._accepted = frozenset({Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                                    Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384})
        self._encrypt_cmm = self._materials_manager(sdk, keyring.encrypt_provider, keyring.remote,
                                                    data_key_cache_seconds, data_key_cache_capacity)
        self._decrypt_cmm = self._materials_manager(sdk, keyring.decrypt_provider, keyring.remote,
                                                    data_key_cache_seconds, data_key_cache_capacity)

    @staticmethod
    def _materials_manager(sdk: Any, provider: Any, remote: bool, max_age: float, capacity: int) -> Any:
        if not remote or max_age <= 0:
            # A raw AES unwrap costs microseconds: caching would only keep data keys in memory longer.
            return sdk.DefaultCryptoMaterialsManager(master_key_provider=provider)
        # KMS: cache data keys for a short time so steady state makes ~0 KMS calls. The ESDK keys the
        # cache by encryption context (and, on decrypt, by the exact encrypted data keys), so a data
        # key cached for tenant A can never serve tenant B's context. Few messages per data key.
        return sdk.CachingCryptoMaterialsManager(
            master_key_provider=provider, cache=sdk.LocalCryptoMaterialsCache(capacity=capacity),
            max_age=float(max_age), max_messages_encrypted=100)

    @property
    def key_id(self) -> str:
        """The current master key's id (what new ciphertexts are wrapped under)."""
        return self.keyring.key_id

    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        """One ESDK message of `plaintext` bound to `context` (which must be a credential context)."""
        if tuple(sorted(context)) != tuple(sorted(CONTEXT_KEYS)):
            raise ValueError("the encryption context must be exactly tenant_id, provider, purpose, v")
        try:
            ciphertext, _header = self._client.encrypt(
                source=plaintext, materials_manager=self._encrypt_cmm, encryption_context=dict(context),
                algorithm=self.algorithm)
        except Exception as exc:  # noqa: BLE001 - re-raised as ours, without the SDK's chained detail
            raise _unavailable_or(exc, VaultError("encryption failed")) from None
        return bytes(ciphertext)

    def decrypt(self, ciphertext: bytes, expected_context: Mapping[str, str]) -> Decrypted:
        """Decrypt and verify that the message's context is exactly `expected_context`."""
        if not ciphertext or len(ciphertext) > MAX_MESSAGE_BYTES:
            raise CredentialIntegrityError("malformed")
        source = io.BytesIO(bytes(ciphertext))
        try:
            # max_body_length: a flipped frame-length field cannot make the SDK wait for, or allocate, more.
            plaintext, header = self._client.decrypt(source=source, materials_manager=self._decrypt_cmm,
                                                     max_body_length=MAX_MESSAGE_BYTES)
        except Exception as exc:  # noqa: BLE001 - any failure to authenticate is one kind of error for callers
            # `from None`: the SDK's exceptions (and their frames) stay out of logs and Sentry.
            raise _unavailable_or(exc, CredentialIntegrityError(_REASONS.get(type(exc).__name__,
                                                                              "tampered-or-malformed"))) from None
        if source.tell() != len(ciphertext):
            # The ESDK stops at the end of the message and ignores whatever follows: bytes appended to a
            # stored ciphertext are tampering too, so the whole value must be exactly one message.
            raise CredentialIntegrityError("trailing-data")
        if header.algorithm not in self._accepted:  # belt and braces over the commitment policy
            raise CredentialIntegrityError("unexpected-algorithm")
        context = dict(header.encryption_context)
        if header.algorithm.is_signing():
            context.pop(_SDK_CONTEXT_KEY, None)
        # The ESDK authenticates the context but does not compare it with anything: that is ours to do.
        # Without this check a valid message for tenant B pasted into tenant A's row would decrypt.
        if context != dict(expected_context):
            raise CredentialIntegrityError("context-mismatch")
        return Decrypted(plaintext=bytes(plaintext), key_id=self._unwrapping_key(header))

    def _unwrapping_key(self, header: Any) -> str:
        infos = [bytes(edk.key_provider.key_info) for edk in header.encrypted_data_keys]
        for key_id in self.keyring.decrypt_key_ids:
            if any(info == key_id.encode() or info.startswith(key_id.encode() + b"\x00") for info in infos):
                return key_id
        return self.key_id

    @classmethod
    def local(cls, key_file: Path, *, previous_key_files: Sequence[Path] = (), **options: Any) -> Vault:
        """A vault on the raw key in `key_file` (created on first use), able to read older key files."""
        current = load_or_create_key_file(key_file)
        previous = [read_key_file(path) for path in previous_key_files]
        return cls(local_keyring(current, previous), **options)

    @classmethod
    def kms(cls, key_arn: str, *, previous_key_arns: Sequence[str] = (), botocore_session: Any | None = None,
            **options: Any) -> Vault:
        """A vault on a KMS key (strict: only `key_arn` and `previous_key_arns` may unwrap)."""
        return cls(kms_keyring(key_arn, previous_key_arns, botocore_session=botocore_session), **options)

    @classmethod
    def from_settings(cls, settings: Settings, *, previous_key_files: Sequence[Path] = (),
                      previous_kms_key_arns: Sequence[str] = (), botocore_session: Any | None = None,
                      **options: Any) -> Vault:
        """The vault the settings describe: KMS (MASTER_KEY_SOURCE=kms) or $DATA_DIR/master.key."""
        if settings.master_key_source == "kms":
            if not settings.kms_key_arn:
                raise VaultError("MASTER_KEY_SOURCE=kms needs KMS_KEY_ARN")
            return cls.kms(settings.kms_key_arn, previous_key_arns=previous_kms_key_arns,
                           botocore_session=botocore_session, **options)
        if settings.stage == "prod":
            # Settings already refuse this; repeated here because a key file on a Lambda's disk would be
            # a master key that is neither "only ours" nor durable.
            raise VaultError("the prod stage must use KMS, never a local key file")
        return cls.local(default_key_path(settings.data_dir), previous_key_files=previous_key_files, **options)


def _unavailable_or(exc: Exception, fallback: VaultError) -> VaultError:
    # A network failure talking to KMS escapes the ESDK as a botocore error (ClientErrors are wrapped by
    # the ESDK as DecryptKeyError): it says nothing about the ciphertext, so it must not raise an alert.
    # By module name, so local mode never imports botocore.
    if type(exc).__module__.split(".")[0] == "botocore" and type(exc).__name__ != "ClientError":
        return VaultUnavailable("the key service is unavailable")
    return fallback
