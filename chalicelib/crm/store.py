"""Generic SQL for CRM resources: one row by id, insert, update, delete, list; DB errors to HTTP meaning.

Table and column names come from trusted resource specs (psycopg.sql identifiers); values are always
bound parameters. Every call runs inside the caller's tenant_tx, so RLS scopes it to one workspace.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from chalicelib import errors, versions
from chalicelib.crm.listing import ListQuery, ListSpec, next_cursor, order_by
from chalicelib.db.types import Conn

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Table:
    """A CRM table: its columns (id first, updated_at present), list spec and constraint meanings."""

    name: str
    columns: tuple[str, ...]
    listing: ListSpec
    # constraint name -> request field, for references that do not exist in this workspace
    references: Mapping[str, str] = field(default_factory=dict)
    # unique constraint/index name -> conflict message
    conflicts: Mapping[str, str] = field(default_factory=dict)

    def index(self, column: str) -> int:
        """Position of `column` in a selected row."""
        return self.columns.index(column)

    def as_dict(self, row: Row) -> dict[str, Any]:
        """A selected row as {column: value}: plain values that pydantic-core serializes as they are."""
        return dict(zip(self.columns, row, strict=True))


def _rendered(statement: sql.Composable) -> sql.SQL:
    """A composed statement kept as its text. The callers below are cached by the statement's shape
    (decided by trusted specs only): composing identifiers on every call cost tens of microseconds."""
    return sql.SQL(statement.as_string())


def _columns(names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, names))


@functools.lru_cache(maxsize=256)
def _get_sql(name: str, columns: tuple[str, ...], lock: bool = False) -> sql.SQL:
    return _rendered(sql.SQL("SELECT {} FROM {} WHERE id = %s" + (" FOR UPDATE" if lock else "")).format(
        _columns(columns), sql.Identifier(name)))


@functools.lru_cache(maxsize=1024)
def _insert_sql(name: str, columns: tuple[str, ...], names: tuple[str, ...]) -> sql.SQL:
    return _rendered(sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
        sql.Identifier(name), _columns(names), sql.SQL(", ").join(sql.Placeholder() * len(names)),
        _columns(columns)))


@functools.lru_cache(maxsize=1024)
def _update_sql(name: str, columns: tuple[str, ...], names: tuple[str, ...]) -> sql.SQL:
    assignments = [sql.SQL("{} = %s").format(sql.Identifier(n)) for n in (*names, "updated_at")]
    return _rendered(sql.SQL("UPDATE {} SET {} WHERE id = %s RETURNING {}").format(
        sql.Identifier(name), sql.SQL(", ").join(assignments), _columns(columns)))


@functools.lru_cache(maxsize=1024)
def _list_sql(name: str, columns: tuple[str, ...], conditions: tuple[str, ...], sort_expression: str,
              order: str) -> sql.SQL:
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    return _rendered(sql.SQL("SELECT {}, {} AS sort_value FROM {}{}{} LIMIT %(limit)s").format(
        _columns(columns), sql.SQL(sort_expression), sql.Identifier(name), sql.SQL(where), sql.SQL(order)))


def _adapt(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, (dict, list)) else value


@contextlib.contextmanager
def db_errors(table: Table) -> Iterator[None]:
    """Constraint violations as 422/409 problems that name the field, never the row values."""
    try:
        yield
    except psycopg.errors.ForeignKeyViolation as exc:
        # Another workspace's row and a row that never existed fail the same composite key.
        name = table.references.get(exc.diag.constraint_name or "", "reference")
        raise errors.ValidationFailed("a referenced record does not exist",
                                      errors=[errors.FieldError(name, "not found", "not_found")]) from None
    except psycopg.errors.UniqueViolation as exc:
        message = table.conflicts.get(exc.diag.constraint_name or "", "a record with these values exists")
        raise errors.Conflict(message) from None
    except (psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation,
            psycopg.errors.StringDataRightTruncation, psycopg.errors.NumericValueOutOfRange):
        raise errors.ValidationFailed("a value is out of range") from None
    except psycopg.DataError:
        # A value PostgreSQL cannot store: a NUL character in text (refused by psycopg before sending)
        # or \u0000 in JSON. The client's data, not our fault: 422, never a 500.
        raise errors.ValidationFailed("a value cannot be stored (text may not contain NUL characters)") from None


def get_pending(conn: Conn, table: Table, record_id: uuid.UUID) -> Callable[[], Row | None]:
    """Queue the read of one row of the current workspace; call the result for the row (or None)."""
    return conn.execute(_get_sql(table.name, table.columns), (record_id,)).fetchone


def found(row: Row | None) -> Row:
    """The row, or 404 (also for another workspace's id: RLS hides it)."""
    if row is None:
        raise errors.NotFound("not found")
    return row


def get(conn: Conn, table: Table, record_id: uuid.UUID) -> Row | None:
    """One row of the current workspace, or None."""
    return get_pending(conn, table, record_id)()


def require(conn: Conn, table: Table, record_id: uuid.UUID) -> Row:
    """One row, or 404 (also for another workspace's id: RLS hides it)."""
    return found(get(conn, table, record_id))


def require_for_update(conn: Conn, table: Table, record_id: uuid.UUID) -> Row:
    """require(), with the row locked until the transaction ends: what a PATCH or DELETE checks (its
    If-Match, its previous stage) stays true until it writes. Without the lock two requests holding the
    same ETag could both pass the check and the second would overwrite the first (a lost update)."""
    return found(conn.execute(_get_sql(table.name, table.columns, True), (record_id,)).fetchone())


def insert_pending(conn: Conn, table: Table, values: Mapping[str, Any]) -> Callable[[], Row]:
    """Queue an INSERT (pipeline mode: nothing is awaited); call the result to get the row."""
    names = tuple(values)
    cursor = conn.execute(_insert_sql(table.name, table.columns, names), [_adapt(values[n]) for n in names])

    def row() -> Row:
        with db_errors(table):
            result = cursor.fetchone()
        assert result is not None
        return result

    return row


def insert(conn: Conn, table: Table, values: Mapping[str, Any]) -> Row:
    """Insert one row; returns it."""
    return insert_pending(conn, table, values)()


def update(conn: Conn, table: Table, record_id: uuid.UUID, values: Mapping[str, Any],
           now: datetime) -> Row:
    """Update one row (and updated_at); returns it, or 404."""
    names = tuple(values)
    with db_errors(table):
        row = conn.execute(_update_sql(table.name, table.columns, names),
                           [*(_adapt(values[n]) for n in names), now, record_id]).fetchone()
    if row is None:
        raise errors.NotFound("not found")
    return row


def delete(conn: Conn, table: Table, record_id: uuid.UUID) -> None:
    """Delete one row, or 404."""
    query = sql.SQL("DELETE FROM {} WHERE id = %s RETURNING id").format(sql.Identifier(table.name))
    with db_errors(table):
        if not conn.execute(query, (record_id,)).fetchall():
            raise errors.NotFound("not found")


def list_statement(table: Table, query: ListQuery) -> tuple[sql.SQL, dict[str, Any]]:
    """The SELECT of one page (limit + 1 rows) and its parameters (also what benchmarks EXPLAIN)."""
    statement = _list_sql(table.name, table.columns, tuple(c.as_string() for c in query.conditions),
                          query.sort.expression, order_by(query).as_string())
    return statement, {**query.params, "limit": query.limit + 1}


def list_pending(conn: Conn, table: Table, query: ListQuery
                 ) -> Callable[[], tuple[list[Row], str | None]]:
    """Queue the SELECT of one page (pipeline mode: nothing is awaited); call the result for the page.

    Called after the tenant transaction's block, the result arrives with the commit: one round trip.
    """
    statement, params = list_statement(table, query)
    cursor = conn.execute(statement, params)

    def page() -> tuple[list[Row], str | None]:
        rows = cursor.fetchall()
        return [row[: len(table.columns)] for row in rows[: query.limit]], next_cursor(query, rows, len(table.columns))

    return page


def list_rows(conn: Conn, table: Table, query: ListQuery) -> tuple[list[Row], str | None]:
    """One page of rows and the cursor of the next page."""
    return list_pending(conn, table, query)()


def etag(row: Row, table: Table) -> str:
    """A strong validator of one row version (id + updated_at)."""
    return versions.etag(row[0], row[table.index("updated_at")])


def check_version(expected: frozenset[str] | None, row: Row, table: Table) -> None:
    """PreconditionFailed unless the row's version is among the `expected` ETags (None: any version)."""
    versions.check(expected, etag(row, table))
