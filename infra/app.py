"""The CDK app: `make synth` writes infra/cdk.out/, `make deploy` deploys the `prod` stack.

Run under the Lambda's Python (3.12): chalice.cdk packages the API for the interpreter that runs it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parent
ROOT = INFRA.parent
# The repository root first: chalice.cdk imports the API's `app` module from it (this file must not
# shadow it), and functions.schedules is the one list of schedules. crm_infra comes from here.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != INFRA), str(INFRA)]

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402
from crm_infra.stack import ProdStack  # noqa: E402


def default_context() -> dict[str, object]:
    """cdk.json's context and the pinned lookups of cdk.context.json, for a synth without the CDK CLI
    (the CLI passes both itself, and its -c values win over these)."""
    context: dict[str, object] = dict(json.loads((INFRA / "cdk.json").read_text())["context"])
    context.update(json.loads((INFRA / "cdk.context.json").read_text()))
    return context


def main() -> None:
    """Build the app, check it with cdk-nag, and synthesize it."""
    # The CDK CLI names its own output directory (CDK_OUTDIR); a plain `python app.py` writes to cdk.out/.
    outdir = None if os.environ.get("CDK_OUTDIR") else str(INFRA / "cdk.out")
    app = cdk.App(context=default_context(), outdir=outdir)
    account = app.node.try_get_context("account")
    region = app.node.try_get_context("region")
    # chalice package asks botocore for the region's service principals (no call is made).
    os.environ.setdefault("AWS_DEFAULT_REGION", str(region))
    # chalice.cdk writes its package under ./chalice.out; the functions' asset goes beside it in ./build.
    ProdStack(app, source_dir=ROOT, build_dir=Path.cwd() / "build",
                      env=cdk.Environment(account=account, region=region))
    # cdk-nag 3 is a policy-validation plugin: an unacknowledged finding fails the synth with a report.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    app.synth()


if __name__ == "__main__":
    main()
