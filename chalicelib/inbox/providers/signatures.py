"""Webhook signatures of WhatsApp (Meta), Mailgun and Twilio, verified over what the provider signed.

Each check recomputes the provider's MAC and compares in constant time (hmac.compare_digest). They are
pure functions: the routes call them on the raw body bytes before anything is parsed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

MAILGUN_MAX_AGE = timedelta(minutes=5)


def whatsapp_valid(app_secret: str, raw_body: bytes, header: str | None) -> bool:
    """Meta's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())


def mailgun_valid(signing_key: str, timestamp: str, token: str, signature: str, now: datetime) -> bool:
    """Mailgun's `signature` = hex HMAC-SHA256(signing key, timestamp + token), timestamp within 5 minutes.

    The caller must also refuse a token it has seen before (replay), which this pure check cannot know.
    """
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12 and token and signature):
        return False
    age = abs(now.timestamp() - int(timestamp))
    if age > MAILGUN_MAX_AGE.total_seconds():
        return False
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Base64 HMAC-SHA1 of the URL followed by every POST parameter, sorted by name, as name + value."""
    payload = url + "".join(f"{name}{value}" for name, value in sorted(params, key=lambda p: (p[0], p[1])))
    return base64.b64encode(hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def _port_variants(url: str) -> list[str]:
    """The URL as configured, with the default port added, and without it (Twilio signs either form)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    with_port = urlunsplit((parts.scheme, f"{host}:{parts.port or default}", parts.path, parts.query,
                            parts.fragment))
    without = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return list(dict.fromkeys([url, with_port, without]))


def twilio_valid(auth_token: str, url: str, params: Mapping[str, list[str]] | Iterable[tuple[str, str]],
                 header: str | None) -> bool:
    """`X-Twilio-Signature` over the public URL (built from PUBLIC_BASE_URL, never from Host) + params."""
    if not header:
        return False
    pairs = [(k, v) for k, values in params.items() for v in values] if isinstance(params, Mapping) else list(params)
    return any(hmac.compare_digest(twilio_signature(auth_token, candidate, pairs), header.strip())
               for candidate in _port_variants(url))
