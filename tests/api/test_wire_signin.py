"""The README's local walkthrough over real HTTP with only PORT set: the emailed link, the sign-in, the
refusal of the other loopback name, and a staff command run beside the server without extra settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.api.test_wire import ROOT, devserver

pytestmark = pytest.mark.wire
LINK = re.compile(r"(http://\S+/auth/confirm)#token=([A-Za-z0-9_-]+)")


def post(url: str, body: object, origin: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Origin": origin})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_with_only_port_set_the_walkthrough_signs_in_and_staff_commands_need_no_extra_setting(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # PUBLIC_BASE_URL empty: derived, whatever the environment running the tests says.
    with devserver(data_dir, PUBLIC_BASE_URL="") as (base, _proc):
        port = base.rsplit(":", 1)[1]
        assert post(f"{base}/auth/magic-link", {"email": "walk@example.test"}, base)[0] == 202
        (mail,) = (data_dir / "outbox").glob("*.eml")
        found = LINK.search(mail.read_text())
        assert found and found.group(1) == f"{base}/auth/confirm"
        token = found.group(2)
        status, refused = post(f"{base}/auth/session", {"token": token}, f"http://localhost:{port}")
        assert status == 403 and refused["detail"] == (f"cross-site request refused: open this page at {base}"
                                                       "/auth/confirm (the link in the email)")
        status, me = post(f"{base}/auth/session", {"token": token}, base)
        assert status == 200 and me["user"]["email"] == "walk@example.test"  # type: ignore[index]

        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JOBS_DATABASE_URL")}
        env.update(STAGE="local", DATA_DIR=str(data_dir), LOG_LEVEL="WARNING")
        purged = subprocess.run([sys.executable, "-m", "functions.purge_auth"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert purged.returncode == 0, purged.stderr
        assert json.loads(purged.stdout)["claimed"] in (True, False)  # the scheduler thread may have run it
