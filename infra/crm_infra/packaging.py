"""The functions' code asset: Chalice's own deployment package (same wheels, built for the Lambda's Python)
plus the functions/ package, so the API and the jobs run exactly the same chalicelib and dependencies."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from chalice.cdk import Chalice


def chalice_package(chalice: Chalice) -> Path:
    """The deployment.zip that `chalice package` wrote for this synth."""
    # chalice.cdk keeps its output directory private; the zip inside it is its documented artifact.
    return Path(chalice._sam_package_dir) / "deployment.zip"


def functions_asset(chalice: Chalice, *, source_dir: Path, build_dir: Path) -> Path:
    """build_dir/functions: the API package unzipped, plus functions/ (its modules only, no tests)."""
    target = build_dir / "functions"
    shutil.rmtree(target, ignore_errors=True)
    with zipfile.ZipFile(chalice_package(chalice)) as archive:
        archive.extractall(target)
    (target / "functions").mkdir()
    for path in sorted((source_dir / "functions").glob("*.py")):
        shutil.copy2(path, target / "functions" / path.name)
    return target
