"""Named SQL: each package keeps its hand-written statements in one queries.sql, loaded once.

The format follows procrastinate's sql/queries.sql: a block starts with a `-- name: <identifier>` line and
a one-line `-- <what it does>` description, and runs to the next `-- name:` line; the statement's
trailing semicolon is dropped. Values are bound parameters (%s, %(name)s) as everywhere else. A module
takes its package's queries with `Q = queries.load(__package__)` and runs `conn.execute(Q["name"], ...)`;
tests/unit/test_named_queries.py checks that every name used exists and every query defined is used.
The composed SQL of the generic CRM store stays in chalicelib/crm/store.py.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z][a-z0-9_]*)\s*$")
_DESCRIPTION = re.compile(r"^-- \S")


class QueryFileError(ValueError):
    """A queries.sql that does not follow the format (the message names the file and line)."""


@dataclass(frozen=True)
class Query:
    """One named statement and what it does."""

    name: str
    description: str
    text: str


class Queries(Mapping[str, str]):
    """A package's statements by name (the SQL text, ready for conn.execute); `described` has the rest."""

    def __init__(self, found: dict[str, Query]) -> None:
        self.described = found

    def __getitem__(self, name: str) -> str:
        return self.described[name].text

    def __iter__(self) -> Iterator[str]:
        return iter(self.described)

    def __len__(self) -> int:
        return len(self.described)


def parse(text: str, origin: str) -> Queries:
    """The named statements of one file's text (QueryFileError naming `origin` and the line when malformed)."""
    found: dict[str, Query] = {}
    lines = text.splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith("-- name:")]
    if any(line.strip() and not line.startswith("--") for line in lines[: starts[0] if starts else len(lines)]):
        raise QueryFileError(f"{origin}: SQL before the first '-- name:' line")
    for index, start in enumerate(starts):
        match = _NAME.match(lines[start])
        if match is None:
            raise QueryFileError(f"{origin}:{start + 1}: a name is lower_snake_case")
        name = match.group(1)
        if name in found:
            raise QueryFileError(f"{origin}:{start + 1}: {name} is defined twice")
        if start + 1 >= len(lines) or not _DESCRIPTION.match(lines[start + 1]):
            raise QueryFileError(f"{origin}:{start + 2}: {name} needs a one-line '-- description'")
        end = starts[index + 1] if index + 1 < len(starts) else len(lines)
        body = "\n".join(line for line in lines[start + 2: end] if not line.lstrip().startswith("--")).strip()
        if not body:
            raise QueryFileError(f"{origin}:{start + 1}: {name} has no statement")
        found[name] = Query(name, lines[start + 1][3:].strip(), body.removesuffix(";").rstrip())
    return Queries(found)


@functools.cache
def load(package: str | None) -> Queries:
    """The queries.sql of a package (read once per process)."""
    assert package, "call as queries.load(__package__)"
    text = resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
    return parse(text, f"{package.replace('.', '/')}/queries.sql")
