"""What a request brings in: JSON bodies (bounded nesting, storable text), query parameters, If-Match.

Each reader answers a malformed input with its problem (400, 415, 422) and never echoes the value.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import Any, TypeVar

from chalice.app import Request
from pydantic import BaseModel, ValidationError

from chalicelib import errors

M = TypeVar("M", bound=BaseModel)
# Arrays and objects nest at most this deep in a JSON body. The parser recurses once per level, and
# about a thousand levels (a few KB of brackets) exhaust Python's stack: a 500 on every JSON route,
# sign-in included, for anyone. No document of this API comes near 64 levels.
MAX_JSON_DEPTH = 64
_JSON_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _media_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def is_json_media(request: Request) -> bool:
    """Whether the request says its body is JSON (application/json or a +json type)."""
    media = _media_type(request)
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def check_json_depth(raw: bytes) -> None:
    """400 when the JSON text nests arrays and objects deeper than MAX_JSON_DEPTH, before any parser sees it.

    Linear, at C speed: escapes are dropped (so \\" neither hides nor fakes a quote), the text inside
    strings is cut out (its brackets are text), the brackets left are summed as +1/-1, and the running
    maximum is the depth. A body with few brackets skips all of it. No backtracking regex: a body
    crafted against one (unterminated strings full of escapes) would take quadratic time. A NUL byte
    is refused too: UTF-8 JSON never holds one, UTF-16 and UTF-32 text (which json.loads would decode)
    always does, and its bytes would fool the scan.
    """
    if b"\x00" in raw:
        raise errors.BadRequest("the body is not valid UTF-8 JSON")
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    outside_strings = b"".join(_JSON_ESCAPE.sub(b"", raw).split(b'"')[::2])
    brackets = outside_strings.translate(None, _NOT_A_BRACKET)
    if brackets and max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > MAX_JSON_DEPTH:
        raise errors.BadRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(body)"


def raw_body(request: Request) -> bytes:
    """The request's body as bytes (what a parser reads and an Idempotency-Key's request hash covers)."""
    raw = request.raw_body or b""
    return raw.encode() if isinstance(raw, str) else raw


def parse_body(request: Request, model: type[M]) -> M:
    """Parse and validate a JSON body into `model` (415, 400, 422 as problems).

    The size limit (413) is enforced earlier, for every route, by the request middleware.
    """
    raw = raw_body(request)
    if _media_type(request) != "application/json":
        raise errors.UnsupportedMediaType("send the body as application/json")
    # Its nesting was bounded by the request middleware (chalicelib.api), before any view ran.
    try:
        document = json.loads(raw.decode("utf-8"))
    except ValueError:
        # UnicodeDecodeError, JSONDecodeError and an integer beyond Python's digit limit are all
        # ValueErrors. No parser message: it quotes the offending input.
        raise errors.BadRequest("the body is not valid UTF-8 JSON") from None
    try:
        parsed = model.model_validate(document)
    except ValidationError as exc:
        # Field paths and messages only; pydantic's `input` would echo (possibly personal) values.
        fields = [errors.FieldError(_field_path(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
        if any(f.code == "email_address" for f in fields):
            # An address that is not one plain recipient is a malformed request, not a field value.
            raise errors.BadRequest("an email address is not one plain address", errors=fields) from None
        raise errors.ValidationFailed("some fields are missing or invalid", errors=fields) from None
    # PostgreSQL text cannot hold NUL, and UTF-8 cannot carry a lone surrogate (JSON's "\ud800"): one
    # check for every route, a 422 naming the field, never a 500 from the driver refusing the value.
    bad = [errors.FieldError(_field_path(loc), "may not contain NUL characters or lone surrogates", "unstorable")
           for loc in _unstorable_at(document)]
    if bad:
        raise errors.ValidationFailed("text may not contain NUL characters or lone surrogates", errors=bad)
    return parsed


def storable(text: str) -> bool:
    """Whether PostgreSQL can store `text` (no NUL, valid UTF-8: no lone surrogate)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unstorable_at(value: Any, loc: tuple[int | str, ...] = ()) -> Iterator[tuple[int | str, ...]]:
    if isinstance(value, str):
        if not storable(value):
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if not storable(key):
                yield (*loc, "(a key)")  # not the key itself: the path must not carry it back
            else:
                yield from _unstorable_at(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable_at(item, (*loc, index))


def query_params(request: Request) -> dict[str, str]:
    """The query string as {name: value}. A name given twice is a 400: which of its values counts would be
    a guess (a filter or a limit quietly not being the one the client meant)."""
    params = request.query_params
    if not params:
        return {}
    repeated = sorted(name for name in params if len(params.getlist(name)) > 1)
    if repeated:
        raise errors.BadRequest(f"{repeated[0]} is given more than once")
    found = dict(params)
    if not all(storable(name) and storable(value) for name, value in found.items()):
        raise errors.BadRequest("a query parameter holds a NUL character or invalid UTF-8")
    return found


def if_match(request: Request) -> frozenset[str] | None:
    """The ETags the If-Match header names; None when it is absent or "*" (no precondition on the version).

    Parsed here, once: domain code compares row versions with the result and never sees header text.
    """
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    return frozenset(tag.strip() for tag in header.split(","))
