"""Email addresses and redirect paths from users: one strict normal form, or refused."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import unquote

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

# Dot-atom local part and a dotted domain: no quotes, comments, spaces, commas, angle brackets or
# CR/LF. Quoted local parts ("a@evil.test"@victim.test) and address lists are where parsers
# disagree about the recipient, so they are refused instead of "understood".
_LOCAL = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})+")
EMAIL_ERROR = "email_address"


def normalize_email(value: str) -> str:
    """The one normalized recipient for `value` (trimmed, lower-case), or PydanticCustomError."""
    candidate = value.strip().lower()
    if len(candidate) > 254 or not _EMAIL.fullmatch(candidate):
        raise PydanticCustomError(EMAIL_ERROR, "must be one plain email address like name@example.com")
    return candidate


EmailAddress = Annotated[str, AfterValidator(normalize_email)]


def safe_next_path(value: str | None) -> str | None:
    """A same-site relative path to return to after sign-in, or None when it is not plainly one."""
    if not value or len(value) > 512:
        return None
    decoded = value
    for _ in range(3):  # %2F%2Fevil, %252F%252Fevil: judge what a browser would finally follow
        decoded = unquote(decoded)
    for text in (value, decoded):
        if not text.startswith("/") or text.startswith(("//", "/\\")):
            return None
        if "\\" in text or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
            return None
        if ":" in text.split("?", 1)[0].split("#", 1)[0]:
            return None  # no scheme-like segments (/javascript:..., /https://evil)
    return value
