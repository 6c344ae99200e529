"""Rows of a CSV import: parsing the file, reading cells by type, validating rows, bulk reference checks.

Problems are kept per row (number, column, fixed message), never with the cell's text: the response
tells the importer which cell to fix, and nothing of the file can reach a log line.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from chalicelib import errors
from chalicelib.db.types import Conn

Definitions = Mapping[str, tuple[str, list[str], bool]]
MAX_ROWS = 10_000
ROW = "(row)"  # the field of a problem that is about the whole row


class RowError(BaseModel):
    """Why one row was not imported."""

    row: int
    field: str
    message: str


@dataclass(frozen=True)
class Sheet:
    """A parsed CSV: the header's columns and each data row's non-empty cells, numbered from 1."""

    columns: tuple[str, ...]
    rows: list[tuple[int, dict[str, str]]]
    errors: list[RowError] = field(default_factory=list)


# ---- CSV -----------------------------------------------------------------------------------------


def parse_csv(raw: bytes, *, max_rows: int = MAX_ROWS) -> Sheet:
    """The header and rows of a UTF-8 CSV body (400 when it is not one, 413 above `max_rows` rows)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise errors.BadRequest("the body is not UTF-8 text") from None
    if "\x00" in text:
        # PostgreSQL text cannot hold NUL; refuse the file rather than fail in the middle of the write.
        raise errors.BadRequest("the CSV contains a NUL character")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header or not any(cell.strip() for cell in header):
            raise errors.BadRequest("the CSV needs a header row naming its columns")
        columns = tuple(cell.strip().lower() for cell in header)
        if len(set(columns)) != len(columns) or "" in columns:
            raise errors.BadRequest("the header row names a column twice or has an empty column name")
        rows: list[tuple[int, dict[str, str]]] = []
        problems: list[RowError] = []
        width = len(columns)
        counted = 0
        # Numbered by position after the header, blank records included, so that row N is the file's
        # line N + 1 (when no quoted cell spans lines) even though blank records are skipped.
        for number, record in enumerate(reader, start=1):
            if not any(cell.strip() for cell in record):
                continue  # a blank line or a row of empty cells (spreadsheet exports) is no row
            counted += 1
            if counted > max_rows:
                raise errors.PayloadTooLarge(f"an import holds at most {max_rows} rows")
            if len(record) > width:
                problems.append(RowError(row=number, field=ROW, message=f"has more cells than the {width} "
                                                                          "columns of the header"))
                continue
            rows.append((number, {columns[i]: value.strip() for i, value in enumerate(record) if value.strip()}))
    except csv.Error:
        # No parser message: it may quote the offending text.
        raise errors.BadRequest(f"the CSV is malformed near line {reader.line_num}") from None
    return Sheet(columns, rows, problems)


# ---- cells to values -----------------------------------------------------------------------------

_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")
INTEGER = re.compile(r"^-?\d+$")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def custom_cell(field_type: str, text: str) -> Any:
    """A custom field's CSV text as the JSON value the field validates (ValueError saying why not)."""
    if field_type == "number":
        if not _NUMBER.match(text):
            raise ValueError("must be a number like 12 or 12.5")
        return int(text) if INTEGER.match(text) else float(text)
    if field_type == "boolean":
        lowered = text.lower()
        if lowered not in _TRUE | _FALSE:
            raise ValueError("must be true or false")
        return lowered in _TRUE
    if field_type == "multi_select":
        return [part.strip() for part in text.split(";") if part.strip()]
    if field_type == "currency":
        amount, _, code = text.partition(" ")
        if not INTEGER.match(amount) or not code.strip():
            raise ValueError("must be integer minor units and a currency code, like 12500 EUR")
        return {"amount_minor": int(amount), "currency": code.strip().upper()}
    return text


def split_cells(cells: Mapping[str, str], definitions: Definitions, number: int,
                problems: list[RowError]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A row's plain columns and its custom values (typed by their definitions)."""
    plain: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for column, text in cells.items():
        if not column.startswith("custom."):
            plain[column] = text
            continue
        key = column.removeprefix("custom.")
        try:
            custom[key] = custom_cell(definitions[key][0], text)
        except ValueError as exc:
            problems.append(RowError(row=number, field=column, message=str(exc)))
    return plain, custom


def model_errors(exc: ValidationError, number: int, columns: Mapping[str, str] | None = None) -> list[RowError]:
    """A pydantic failure as row errors naming the column (never quoting the value)."""
    found = []
    for problem in exc.errors():
        path = ".".join(str(part) for part in problem["loc"]) or ROW
        path = (columns or {}).get(path, path)
        found.append(RowError(row=number, field=path, message=problem["msg"]))
    return found


def custom_errors(exc: errors.ValidationFailed, number: int) -> list[RowError]:
    """custom_fields.check's failure as row errors."""
    return [RowError(row=number, field=e.field, message=e.message) for e in exc.errors]


def check_header(columns: Sequence[str], allowed: Iterable[str], definitions: Definitions) -> None:
    """Every column is one of the object's or a defined custom field's (422 naming the others)."""
    known = set(allowed)
    unknown = [c for c in columns if c not in known and not (c.startswith("custom.")
                                                                and c.removeprefix("custom.") in definitions)]
    if unknown:
        raise errors.ValidationFailed("the header names columns this object does not have", errors=[
            errors.FieldError(c, "no such column" if not c.startswith("custom.") else "no such custom field",
                              "unknown_column") for c in unknown])


def existing_ids(conn: Conn, query: str, ids: set[uuid.UUID]) -> Callable[[], set[uuid.UUID]]:
    """Queue one `id = ANY(...)` lookup (a named query of crm/queries.sql, import_existing_*); call the result
    for the ids that exist in this workspace."""
    if not ids:
        return set
    cursor = conn.execute(query, (list(ids),))
    return lambda: {row[0] for row in cursor.fetchall()}


@dataclass
class Candidate:
    """A row that parsed: its number, validated model, typed custom values and the problems found so far."""

    number: int
    model: Any
    custom: dict[str, Any]
    problems: list[RowError] = field(default_factory=list)
    placement: dict[str, Any] = field(default_factory=dict)  # leads: pipeline_id, stage_id, status


def parse_rows(sheet: Sheet, definitions: Definitions, model: type[BaseModel],
               build: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
               ) -> tuple[list[Candidate], list[RowError]]:
    """Validate every row with `model`; rows that fail are returned as errors, the rest as candidates."""
    good: list[Candidate] = []
    bad: list[RowError] = list(sheet.errors)
    for number, cells in sheet.rows:
        problems: list[RowError] = []
        plain, custom = split_cells(cells, definitions, number, problems)
        data = build(plain) if build is not None else plain
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            problems.extend(model_errors(exc, number, MONEY_COLUMNS))
            parsed = None
        if problems or parsed is None:
            bad.extend(problems)
            continue
        good.append(Candidate(number, parsed, custom))
    return good, bad


MONEY_COLUMNS = {"value.amount_minor": "value_amount_minor", "value.currency": "value_currency",
                 "value": "value_amount_minor"}


def check_reference(candidates: Iterable[Candidate], attribute: str, found: set[uuid.UUID]) -> None:
    """Mark rows whose reference is not a record of this workspace (another's looks like none at all)."""
    for candidate in candidates:
        value = getattr(candidate.model, attribute)
        if value is not None and value not in found:
            candidate.problems.append(RowError(row=candidate.number, field=attribute, message="not found"))


def referenced(candidates: Iterable[Candidate], attribute: str) -> set[uuid.UUID]:
    """Distinct non-null ids of one reference column."""
    return {value for c in candidates if (value := getattr(c.model, attribute)) is not None}


def finish(candidates: list[Candidate], bad: list[RowError]) -> tuple[list[Candidate], list[RowError]]:
    """The rows still good, and every problem sorted by row."""
    good = [c for c in candidates if not c.problems]
    bad = bad + [p for c in candidates for p in c.problems]
    bad.sort(key=lambda e: e.row)
    return good, bad
