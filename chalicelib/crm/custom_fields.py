"""Custom fields: per-workspace definitions for leads, contacts and companies, and value validation."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from chalicelib import errors
from chalicelib.auth.addresses import normalize_email
from chalicelib.crm.listing import Filter, ListSpec, parse_choice, text_sort, time_sort
from chalicelib.crm.store import Table
from chalicelib.crm.values import Money, check_url, normalize_phone
from chalicelib.db import queries

ObjectType = Literal["lead", "contact", "company"]
FieldType = Literal["text", "number", "boolean", "date", "datetime", "select", "multi_select", "url", "email",
                    "phone", "currency"]
OBJECTS = frozenset({"lead", "contact", "company"})
Q = queries.load(__package__)

TABLE = Table(
    name="custom_fields",
    columns=("id", "object", "key", "label", "type", "options", "required", "created_at", "updated_at"),
    listing=ListSpec("custom_fields", {"created_at": time_sort("created_at"), "updated_at": time_sort("updated_at"),
                                       "key": text_sort("key")}, "created_at",
                     {"object": Filter("object", parse_choice("object", OBJECTS))}, custom_select_filters=False),
    conflicts={"custom_fields_key_unique": "this object already has a custom field with this key"},
)


def _distinct_options(value: list[str]) -> list[str]:
    if len(set(value)) != len(value) or any(not 1 <= len(o) <= 100 for o in value):
        raise ValueError("options must be distinct strings of 1 to 100 characters")
    return value


class FieldCreate(BaseModel):
    """A new custom field definition."""

    model_config = ConfigDict(extra="forbid")
    object: ObjectType
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    label: str = Field(min_length=1, max_length=100)
    type: FieldType
    options: list[str] = Field(default_factory=list, max_length=200)
    required: bool = False

    @field_validator("options")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return _distinct_options(value)


class FieldPatch(BaseModel):
    """Changes to a definition (object and key are fixed)."""

    model_config = ConfigDict(extra="forbid")
    label: str | None = Field(default=None, min_length=1, max_length=100)
    type: FieldType | None = None
    options: list[str] | None = Field(default=None, max_length=200)
    required: bool | None = None

    @field_validator("options")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _distinct_options(value)


class FieldOut(BaseModel):
    """A custom field definition."""

    id: uuid.UUID
    object: ObjectType
    key: str
    label: str
    type: FieldType
    options: list[str]
    required: bool
    created_at: datetime
    updated_at: datetime


def out(row: tuple[Any, ...]) -> dict[str, Any]:
    """Row to API shape (FieldOut)."""
    return TABLE.as_dict(row)


def definition(row: tuple[Any, ...]) -> FieldOut:
    """Row as a FieldOut, for the checks that read a definition's attributes."""
    # Rows come from our own typed columns: constructed without re-validation.
    return FieldOut.model_construct(**TABLE.as_dict(row))


def _text(value: Any, _options: list[str]) -> Any:
    if not isinstance(value, str) or len(value) > 10_000:
        raise PydanticCustomError("custom_text", "must be text of at most 10000 characters")
    return value


def _number(value: Any, _options: list[str]) -> Any:
    # Finite only: json.loads accepts NaN and Infinity, which jsonb (and every client) refuses.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise PydanticCustomError("custom_number", "must be a number")
    return value


def _boolean(value: Any, _options: list[str]) -> Any:
    if not isinstance(value, bool):
        raise PydanticCustomError("custom_boolean", "must be true or false")
    return value


def _date(value: Any, _options: list[str]) -> Any:
    try:
        parsed = date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise PydanticCustomError("custom_date", "must be a date like 2026-12-31")
    return parsed.isoformat()


def _datetime(value: Any, _options: list[str]) -> Any:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise PydanticCustomError("custom_datetime", "must be an RFC 3339 timestamp with a timezone")
    return value


def _select(value: Any, options: list[str]) -> Any:
    if value not in options:
        raise PydanticCustomError("custom_select", "must be one of the field's options")
    return value


def _multi_select(value: Any, options: list[str]) -> Any:
    if not isinstance(value, list) or any(v not in options for v in value) or len(set(value)) != len(value):
        raise PydanticCustomError("custom_multi_select", "must be a list of distinct options of the field")
    return value


def _currency(value: Any, _options: list[str]) -> Any:
    return Money.model_validate(value).model_dump()


def _string(check: Callable[[str], str]) -> Callable[[Any, list[str]], Any]:
    def validate(value: Any, _options: list[str]) -> Any:
        if not isinstance(value, str):
            raise PydanticCustomError("custom_text", "must be text")
        return check(value)
    return validate


VALIDATORS: Mapping[str, Callable[[Any, list[str]], Any]] = {
    "text": _text, "number": _number, "boolean": _boolean, "date": _date, "datetime": _datetime,
    "select": _select, "multi_select": _multi_select, "url": _string(check_url), "email": _string(normalize_email),
    "phone": _string(normalize_phone), "currency": _currency,
}


def check_value(field_type: str, options: list[str], value: Any) -> tuple[Any, str | None]:
    """(normalized value, None) or (None, why it is invalid)."""
    try:
        return VALIDATORS[field_type](value, options), None
    except PydanticCustomError as exc:
        return None, exc.message()
    except ValidationError:
        return None, "must be {\"amount_minor\": integer, \"currency\": ISO 4217 code}"


def definitions_pending(conn: Any, object_type: str, *, lock: bool = False
                        ) -> Callable[[], dict[str, tuple[str, list[str], bool]]]:
    """Queue the read of definitions() (nothing awaited); call the result for them."""
    cursor = conn.execute(Q["custom_fields_of_object_key_share"] if lock else Q["custom_fields_of_object"],
                          (object_type,))

    def found() -> dict[str, tuple[str, list[str], bool]]:
        return {str(r[0]): (str(r[1]), list(r[2]), bool(r[3])) for r in cursor.fetchall()}
    return found


def definitions(conn: Any, object_type: str) -> dict[str, tuple[str, list[str], bool]]:
    """key -> (type, options, required) for one object type of the current workspace, for a write of
    records: the definitions stay as read until the write commits. A field's delete or change (which
    locks its row FOR UPDATE) waits for writes that validated against it, and they for it, so no record
    keeps a value of a field deleted meanwhile, or one its changed type refuses."""
    return definitions_pending(conn, object_type, lock=True)()


def check_filters(query: Mapping[str, str], fields: Mapping[str, tuple[str, list[str], bool]]) -> None:
    """400 for a `custom.<key>=` filter that is not a select field of the object, or not one of its options
    (it would otherwise silently match nothing)."""
    for name in sorted(n for n in query if n.startswith("custom.")):
        field_type, options, _required = fields.get(name.removeprefix("custom."), ("", [], False))
        if field_type not in ("select", "multi_select"):
            raise errors.BadRequest(f"{name} is not a select field of this object")
        if query[name] not in options:
            raise errors.BadRequest(f"{name} must be one of the field's options")


def validate(conn: Any, object_type: str, custom: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a record's whole `custom` object against the definitions (422 with custom.<key> paths).

    Unknown keys are refused, values are normalized, required fields must be present and not null;
    a null value clears an optional field.
    """
    return check(definitions(conn, object_type), custom)


def check(fields: Mapping[str, tuple[str, list[str], bool]], custom: Mapping[str, Any]) -> dict[str, Any]:
    """validate() against definitions already read (bulk writes read them once, not per record)."""
    problems: list[errors.FieldError] = []
    result: dict[str, Any] = {}
    for key, value in custom.items():
        if key not in fields:
            problems.append(errors.FieldError(f"custom.{key}", "no such custom field", "unknown_custom_field"))
            continue
        if value is None:
            continue
        field_type, options, _required = fields[key]
        normalized, problem = check_value(field_type, options, value)
        if problem is not None:
            problems.append(errors.FieldError(f"custom.{key}", problem, f"custom_{field_type}"))
        else:
            result[key] = normalized
    for key, (_type, _options, required) in fields.items():
        if required and key not in result and not any(p.field == f"custom.{key}" for p in problems):
            problems.append(errors.FieldError(f"custom.{key}", "this custom field is required", "missing"))
    if problems:
        raise errors.ValidationFailed("some custom fields are invalid", errors=problems)
    return result


RECORD_TABLES = {"lead": "leads", "contact": "contacts", "company": "companies"}


class DryRunFailure(BaseModel):
    """A record whose current value would not fit the changed definition."""

    id: uuid.UUID
    message: str


class DryRunReport(BaseModel):
    """What a definition change would break (nothing is changed by a dry run)."""

    dry_run: bool
    would_fail: list[DryRunFailure]


def failures(conn: Any, definition: FieldOut, change: FieldPatch) -> list[DryRunFailure]:
    """Records of the field's object whose stored value would be invalid after `change`."""
    from psycopg import sql

    new_type = change.type or definition.type
    options = change.options if change.options is not None else definition.options
    required = change.required if change.required is not None else definition.required
    table = sql.Identifier(RECORD_TABLES[definition.object])
    rows = conn.execute(sql.SQL("SELECT id, custom -> %s FROM {} ORDER BY created_at, id").format(table),
                        (definition.key,)).fetchall()
    found = []
    for record_id, value in rows:
        if value is None:
            if required:
                found.append(DryRunFailure(id=record_id, message="has no value for a required field"))
            continue
        _normalized, problem = check_value(new_type, options, value)
        if problem is not None:
            found.append(DryRunFailure(id=record_id, message=problem))
    return found
