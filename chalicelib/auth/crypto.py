"""Random tokens and keyed hashes. Raw tokens are never stored: only HMACs under purpose-bound keys."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from chalicelib.keyfile import load_or_create_key_file
from chalicelib.settings import Settings, get_settings

# Crockford base32 without I, L, O, U: a code read from an email is typed without ambiguity.
_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8  # 40 bits; with 5 attempts per code and per-IP limits, guessing is hopeless


def new_token() -> str:
    """A 256-bit URL-safe random token (magic links, session cookies)."""
    return secrets.token_urlsafe(32)


def new_code() -> str:
    """A one-time sign-in code for typing on another device."""
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(code: str) -> str:
    """Upper-case, without spaces or dashes; O->0 and I/L->1 as Crockford reads them."""
    cleaned = code.strip().upper().replace("-", "").replace(" ", "")
    return cleaned.translate(str.maketrans("OIL", "011"))


@functools.cache
def _root_key(secret: str | None, data_dir: str) -> bytes:
    if secret is not None:
        return hashlib.sha256(secret.encode()).digest()
    from pathlib import Path

    return load_or_create_key_file(Path(data_dir) / "app_secret.key")


@functools.cache
def _derived_key(purpose: str, secret: str | None, data_dir: str) -> bytes:
    # One root secret, independent keys per purpose: a session hash can never double as a token hash.
    return hmac.new(_root_key(secret, data_dir), purpose.encode(), hashlib.sha256).digest()


def _purpose_key(purpose: str, settings: Settings) -> bytes:
    secret = settings.app_secret_key.get_secret_value() if settings.app_secret_key else None
    return _derived_key(purpose, secret, str(settings.data_dir))


def keyed_hash(purpose: str, value: str, settings: Settings | None = None) -> bytes:
    """HMAC-SHA256 of `value` under the key for `purpose` (what the database stores)."""
    key = _purpose_key(purpose, settings or get_settings())
    return hmac.new(key, value.encode(), hashlib.sha256).digest()


def keyed_token(purpose: str, value: str, settings: Settings | None = None) -> str:
    """A URL-safe derived token (e.g. the CSRF token of a session)."""
    return base64.urlsafe_b64encode(keyed_hash(purpose, value, settings)).rstrip(b"=").decode()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings."""
    return hmac.compare_digest(a.encode(), b.encode())
