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

Every record written emits its webhook event (contact.created / contact.updated, company.created,
lead.created and a lead's placement events), one statement per event type, after the rows are written.

Cells are trimmed; an empty cell is no value. Custom columns are `custom.<key>`; their text is read by
the field's type: number `12.5`, boolean `true/false/yes/no/1/0`, multi_select `a;b`, currency
`12500 EUR` (integer minor units, then the ISO 4217 code), everything else as written.
Contents never reach a log line: errors carry row numbers, column names and fixed messages only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel

from chalicelib import audit, errors
from chalicelib.crm import companies, contacts, custom_fields, leads
from chalicelib.crm.api import Context, emit
from chalicelib.crm.companies import CompanyCreate
from chalicelib.crm.contacts import ContactCreate
from chalicelib.crm.import_rows import (
    INTEGER,
    MAX_ROWS,
    Candidate,
    RowError,
    Sheet,
    check_header,
    check_reference,
    custom_errors,
    existing_ids,
    finish,
    parse_csv,
    parse_rows,
    referenced,
)
from chalicelib.crm.store import db_errors
from chalicelib.db import queries
from chalicelib.db.types import Conn

__all__ = ["MAX_ROWS", "OBJECTS", "ImportResult", "RowError", "Sheet", "parse_csv", "run"]

Q = queries.load(__package__)


class ImportResult(BaseModel):
    """What an import did: records created, records updated, rows refused."""

    created: int
    updated: int
    errors: list[RowError]


# ---- contacts ------------------------------------------------------------------------------------

CONTACT_COLUMNS = ("first_name", "last_name", "email", "phone", "company_id", "owner_id")


def import_contacts(ctx: Context, sheet: Sheet) -> ImportResult:
    """Create or update (matched by email) one contact per good row."""
    conn = ctx.conn
    definitions = custom_fields.definitions(conn, "contact")
    check_header(sheet.columns, CONTACT_COLUMNS, definitions)
    candidates, bad = parse_rows(sheet, definitions, ContactCreate)
    emails = sorted({c.model.email for c in candidates if c.model.email is not None})
    # Queued together: one round trip for every lookup.
    found_companies = existing_ids(conn, Q["import_existing_companies"], referenced(candidates, "company_id"))
    found_owners = existing_ids(conn, Q["import_existing_members"], referenced(candidates, "owner_id"))
    stored_custom = _stored_custom(conn, emails) if definitions else dict
    check_reference(candidates, "company_id", found_companies())
    check_reference(candidates, "owner_id", found_owners())
    current = stored_custom()
    for candidate in candidates:
        if candidate.problems:
            continue
        email = candidate.model.email
        stored = current.get(email, {}) if email is not None else {}
        before = {key: value for key, value in stored.items() if key in definitions}
        try:
            merged = custom_fields.check(definitions, {**before, **candidate.custom})
        except errors.ValidationFailed as exc:
            candidate.problems.extend(custom_errors(exc, candidate.number))
            continue
        # Only this row's keys are written (merged into the stored object by the statement itself).
        candidate.custom = {key: merged[key] for key in candidate.custom}
    _refuse_repeated_emails(candidates)
    good, bad = finish(candidates, bad)
    created = updated = 0
    if good:
        columns: dict[str, list[Any]] = {name: [getattr(c.model, name) for c in good] for name in CONTACT_COLUMNS}
        columns["custom"] = [Jsonb(c.custom) for c in good]
        with db_errors(contacts.TABLE):
            row = conn.execute(Q["import_contacts_upsert"], {**columns, "now": ctx.now}).fetchone()
        assert row is not None
        created_ids, updated_ids = list(row[0]), list(row[1])
        emit(ctx, contacts.RESOURCE, "created", created_ids)
        emit(ctx, contacts.RESOURCE, "updated", updated_ids)
        created, updated = len(created_ids), len(updated_ids)
    return ImportResult(created=created, updated=updated, errors=bad)


def _refuse_repeated_emails(candidates: list[Candidate]) -> None:
    # After every other check: a row refused for its own reasons does not take its email away from a
    # later good row with the same address (that one is then the one imported).
    first_row: dict[str, int] = {}
    for candidate in candidates:
        email = candidate.model.email
        if email is None or candidate.problems:
            continue
        if email in first_row:
            candidate.problems.append(RowError(row=candidate.number, field="email",
                                               message=f"the same email is in row {first_row[email]}"))
        else:
            first_row[email] = candidate.number


def _stored_custom(conn: Conn, emails: list[str]) -> Callable[[], dict[str, dict[str, Any]]]:
    cursor = conn.execute(Q["import_contacts_custom_by_email"], (emails,))
    return lambda: {str(r[0]): dict(r[1]) for r in cursor.fetchall()}


# ---- companies -----------------------------------------------------------------------------------

COMPANY_COLUMNS = ("name", "domain")


def import_companies(ctx: Context, sheet: Sheet) -> ImportResult:
    """Create one company per good row."""
    conn = ctx.conn
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
            row = conn.execute(Q["import_companies_insert"], values).fetchone()
        assert row is not None
        emit(ctx, companies.RESOURCE, "created", list(row[0]))
        created = len(row[0])
    return ImportResult(created=created, updated=0, errors=bad)


# ---- leads --------------------------------------------------------------------------------------

LEAD_COLUMNS = ("title", "contact_id", "company_id", "pipeline_id", "stage_id", "owner_id", "value_amount_minor",
                "value_currency", "lost_reason", "expected_close_date")


def _lead_data(plain: dict[str, Any]) -> dict[str, Any]:
    """LeadCreate's input: the two money columns become its `value` object."""
    amount, currency = plain.pop("value_amount_minor", None), plain.pop("value_currency", None)
    if amount is not None or currency is not None:
        plain["value"] = {"amount_minor": int(amount) if amount and INTEGER.match(amount) else amount,
                          "currency": currency.upper() if currency else currency}
    return plain


def import_leads(ctx: Context, sheet: Sheet) -> ImportResult:
    """Create one lead per good row, placed and recorded by the lead module's rules."""
    conn = ctx.conn
    definitions = custom_fields.definitions(conn, "lead")
    check_header(sheet.columns, LEAD_COLUMNS, definitions)
    candidates, bad = parse_rows(sheet, definitions, leads.LeadCreate, _lead_data)
    found_contacts = existing_ids(conn, Q["import_existing_contacts"], referenced(candidates, "contact_id"))
    found_companies = existing_ids(conn, Q["import_existing_companies"], referenced(candidates, "company_id"))
    found_owners = existing_ids(conn, Q["import_existing_members"], referenced(candidates, "owner_id"))
    check_reference(candidates, "contact_id", found_contacts())
    check_reference(candidates, "company_id", found_companies())
    check_reference(candidates, "owner_id", found_owners())
    # One placement per distinct (pipeline, stage) request, not per row: a file names a few stages.
    placements: dict[tuple[Any, Any], dict[str, Any] | list[errors.FieldError]] = {}
    for candidate in candidates:
        wanted = (candidate.model.pipeline_id, candidate.model.stage_id)
        if wanted not in placements:
            try:
                # The lead module's rule: default pipeline, first stage, stage in pipeline, status by kind.
                placements[wanted] = leads.placement(ctx, *wanted)
            except errors.ValidationFailed as exc:
                placements[wanted] = exc.errors
        placed = placements[wanted]
        if isinstance(placed, list):
            candidate.problems.extend(RowError(row=candidate.number, field=e.field, message=e.message)
                                      for e in placed)
            continue
        candidate.placement = placed
        try:
            candidate.custom = custom_fields.check(definitions, candidate.custom)
        except errors.ValidationFailed as exc:
            candidate.problems.extend(custom_errors(exc, candidate.number))
    good, bad = finish(candidates, bad)
    if good:
        ids = [uuid.uuid4() for _ in good]
        values: dict[str, list[Any]] = {"id": ids}
        for name in ("title", "contact_id", "company_id", "owner_id", "lost_reason", "expected_close_date"):
            values[name] = [getattr(c.model, name) for c in good]
        for name in ("pipeline_id", "stage_id", "status"):
            values[name] = [c.placement[name] for c in good]
        values["value_amount_minor"] = [c.model.value.amount_minor if c.model.value else None for c in good]
        values["value_currency"] = [c.model.value.currency if c.model.value else None for c in good]
        values["custom"] = [Jsonb(c.custom) for c in good]
        by_place: dict[leads.Placement, list[uuid.UUID]] = {}
        for lead_id, candidate in zip(ids, good, strict=True):
            by_place.setdefault(leads.Placement(**candidate.placement), []).append(lead_id)
        with db_errors(leads.TABLE):
            # The lead module's own writers: the leads (one statement), then, queued behind them, their
            # history rows (one per lead) and their events (one statement per type).
            written = leads.insert_many_pending(conn, values)
            emit(ctx, leads.RESOURCE, "created", ids)
            for place, lead_ids in by_place.items():
                leads.record_moves(ctx, lead_ids, None, place.stage_id)
                leads.emit_placed(ctx, lead_ids, before=None, after=place)
            count = written()
        assert count == len(good)
    return ImportResult(created=len(good), updated=0, errors=bad)


# ---- dispatch ------------------------------------------------------------------------------------

OBJECTS: dict[str, Callable[[Context, Sheet], ImportResult]] = {
    "contacts": import_contacts, "companies": import_companies, "leads": import_leads}


def run(ctx: Context, *, object_name: str, sheet: Sheet) -> ImportResult:
    """Import `sheet` as `object_name` records in the caller's tenant transaction; audit the counts."""
    importer = OBJECTS.get(object_name)
    if importer is None:
        raise errors.NotFound("not found")
    result = importer(ctx, sheet)
    # Counts only: never a value of a row.
    audit.record(ctx.conn, tenant_id=ctx.tenant, action="import.completed", actor=ctx.principal.actor,
                 target_type="import",
                 details={"object": object_name, "created": result.created, "updated": result.updated,
                          "errors": len(result.errors)})
    return result
