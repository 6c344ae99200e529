"""Master keys: the local key file (raw AES-256 wrapping key) and strict KMS providers.

aws_encryption_sdk and botocore are imported inside the functions that need them: importing them at
module level costs the API Lambda ~30% more cold start, and most requests never touch a credential.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.keyfile import KEY_BYTES, KeyFileError, load_or_create_key_file, read_key_file

__all__ = ["KEY_BYTES", "KeyFileError", "load_or_create_key_file", "read_key_file"]

LOCAL_PROVIDER_ID = "crm-local"
KEY_FILE_NAME = "master.key"


@dataclass(frozen=True)
class Keyring:
    """What the vault encrypts under (one current key) and decrypts with (current + previous keys)."""

    key_id: str                 # the current master key: "local:<fingerprint>" or a KMS key ARN
    encrypt_provider: Any       # an ESDK MasterKeyProvider holding only the current key
    decrypt_provider: Any       # an ESDK MasterKeyProvider holding the current and previous keys
    remote: bool                # True for KMS: worth caching data keys (each miss is a network call)
    decrypt_key_ids: tuple[str, ...] = ()


def local_key_id(key: bytes) -> str:
    """A stable public name for a raw key: a domain-separated SHA-256 fingerprint (not the key)."""
    # Domain separation: this digest can never equal a hash of the key computed for any other purpose.
    return "local:" + hashlib.sha256(b"crm/local-master-key/v1\x00" + key).hexdigest()[:32]


def _raw_wrapping_key(key: bytes) -> Any:
    from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey

    # AES-256-GCM key wrapping (12-byte IV, 16-byte tag): the data key and the encryption context are
    # both authenticated by the wrap, so a wrapped key cannot be moved to a message with another context.
    return WrappingKey(wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                       wrapping_key=key, wrapping_key_type=EncryptionKeyType.SYMMETRIC)


def _raw_provider(keys: dict[bytes, bytes]) -> Any:
    from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

    class LocalKeys(RawMasterKeyProvider):  # type: ignore[misc]
        """The local keys by key id; decrypt tries only the key named by the message's data key."""

        provider_id = LOCAL_PROVIDER_ID

        def _get_raw_key(self, key_id: bytes) -> Any:
            return _raw_wrapping_key(keys[key_id])

    provider = LocalKeys()
    provider.add_master_keys_from_list(list(keys))
    return provider


def local_keyring(current: bytes, previous: Sequence[bytes] = ()) -> Keyring:
    """A raw AES-256 keyring: encrypt under `current`, decrypt with `current` or any of `previous`."""
    for key in (current, *previous):
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"a local master key must be exactly {KEY_BYTES} bytes")
    from aws_encryption_sdk.key_providers.raw import RawMasterKey

    key_id = local_key_id(current)
    encrypt = RawMasterKey(key_id=key_id.encode(), provider_id=LOCAL_PROVIDER_ID,
                           wrapping_key=_raw_wrapping_key(current))
    everything = {local_key_id(k).encode(): k for k in (current, *previous)}
    return Keyring(key_id=key_id, encrypt_provider=encrypt, decrypt_provider=_raw_provider(everything),
                   remote=False, decrypt_key_ids=tuple(k.decode() for k in everything))


def kms_keyring(key_arn: str, previous_arns: Sequence[str] = (), *, botocore_session: Any | None = None) -> Keyring:
    """A strict KMS keyring: encrypt under `key_arn`, decrypt only under it or `previous_arns`."""
    arns = (key_arn, *(a for a in previous_arns if a != key_arn))
    for arn in arns:
        # Strict providers need full key ARNs: an alias could be repointed at an attacker's key.
        if not arn.startswith("arn:aws") or ":key/" not in arn:
            raise ValueError("KMS keys must be given as full key ARNs (arn:aws:kms:<region>:<account>:key/<id>)")
    import botocore.session
    from aws_encryption_sdk import StrictAwsKmsMasterKeyProvider

    session = botocore_session if botocore_session is not None else botocore.session.Session()
    # Strict, not discovery: a message whose data key names any other KMS key (an attacker's key in
    # their own account) is refused without a single KMS call on that key (K05).
    encrypt = StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session)
    decrypt = StrictAwsKmsMasterKeyProvider(key_ids=list(arns), botocore_session=session)
    return Keyring(key_id=key_arn, encrypt_provider=encrypt, decrypt_provider=decrypt, remote=True,
                   decrypt_key_ids=arns)


def default_key_path(data_dir: Path) -> Path:
    """Where the local master key lives: $DATA_DIR/master.key."""
    return data_dir / KEY_FILE_NAME
