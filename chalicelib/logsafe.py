"""The one scrubber for log lines and Sentry events: redact by key (recursively) and by value pattern."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

REDACTED: Final = "[redacted]"
# The one key whose mapping holds counts keyed by table or kind ({"sessions": 3}): see _scrub_count.
COUNTS_KEY: Final = "counts"
_MAX_DEPTH: Final = 12
_MAX_QUOTED: Final = 4096

# Keys we emit ourselves; their values are structural (ids, timings, names of routes and jobs) and still pass
# through scrub_text. Without this list "msg" or "status_code" would be eaten by the fragments below.
SAFE_KEYS: Final = frozenset({
    "ts", "level", "logger", "msg", "event", "method", "route", "status", "status_code", "duration_ms",
    "request_id", "exc_type", "exc", "count", "table", "tenant_id", "workspace_id", "job", "version", "stage",
})

# Substring fragments, matched against the normalised key (lowercase, camelCase split, non-alphanumerics
# -> "_"). Substrings rather than exact names because keys come in endless variants ("first_name",
# "display_name", "email_address", "x-api-key", "set-cookie", "auth_token", "session_id", "message_text").
# We accept over-redaction ("context" holds "text", "content_type" holds "content", "country_code" holds
# "code", "author" holds "auth"): a lost debugging detail is cheap, a leaked token or address is not.
_FRAGMENTS: Final = (
    "password", "passwd", "passphrase", "pwd", "secret", "token", "api_key", "apikey", "access_key",
    "private_key", "privatekey", "authorization", "auth", "cookie", "session", "csrf", "xsrf", "credential",
    "signature", "dsn", "otp", "code", "magic", "email", "e_mail", "phone", "mobile", "address", "addr",
    "name", "body", "message", "text", "content", "subject", "description", "note", "comment", "forwarded",
)
# Short fragments that would match inside ordinary words ("ip" in "membership", "sid" in "inside") only
# count as a whole "_"-separated segment: "ip", "client_ip", "ip_address", "account_sid", "__Host-sid".
_SEGMENTS: Final = frozenset({"ip", "ips", "ipv4", "ipv6", "sid", "pin", "dob"})

_FRAGMENT_RE: Final = re.compile("|".join(re.escape(f) for f in _FRAGMENTS))
_CAMEL_RE: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM_RE: Final = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    """True when a mapping key names data that must never be logged or sent to Sentry."""
    norm = _NON_ALNUM_RE.sub("_", _CAMEL_RE.sub("_", key).lower()).strip("_")
    if norm in SAFE_KEYS:
        return False
    return bool(_FRAGMENT_RE.search(norm)) or not _SEGMENTS.isdisjoint(norm.split("_"))


def _kv(match: re.Match[str]) -> str:
    # "token=…", "?code=…", "'email': '…'" inside free text (query strings, reprs, conninfo strings):
    # the key decides, exactly as for dict keys, so a repr of an object is as safe as the object itself.
    key = match.group("k1") or match.group("k2")
    if not is_sensitive_key(key):
        return match.group(0)
    value = match.group("v")
    quote = value[0] if value[0] in "'\"" else ""
    return match.group(0)[: match.start("v") - match.start()] + quote + REDACTED + quote


_WORD = r"A-Za-z0-9_-"
_ENTROPY_RUN_RE: Final = re.compile(rf"(?<![{_WORD}])[{_WORD}]{{32,}}(?![{_WORD}])")
_UUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _entropy(match: re.Match[str]) -> str:
    # Random tokens (secrets.token_urlsafe: magic links, session ids, CSRF tokens) mix upper case, lower
    # case and digits; identifiers we log (snake_case names, UUIDs) do not have all three.
    run = match.group(0)
    mixed = any(c.isdigit() for c in run) and any(c.islower() for c in run) and any(c.isupper() for c in run)
    return REDACTED if mixed and not _UUID_RE.fullmatch(run) else run


_DATE_OR_DECIMAL_RE: Final = re.compile(r"\d{4}[-.]\d{1,2}[-.]\d{1,2}|\d{1,2}[-.]\d{1,2}[-.]\d{4}|\d+\.\d+")


def _phone(match: re.Match[str]) -> str:
    # Formatted numbers need 8+ digits; dates ("2024-05-01") and decimals ("1234.5678") look the same.
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    return REDACTED if digits >= 8 and not _DATE_OR_DECIMAL_RE.fullmatch(text) else text


# Every pattern starts with a look-behind that refuses to begin inside a run of the same characters: the
# engine then tries each start position in O(1), so a hostile 1 MB line costs linear time, not quadratic.
_PATTERNS: Final[tuple[tuple[re.Pattern[str], Any], ...]] = (
    # user:password@ in URLs and DSNs (postgresql://app:secret@host/db).
    (re.compile(r"(?<=://)[^\s/@:]+:[^\s/@]+@"), REDACTED + "@"),
    # Authorization header values wherever they end up.
    (re.compile(r"\b(Bearer|Basic|bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # JWTs: three base64url segments, the header always starts with eyJ ('{"').
    (re.compile(rf"(?<![{_WORD}])eyJ[{_WORD}]+\.[{_WORD}]+\.[{_WORD}]*"), REDACTED),
    # Provider keys with a recognisable prefix: Stripe-style, webhook signing secrets, AWS access key ids.
    (re.compile(r"(?<![A-Za-z0-9])(?:whsec_|[spr]k_(?:live|test)_)[A-Za-z0-9_]+"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"), REDACTED),
    (re.compile(
        r"""(?<![\w.-])(?:(?P<k1>[A-Za-z_][\w.-]{0,63})=|(?P<q>["'])(?P<k2>[A-Za-z_][\w.-]{0,63})(?P=q)\s*:\s*)"""
        # "[redacted]" first, so that scrubbing twice (logsafe then Sentry's before_send) is a no-op.
        rf"""(?P<v>\[redacted\]|"[^"\n]{{0,{_MAX_QUOTED}}}"|'[^'\n]{{0,{_MAX_QUOTED}}}'|[^\s&;,'"}}\])]+)"""),
     _kv),
    # Postgres DETAIL "Key (email)=(x@y.z) already exists.": the parenthesised values are row data.
    (re.compile(r"\)=\([^\n]*\)"), ")=(" + REDACTED + ")"),
    (re.compile(r"(?<![\w.+%-])[\w.+%-]+@[\w-]+(?:\.[\w-]+)+"), REDACTED),
    # Twilio SIDs (AC/SK/SM/MG… + 32 hex), Twilio auth tokens, digests: any 32+ hex run. Hyphenated UUIDs
    # (request ids) survive because no segment reaches 32 characters.
    (re.compile(r"(?<![A-Za-z0-9])(?:[A-Z]{2})?[0-9a-fA-F]{32,}(?![A-Za-z0-9])"), REDACTED),
    (_ENTROPY_RUN_RE, _entropy),
    # Phones: E.164 (+14155550123) or 8+ digits in groups ("(415) 555-0123", "+44 20 7946 0958").
    (re.compile(
        r"(?<![\w.+-])(?:\+[1-9]\d{7,14}(?!\d)"
        r"|(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,5})"
        r"(?!\w)(?![.:/-]\w)"), _phone),
)


# Short snake_case identifiers (column and field names, actions, routes' parts) cannot match any pattern
# above: no separators, no "@", "=", "+" or upper case, and too short for a 32-character hex run. The
# provider-key prefixes are the one lower-case shape, so they are excluded. A property test holds this
# shortcut to the full scrub, so a new pattern that could match an identifier fails the suite.
_IDENTIFIER_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,30}")
_KEY_PREFIXES: Final = ("whsec_", "k_live_", "k_test_")


def scrub_text(text: str) -> str:
    """Redact secrets and personal data recognisable by their shape from free text."""
    if _IDENTIFIER_RE.fullmatch(text) and not any(prefix in text for prefix in _KEY_PREFIXES):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub_key(key: Any) -> Any:
    # Keys can carry data too ({"a@b.c": 1}); non-JSON keys (tuples…) become strings so json.dumps works.
    if isinstance(key, str):
        return scrub_text(key)
    if key is None or isinstance(key, bool | int | float):
        return key
    return scrub_text(str(key))


def scrub(value: Any, *, _depth: int = 0) -> Any:
    """Return a redacted copy: sensitive keys blanked, strings pattern-scrubbed, bytes dropped."""
    if _depth > _MAX_DEPTH:
        return REDACTED  # deep structures are usually payloads; cutting them also bounds the work per line
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return REDACTED  # raw bodies and ciphertexts: never worth the risk of decoding them into a log
    if isinstance(value, Mapping):
        return {_scrub_key(k): _scrub_entry(str(k), v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v, _depth=_depth + 1) for v in value]
    if isinstance(value, BaseException):
        return scrub_exception(value)
    try:
        return scrub_text(str(value))
    except Exception:  # noqa: BLE001 - a broken __str__ must not take the log line (or the request) down
        return REDACTED


def _scrub_entry(key: str, value: Any, depth: int) -> Any:
    """One mapping entry: blanked under a sensitive key; under COUNTS_KEY, numbers pass under any key."""
    if key == COUNTS_KEY and isinstance(value, Mapping):
        return {_scrub_key(k): _scrub_count(str(k), v, depth + 1) for k, v in value.items()}
    return REDACTED if is_sensitive_key(key) else scrub(value, _depth=depth)


def _scrub_count(key: str, value: Any, depth: int) -> Any:
    # Jobs count rows per table, and table names such as login_tokens or sessions hold sensitive
    # fragments: under `counts`, an int (a bool is one) is a number of rows and passes whatever its key.
    # Only numbers: a string (a token filed by mistake under "sessions") is judged by its key as
    # anywhere else, so nothing a scanner would recognise as a credential gets through this door.
    if isinstance(value, int):
        return value
    return REDACTED if is_sensitive_key(key) else scrub(value, _depth=depth)


def _is_psycopg_error(exc: BaseException) -> bool:
    # By module name, so this module never imports psycopg (cold start) and catches psycopg_pool too.
    return any(cls.__module__.split(".")[0] in ("psycopg", "psycopg_pool") for cls in type(exc).__mro__)


def scrub_exception(exc: BaseException) -> str:
    """Describe an exception as "Type: scrubbed message"; psycopg errors only as "Type (sqlstate)"."""
    name = type(exc).__name__
    if _is_psycopg_error(exc):
        # psycopg messages quote row values ("DETAIL: Key (email)=(…)", "invalid input syntax … "…"").
        sqlstate = getattr(exc, "sqlstate", None)
        return f"{name} ({sqlstate})" if isinstance(sqlstate, str) and sqlstate else name
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - see scrub(): describing an error must never raise a new one
        message = ""
    return f"{name}: {scrub_text(message)}"
