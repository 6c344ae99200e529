"""CSV import of contacts, companies and leads.

Every row is validated in Python (the resources' own pydantic models and custom-field rules), references
are checked in bulk (one query per referenced table), and all good rows are written by ONE statement
(INSERT ... SELECT FROM unnest(arrays)). A bad row is reported with its number (1 = first data row) and
field, and never stops the good ones. Matching:

* contacts: a row whose email matches a contact of the workspace (case-insensitively) updates it; its
  non-empty cells replace the stored values, empty cells keep them, custom values are merged. Other rows
  create contacts. An email twice in one file: the first row wins, later ones are errors.
* companies: always created (a domain is not unique: several companies may share one, and guessing which
  to update would be worse than a duplicate). Retries are made safe by Idempotency-Key, not by matching.
* leads: always created, through the lead module's rules (stage defaults, stage/pipeline agreement,
  status from the stage's kind, a stage-history row per lead).

Cells are trimmed; an empty cell is no value. Custom columns are `custom.<key>`; their text is read by
the field's type: number `12.5`, boolean `true/false/yes/no/1/0`, multi_select `a;b`, currency
`12500 EUR` (integer minor units, then the ISO 4217 code), everything else as written.
Contents never reach a log line: errors carry row numbers, column names and fixed messages only.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from chalicelib import audit, errors
from chalicelib.crm import companies, contacts, custom_fields
from chalicelib.crm.companies import CompanyCreate
from chalicelib.crm.contacts import ContactCreate
from chalicelib.crm.store import db_errors

Conn = Connection[TupleRow]
Definitions = Mapping[str, tuple[str, list[str], bool]]
MAX_ROWS = 10_000
ROW = "(row)"  # the field of a problem that is about the whole row


class RowError(BaseModel):
    """Why one row was not imported."""

    row: int
    field: str
    message: str


class ImportResult(BaseModel):
    """What an import did: records created, records updated, rows refused."""

    created: int
    updated: int
    errors: list[RowError]


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
        number = 0
        width = len(columns)
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank lines (a trailing newline, spacing) are not rows
            number += 1
            if number > max_rows:
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
_INTEGER = re.compile(r"^-?\d+$")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def custom_cell(field_type: str, text: str) -> Any:
    """A custom field's CSV text as the JSON value the field validates (ValueError saying why not)."""
    if field_type == "number":
        if not _NUMBER.match(text):
            raise ValueError("must be a number like 12 or 12.5")
        return int(text) if _INTEGER.match(text) else float(text)
    if field_type == "boolean":
        lowered = text.lower()
        if lowered not in _TRUE | _FALSE:
            raise ValueError("must be true or false")
        return lowered in _TRUE
    if field_type == "multi_select":
        return [part.strip() for part in text.split(";") if part.strip()]
    if field_type == "currency":
        amount, _, code = text.partition(" ")
        if not _INTEGER.match(amount) or not code.strip():
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
    """Queue one `id = ANY(...)` lookup; call the result for the ids that exist in this workspace."""
    if not ids:
        return set
    cursor = conn.execute(query, (list(ids),))
    return lambda: {row[0] for row in cursor.fetchall()}


MEMBERS = "SELECT user_id FROM memberships WHERE tenant_id = app.current_tenant() AND user_id = ANY(%s)"
COMPANIES = "SELECT id FROM companies WHERE id = ANY(%s)"
CONTACTS = "SELECT id FROM contacts WHERE id = ANY(%s)"


@dataclass
class Candidate:
    """A row that parsed: its number, validated model, typed custom values and the problems found so far."""

    number: int
    model: Any
    custom: dict[str, Any]
    problems: list[RowError] = field(default_factory=list)


def parse_rows(sheet: Sheet, definitions: Definitions, model: type[BaseModel],
               build: Callable[[dict[str, Any], int, list[RowError]], dict[str, Any]] | None = None,
               ) -> tuple[list[Candidate], list[RowError]]:
    """Validate every row with `model`; rows that fail are returned as errors, the rest as candidates."""
    good: list[Candidate] = []
    bad: list[RowError] = list(sheet.errors)
    for number, cells in sheet.rows:
        problems: list[RowError] = []
        plain, custom = split_cells(cells, definitions, number, problems)
        data = build(plain, number, problems) if build is not None else plain
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


# ---- contacts ------------------------------------------------------------------------------------

CONTACT_COLUMNS = ("first_name", "last_name", "email", "phone", "company_id", "owner_id")
_WRITE_CONTACTS = """
WITH written AS (
    INSERT INTO contacts AS c (tenant_id, first_name, last_name, email, phone, company_id, owner_id, custom)
    SELECT app.current_tenant(), * FROM unnest(%(first_name)s::text[], %(last_name)s::text[], %(email)s::text[],
                                               %(phone)s::text[], %(company_id)s::uuid[], %(owner_id)s::uuid[],
                                               %(custom)s::jsonb[])
    ON CONFLICT (tenant_id, lower(email)) WHERE email IS NOT NULL DO UPDATE SET
        first_name = coalesce(EXCLUDED.first_name, c.first_name),
        last_name = coalesce(EXCLUDED.last_name, c.last_name),
        phone = coalesce(EXCLUDED.phone, c.phone),
        company_id = coalesce(EXCLUDED.company_id, c.company_id),
        owner_id = coalesce(EXCLUDED.owner_id, c.owner_id),
        custom = c.custom || EXCLUDED.custom,
        updated_at = %(now)s
    RETURNING (xmax = 0) AS created
)
SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM written
"""


def import_contacts(conn: Conn, sheet: Sheet, *, now: datetime) -> ImportResult:
    """Create or update (matched by email) one contact per good row."""
    definitions = custom_fields.definitions(conn, "contact")
    check_header(sheet.columns, CONTACT_COLUMNS, definitions)
    candidates, bad = parse_rows(sheet, definitions, ContactCreate)
    first_row: dict[str, int] = {}
    for candidate in candidates:
        email = candidate.model.email
        if email is None:
            continue
        if email in first_row:
            candidate.problems.append(RowError(row=candidate.number, field="email",
                                               message=f"the same email is in row {first_row[email]}"))
        else:
            first_row[email] = candidate.number
    # Queued together: one round trip for every lookup.
    found_companies = existing_ids(conn, COMPANIES, referenced(candidates, "company_id"))
    found_owners = existing_ids(conn, MEMBERS, referenced(candidates, "owner_id"))
    stored = _stored_custom(conn, list(first_row)) if definitions else dict
    check_reference(candidates, "company_id", found_companies())
    check_reference(candidates, "owner_id", found_owners())
    current = stored()
    for candidate in candidates:
        if candidate.problems:
            continue
        email = candidate.model.email
        before = current.get(email, {}) if email is not None else {}
        try:
            merged = custom_fields.check(definitions, {**before, **candidate.custom})
        except errors.ValidationFailed as exc:
            candidate.problems.extend(custom_errors(exc, candidate.number))
            continue
        # Only this row's keys are written (merged into the stored object by the statement itself).
        candidate.custom = {key: merged[key] for key in candidate.custom}
    good, bad = finish(candidates, bad)
    created = updated = 0
    if good:
        columns: dict[str, list[Any]] = {name: [getattr(c.model, name) for c in good] for name in CONTACT_COLUMNS}
        columns["custom"] = [Jsonb(c.custom) for c in good]
        with db_errors(contacts.TABLE):
            row = conn.execute(_WRITE_CONTACTS, {**columns, "now": now}).fetchone()
        assert row is not None
        created, updated = int(row[0]), int(row[1])
    return ImportResult(created=created, updated=updated, errors=bad)


def _stored_custom(conn: Conn, emails: list[str]) -> Callable[[], dict[str, dict[str, Any]]]:
    cursor = conn.execute("SELECT lower(email), custom FROM contacts WHERE lower(email) = ANY(%s)", (emails,))
    return lambda: {str(r[0]): dict(r[1]) for r in cursor.fetchall()}


# ---- companies -----------------------------------------------------------------------------------

COMPANY_COLUMNS = ("name", "domain")
_WRITE_COMPANIES = """
WITH written AS (
    INSERT INTO companies (tenant_id, name, domain, custom)
    SELECT app.current_tenant(), * FROM unnest(%(name)s::text[], %(domain)s::text[], %(custom)s::jsonb[])
    RETURNING 1
)
SELECT count(*) FROM written
"""


def import_companies(conn: Conn, sheet: Sheet, *, now: datetime) -> ImportResult:
    """Create one company per good row."""
    definitions = custom_fields.definitions(conn, "company")
    check_header(sheet.columns, COMPANY_COLUMNS, definitions)
    candidates, bad = parse_rows(sheet, definitions, CompanyCreate)
    for candidate in candidates:
        try:
            candidate.custom = custom_fields.check(definitions, candidate.custom)
        except errors.ValidationFailed as exc:
            candidate.problems.extend(custom_errors(exc, candidate.number))
    good, bad = finish(candidates, bad)
    created = 0
    if good:
        values = {"name": [c.model.name for c in good],
                  "domain": [c.model.domain.lower() if c.model.domain else None for c in good],
                  "custom": [Jsonb(c.custom) for c in good]}
        with db_errors(companies.TABLE):
            row = conn.execute(_WRITE_COMPANIES, values).fetchone()
        assert row is not None
        created = int(row[0])
    return ImportResult(created=created, updated=0, errors=bad)


# ---- dispatch ------------------------------------------------------------------------------------

OBJECTS: dict[str, Callable[..., ImportResult]] = {"contacts": import_contacts, "companies": import_companies}


def run(conn: Conn, *, tenant_id: uuid.UUID, object_name: str, sheet: Sheet, actor: audit.Actor,
        now: datetime) -> ImportResult:
    """Import `sheet` as `object_name` records in the caller's tenant transaction; audit the counts."""
    importer = OBJECTS.get(object_name)
    if importer is None:
        raise errors.NotFound("not found")
    result = importer(conn, sheet, now=now)
    # Counts only: never a value of a row.
    audit.record(conn, tenant_id=tenant_id, action="import.completed", actor=actor, target_type="import",
                 details={"object": object_name, "created": result.created, "updated": result.updated,
                          "errors": len(result.errors)})
    return result
