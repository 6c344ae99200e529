"""Custom field definitions as a resource; changing a field's type is checked (and dry-runnable)."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from chalicelib import errors
from chalicelib.crm.api import Context, Resource
from chalicelib.crm.common import patch_values
from chalicelib.crm.custom_fields import (
    RECORD_TABLES,
    TABLE,
    FieldCreate,
    FieldOut,
    FieldPatch,
    definition,
    failures,
    out,
)
from chalicelib.crm.store import Row

CHOICE_TYPES = frozenset({"select", "multi_select"})


def _check_options(field_type: str, options: list[str]) -> None:
    if field_type in CHOICE_TYPES and not options:
        raise errors.ValidationFailed("select fields need options",
                                      errors=[errors.FieldError("options", "at least one option", "missing")])
    if field_type not in CHOICE_TYPES and options:
        raise errors.ValidationFailed("only select fields have options", errors=[
            errors.FieldError("options", "must be empty for this type", "value_error")])


def prepare_create(ctx: Context, body: FieldCreate) -> dict[str, Any]:
    """Column values of a new definition."""
    _check_options(body.type, body.options)
    return body.model_dump()


def checked_change(existing: Row, body: FieldPatch) -> dict[str, Any]:
    """Column values a PATCH would change, after the checks that need no records (422): what a dry
    run answers first too, so it never reports "nothing fails" for a change the PATCH would refuse."""
    current = definition(existing)
    values = patch_values(body, required=("label", "type", "options", "required"))
    _check_options(values.get("type", current.type), values.get("options", current.options))
    return values


def prepare_patch(ctx: Context, existing: Row, body: FieldPatch) -> dict[str, Any]:
    """Column values to change; refused (409) when stored values would stop being valid."""
    values = checked_change(existing, body)
    broken = failures(ctx.conn, definition(existing), body)
    if broken:
        raise errors.Conflict(f"{len(broken)} records would not fit the changed field; "
                              "PATCH with ?dry_run=true lists them")
    return values


def before_delete(ctx: Context, existing: Row) -> None:
    """A deleted field takes its values with it: no record keeps (or answers with) data of a field that no
    longer exists, and a new field with the same key starts empty. Same transaction as the delete."""
    field = definition(existing)
    ctx.conn.execute(sql.SQL("UPDATE {} SET custom = custom - %s, updated_at = %s WHERE custom ? %s").format(
        sql.Identifier(RECORD_TABLES[field.object])), (field.key, ctx.now, field.key))


RESOURCE = Resource(path="/custom-fields", singular="custom_field", id_param="field_id", table=TABLE, out=out,
                    out_model=FieldOut, create_model=FieldCreate, patch_model=FieldPatch,
                    prepare_create=prepare_create, prepare_patch=prepare_patch, write_role="admin",
                    skip=frozenset({"PATCH"}), before_delete=before_delete)
