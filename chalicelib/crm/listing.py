"""List semantics shared by every CRM list route: limit, signed cursor, sort allowlist, q, filters."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from chalicelib import errors, pagination


@dataclass(frozen=True)
class Parser:
    """A query parameter's parser (400 naming the parameter on a bad value) and its JSON Schema."""

    convert: Callable[[str], Any]
    schema: Mapping[str, Any]

    def __call__(self, raw: str) -> Any:
        return self.convert(raw)


def parse_uuid(name: str) -> Parser:
    """A filter parser for an id (400 naming the parameter when it is not one)."""
    def parse(raw: str) -> Any:
        try:
            return uuid.UUID(raw)
        except ValueError:
            raise errors.BadRequest(f"{name} must be an id") from None
    return Parser(parse, {"type": "string", "format": "uuid"})


def parse_datetime(name: str) -> Parser:
    """A filter parser for an RFC 3339 timestamp with a timezone."""
    def parse(raw: str) -> Any:
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            value = None
        if value is None or value.tzinfo is None:
            raise errors.BadRequest(f"{name} must be an RFC 3339 timestamp with a timezone")
        return value
    return Parser(parse, {"type": "string", "format": "date-time"})


def parse_choice(name: str, choices: frozenset[str]) -> Parser:
    """A filter parser for one of a fixed set of words."""
    def parse(raw: str) -> Any:
        if raw not in choices:
            raise errors.BadRequest(f"{name} must be one of {', '.join(sorted(choices))}")
        return raw
    return Parser(parse, {"type": "string", "enum": sorted(choices)})


@dataclass(frozen=True)
class Filter:
    """`?name=value` compared with a trusted SQL expression using `op`."""

    expression: str
    parse: Parser
    op: str = "="


@dataclass(frozen=True)
class Sort:
    """A sortable key: a trusted SQL expression, its default direction and its JSON-able cursor form."""

    expression: str
    descending: bool
    to_cursor: Callable[[Any], Any] = field(default=lambda v: v.isoformat() if isinstance(v, (datetime, date)) else v)
    from_cursor: Callable[[Any], Any] = field(default=lambda v: v)


def _from_iso(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


TIME_SORT_DESC = {"to_cursor": lambda v: v.isoformat(), "from_cursor": _from_iso}


def time_sort(column: str) -> Sort:
    """Newest first by a timestamptz column."""
    return Sort(column, True, **TIME_SORT_DESC)


def text_sort(column: str) -> Sort:
    """A to Z by a text column."""
    return Sort(column, False)


@dataclass(frozen=True)
class ListSpec:
    """What a list route accepts."""

    resource: str
    sorts: Mapping[str, Sort]
    default_sort: str
    filters: Mapping[str, Filter]
    search: bool = True
    custom_select_filters: bool = True
    created_bounds: bool = True  # created_after / created_before (a created_at column)
    # The records' words are in search_terms under this object (migration 0015): q is served by its index.
    search_object: str | None = None


@dataclass
class ListQuery:
    """A parsed list request: WHERE conditions and params, ORDER BY, LIMIT and the cursor binding."""

    conditions: list[sql.Composable]
    params: dict[str, Any]
    sort: Sort
    sort_key: str
    limit: int
    binding: str


def parse_list(spec: ListSpec, query: Mapping[str, str], *, tenant: uuid.UUID) -> ListQuery:
    """Turn query parameters into a ListQuery; every unknown or malformed parameter is a 400."""
    allowed = {"limit", "cursor", "sort", *spec.filters, *(("q",) if spec.search else ()),
               *(("created_after", "created_before") if spec.created_bounds else ())}
    # Values that PostgreSQL cannot store (NUL, lone surrogates) were refused by inputs.query_params.
    for name in query:
        if name not in allowed and not (spec.custom_select_filters and name.startswith("custom.")):
            raise errors.BadRequest(f"unknown query parameter {name}")
    limit = pagination.parse_limit(query.get("limit"))
    sort_key = query.get("sort", spec.default_sort)
    if sort_key not in spec.sorts:
        raise errors.BadRequest(f"sort must be one of {', '.join(sorted(spec.sorts))}")
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for index, (name, flt) in enumerate(sorted(spec.filters.items())):
        if name in query:
            params[f"f{index}"] = flt.parse(query[name])
            conditions.append(sql.SQL(f"{flt.expression} {flt.op} %(f{index})s"))
    for bound, op in (("created_after", ">"), ("created_before", "<")):
        if bound in query:
            params[bound] = parse_datetime(bound)(query[bound])
            conditions.append(sql.SQL(f"created_at {op} %({bound})s"))
    if spec.search and query.get("q"):
        conditions += _search(spec, query["q"], params)
    for index, name in enumerate(sorted(n for n in query if n.startswith("custom."))):
        key = name.removeprefix("custom.")
        if not key.replace("_", "").isalnum():
            raise errors.BadRequest(f"{name} is not a custom field")
        # custom @> {"key": "value"} matches a select field's value (and a multi_select member).
        params[f"c{index}"] = Jsonb({key: query[name]})
        params[f"m{index}"] = Jsonb({key: [query[name]]})
        conditions.append(sql.SQL(f"(custom @> %(c{index})s OR custom @> %(m{index})s)"))
    # JSON, not "k=v&...": a value holding "&" or "=" must not read as another filter.
    canonical = json.dumps(sorted((k, v) for k, v in query.items() if k not in ("cursor", "limit")))
    binding = f"{spec.resource}|{tenant}|{sort_key}|{canonical}"
    sort = spec.sorts[sort_key]
    if query.get("cursor"):
        position = pagination.decode(query["cursor"], binding=binding)
        if len(position) != 2:
            raise errors.BadRequest("the cursor is invalid for this list")
        params["cursor_value"] = sort.from_cursor(position[0])
        params["cursor_id"] = str(position[1])
        op = "<" if sort.descending else ">"
        conditions.append(sql.SQL(f"({sort.expression}, id) {op} (%(cursor_value)s, %(cursor_id)s::uuid)"))
    return ListQuery(conditions, params, sort, sort_key, limit, binding)


# What app.search_words (migration 0015) splits at: ASCII white space and punctuation, and common Unicode
# spaces, dashes and quotes, as explicit code points (no locale-dependent class). Both sides must agree.
WORD_SEPARATORS = re.compile(r"[\x09-\x0d\x20-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e\u00a0\u00ab\u00bb\u2000-\u200b"
                             r"\u2010-\u2015\u2018-\u201f\u2026\u202f\u205f\u3000-\u3002\uff0c]+")
MAX_SEARCH_WORDS = 8


def search_words(text: str) -> list[str]:
    """The distinct words of a query as app.search_words splits them (lower-casing and the 100-character
    cut are left to SQL, which applies them to the stored words: one lower() for both sides)."""
    return list(dict.fromkeys(w for w in WORD_SEPARATORS.split(text) if w))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _search(spec: ListSpec, raw: str, params: dict[str, Any]) -> list[sql.Composable]:
    text = raw.strip()
    if len(text) > 200:
        raise errors.BadRequest("q must be at most 200 characters")
    words = search_words(text) if spec.search_object else []
    if len(words) > MAX_SEARCH_WORDS:
        raise errors.BadRequest(f"q may have at most {MAX_SEARCH_WORDS} words")
    if not words:
        # Only punctuation (or a list without a word index): a substring of the search column, unindexed.
        params["q"] = _like(text.lower())
        return [sql.SQL("search LIKE %(q)s")]
    # A record matches when, for each word of q, one of its words starts with it. ^@ is leakproof, so
    # under RLS the prefix is a range of the (tenant_id, object, term) btree (see migration 0015).
    params["search_object"] = spec.search_object
    found: list[sql.Composable] = []
    for index, word in enumerate(words):
        params[f"w{index}"] = word
        found.append(sql.SQL("(tenant_id, id) IN (SELECT tenant_id, record_id FROM search_terms"
                             " WHERE object = %(search_object)s AND term ^@ left(lower({}), 100))").format(
            sql.Placeholder(f"w{index}")))
    # A piece of q with punctuation in it (an email, a domain, "50%") must also appear as written: checked
    # on the few records the words found, so "row3@example.com" does not also find "row30@example.com".
    for index, piece in enumerate(p for p in text.split() if search_words(p) != [p]):
        params[f"p{index}"] = _like(piece)
        found.append(sql.SQL("search LIKE lower({})").format(sql.Placeholder(f"p{index}")))
    return found


def order_by(query: ListQuery) -> sql.Composable:
    """ORDER BY the sort key then id, in the sort's direction."""
    direction = "DESC" if query.sort.descending else "ASC"
    return sql.SQL(f" ORDER BY {query.sort.expression} {direction}, id {direction}")


def next_cursor(query: ListQuery, rows: list[tuple[Any, ...]], sort_value_index: int) -> str | None:
    """The cursor after the last row shown, when more rows exist (rows holds limit + 1)."""
    if len(rows) <= query.limit:
        return None
    last = rows[query.limit - 1]
    return pagination.encode([query.sort.to_cursor(last[sort_value_index]), str(last[0])], binding=query.binding)


def page_parameters() -> list[dict[str, Any]]:
    """OpenAPI parameters of a paged list: limit and cursor."""
    return [
        {"name": "limit", "in": "query", "description": f"Page size, at most {pagination.MAX_LIMIT} (400 above).",
         "schema": {"type": "integer", "minimum": 1, "maximum": pagination.MAX_LIMIT,
                    "default": pagination.DEFAULT_LIMIT}},
        {"name": "cursor", "in": "query", "description": "The previous page's next_cursor (opaque; bound to the "
         "workspace, filters and sort: 400 anywhere else).", "schema": {"type": "string"}},
    ]


def list_parameters(spec: ListSpec) -> list[dict[str, Any]]:
    """OpenAPI parameters of a list route with this spec: exactly what parse_list accepts."""
    found = page_parameters()
    found.append({"name": "sort", "in": "query", "description": "Sort key (ties broken by id).",
                  "schema": {"type": "string", "enum": sorted(spec.sorts), "default": spec.default_sort}})
    if spec.search:
        found.append({"name": "q", "in": "query", "description": "Case-insensitive search of names, emails, titles.",
                      "schema": {"type": "string", "maxLength": 200}})
    for name, flt in sorted(spec.filters.items()):
        found.append({"name": name, "in": "query", "schema": dict(flt.parse.schema)})
    for bound in ("created_after", "created_before") if spec.created_bounds else ():
        found.append({"name": bound, "in": "query", "schema": {"type": "string", "format": "date-time"}})
    return found
