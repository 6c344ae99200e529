"""How a long job tells its watcher how far it is: table names and row counts, never contents.

The command lines draw these as progress bars on a terminal; a Lambda passes no watcher at all, so the
jobs count rows ahead (one more statement) only when someone is watching.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Protocol

from psycopg import sql

from chalicelib.db.types import Conn


class Progress(Protocol):
    """A watcher of one job: told what a unit of work (a workspace) holds, then how far each table is."""

    def begin(self, label: str, totals: Mapping[str, int]) -> None:
        """A unit of work starts: `totals` are its tables, in the order they will be done, with their rows."""

    def advance(self, table: str, done: int) -> None:
        """`done` rows of `table` are finished so far (a running total for that table, not an increment)."""


def count_rows(conn: Conn, tables: Sequence[tuple[str, str]], tenant_id: uuid.UUID) -> dict[str, int]:
    """Rows of the workspace in each (table, tenant key), in the given order, counted in one statement."""
    if not tables:
        return {}
    # Scoped by RLS like the work it announces, and by the explicit key as that work is.
    counts = sql.SQL(", ").join(
        sql.SQL("(SELECT count(*) FROM {} WHERE {} = %(tenant)s)").format(sql.Identifier(name), sql.Identifier(key))
        for name, key in tables)
    row = conn.execute(sql.SQL("SELECT {}").format(counts), {"tenant": tenant_id}).fetchone()
    assert row is not None
    return {name: int(value) for (name, _), value in zip(tables, row, strict=True)}
