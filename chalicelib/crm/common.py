"""Pieces shared by the CRM resources: patch semantics and custom values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from chalicelib import errors
from chalicelib.crm import custom_fields


def patch_values(body: BaseModel, *, required: Iterable[str] = (), skip: Iterable[str] = ("custom",)) -> dict[str, Any]:
    """The fields the client sent (null clears an optional field; a required one cannot be null)."""
    values: dict[str, Any] = {}
    problems = []
    for name in sorted(body.model_fields_set - set(skip)):
        value = getattr(body, name)
        if value is None and name in required:
            problems.append(errors.FieldError(name, "cannot be null", "null_not_allowed"))
        values[name] = value.model_dump() if isinstance(value, BaseModel) else value
    if problems:
        raise errors.ValidationFailed("some fields cannot be cleared", errors=problems)
    return values


def merged_custom(conn: Any, object_type: str, existing: dict[str, Any] | None, sent: dict[str, Any] | None
                  ) -> dict[str, Any]:
    """The record's new `custom`: existing values overlaid with the sent ones (null removes), validated.

    Stored values of a field that has since been deleted are dropped, not refused: otherwise every later
    change of the record's custom values would fail on a key the client never sent.
    """
    fields = custom_fields.definitions(conn, object_type)
    merged = {key: value for key, value in (existing or {}).items() if key in fields}
    for key, value in (sent or {}).items():
        merged[key] = value
    return custom_fields.check(fields, merged)
