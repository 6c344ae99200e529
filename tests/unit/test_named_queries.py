"""Named queries: each queries.sql follows the format, every name used exists, every query is used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chalicelib.db.queries import QueryFileError, load, parse

ROOT = Path(__file__).resolve().parents[2]
QUERY_FILES = sorted((ROOT / "chalicelib").rglob("queries.sql"))
USE = re.compile(r"""\bQ\[["']([a-z0-9_]+)["']\]""")


def _package(path: Path) -> str:
    return ".".join(path.parent.relative_to(ROOT).parts)


def _uses(package_dir: Path) -> set[str]:
    # The package's own modules (a subpackage has its own queries.sql).
    return {name for path in package_dir.glob("*.py") for name in USE.findall(path.read_text())}


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_query_of_a_package_is_used_and_every_use_is_defined(path: Path) -> None:
    defined = set(load(_package(path)))
    used = _uses(path.parent)
    assert used - defined == set(), "used but not defined"
    assert defined - used == set(), "defined but never used"


def test_the_parser_reads_names_descriptions_and_statements() -> None:
    found = parse("-- Leads.\n\n-- name: one\n-- The first.\nSELECT 1;\n\n-- name: two_rows\n-- The second.\n"
                  "SELECT *\n  FROM t\n -- a comment inside\n WHERE id = %(id)s;\n", "x.sql")
    assert dict(found) == {"one": "SELECT 1", "two_rows": "SELECT *\n  FROM t\n WHERE id = %(id)s"}
    assert found.described["two_rows"].description == "The second."


@pytest.mark.parametrize("text", [
    "SELECT 1;\n-- name: a\n-- A.\nSELECT 1;",       # SQL before the first name
    "-- name: Bad\n-- A.\nSELECT 1;",                  # not lower_snake_case
    "-- name: a\nSELECT 1;",                           # no description
    "-- name: a\n-- A.\n",                             # no statement
    "-- name: a\n-- A.\nSELECT 1;\n-- name: a\n-- B.\nSELECT 2;",  # twice
])
def test_a_malformed_file_is_refused_naming_the_file(text: str) -> None:
    with pytest.raises(QueryFileError, match=r"x\.sql"):
        parse(text, "x.sql")
