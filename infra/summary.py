"""`make synth`'s summary: the template's resources by type and the unzipped size of each Lambda package."""

from __future__ import annotations

import json
import sys
import zipfile
from collections import Counter
from pathlib import Path

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # Lambda's limit on a function's unzipped code (zip packages)


def resource_types(template: dict[str, object]) -> Counter[str]:
    """How many resources of each CloudFormation type the template declares."""
    resources = template["Resources"]
    assert isinstance(resources, dict)
    return Counter(str(body["Type"]) for body in resources.values())


def unzipped_size(path: Path) -> int:
    """Bytes of a zip's members, or of a directory's files (Lambda's 250 MB limit is on this)."""
    if path.is_file():
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def package_sizes(outdir: Path, build_dir: Path) -> dict[str, int]:
    """Unzipped bytes of the API package (the asset zip) and of the functions' shared asset directory."""
    api = list(outdir.glob("asset.*.zip"))
    if len(api) != 1:
        raise SystemExit(f"expected one zipped asset (the API package) in {outdir}, found {len(api)}")
    return {"api (deployment.zip)": unzipped_size(api[0]), "functions": unzipped_size(build_dir / "functions")}


def main(argv: list[str]) -> int:
    """Print the summary; exit 1 when a package is over Lambda's limit."""
    outdir, build_dir = Path(argv[0]), Path(argv[1])
    template = json.loads((outdir / "prod.template.json").read_text())
    counts = resource_types(template)
    print(f"{sum(counts.values())} resources in {outdir / 'prod.template.json'}:")
    for kind, count in sorted(counts.items()):
        print(f"  {count:4d}  {kind}")
    status = 0
    for name, size in package_sizes(outdir, build_dir).items():
        verdict = "ok" if size < LAMBDA_UNZIPPED_LIMIT else "OVER Lambda's 250 MB limit"
        print(f"package {name}: {size / 1024 / 1024:.1f} MB unzipped ({verdict})")
        status |= size >= LAMBDA_UNZIPPED_LIMIT
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
