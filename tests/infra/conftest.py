"""The infra tests: one synth per session, in a subprocess, under the Lambda's Python (make test-infra).

The synth runs in its own process because chalice.cdk imports app.py under the prod stage, which would
leave prod settings cached in this one. It writes into a temporary directory (cdk.out, chalice.out,
build), so it never touches infra/cdk.out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SENTRY_SECRET = "tenant-crm/sentry-dsn"
INFRA = ROOT / "infra"
sys.path[:0] = [str(INFRA), str(ROOT)]


@dataclass(frozen=True)
class Synth:
    """What one synth produced."""

    workdir: Path
    seconds: float

    @property
    def outdir(self) -> Path:
        return self.workdir / "cdk.out"

    @property
    def template(self) -> dict[str, Any]:
        return json.loads((self.outdir / "prod.template.json").read_text())  # type: ignore[no-any-return]

    @property
    def api_package(self) -> Path:
        (zipped,) = self.outdir.glob("asset.*.zip")
        return zipped

    @property
    def functions_package(self) -> Path:
        return self.workdir / "build" / "functions"


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Synthesize the prod stack once; fail with the synth's own output if it fails."""
    workdir = tmp_path_factory.mktemp("synth")
    # With a Sentry secret named: the harder path (its reference must stay out of the packaging import).
    env = {**os.environ, "CDK_OUTDIR": str(workdir / "cdk.out"), "PYTHONDONTWRITEBYTECODE": "1",
           "CDK_CONTEXT_JSON": json.dumps({"sentry_dsn_secret_name": SENTRY_SECRET})}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(INFRA / "app.py")], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        pytest.fail(f"synth failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}")
    # jsii prints a banner when its node is end-of-life; the Makefile gives it a supported one.
    assert "end-of-life" not in done.stderr
    print(f"\nsynth took {seconds:.1f} s")
    return Synth(workdir, seconds)


@pytest.fixture(scope="session")
def template(synth: Synth) -> dict[str, Any]:
    """The synthesized CloudFormation template of the prod stack."""
    return synth.template


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Logical id -> resource body, for every resource of one type."""
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def props(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The Properties of every resource of one type."""
    return [v.get("Properties", {}) for v in resources(template, kind).values()]
