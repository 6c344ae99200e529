"""The connection type every repository function takes (one alias for the whole package)."""

from __future__ import annotations

from typing import TypeAlias

from psycopg import Connection
from psycopg.rows import TupleRow

Conn: TypeAlias = Connection[TupleRow]
