"""/docs in a real headless Chromium over the wire: Swagger UI renders the operations, and the page's CSP is
never violated (Chromium logs each violation to the console, which it copies to stderr)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.api.test_wire import devserver
from tests.conftest import TestDatabase

CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.wire,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")]


def _chromium(profile: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Load `url` headless, let it run its scripts, and return stdout (the DOM) and stderr (the console)."""
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000",
               *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _violations(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Content Security Policy" in line]


def test_the_console_shows_csp_violations_so_their_absence_means_something(tmp_path: Path) -> None:
    page = ("data:text/html,<meta http-equiv='Content-Security-Policy' content=\"style-src 'none'\">"
            "<p style='color:red'>x</p>")
    result = _chromium(tmp_path / "profile", page, "--dump-dom")
    assert _violations(result.stderr), result.stderr[-2000:]


def test_docs_renders_every_operation_in_chromium_without_a_csp_violation(tmp_path: Path,
                                                                            fresh_db: TestDatabase) -> None:
    with devserver(tmp_path / "data", DATABASE_URL=fresh_db.app_url) as (base, _):
        # The fragment is a Swagger UI deep link: it opens one cookie-only write (parameters, body, answers).
        result = _chromium(tmp_path / "profile", base + "/docs#/workspaces/create_workspace", "--dump-dom")
        shot = _chromium(tmp_path / "profile-shot", base + "/docs", "--window-size=1280,1600",
                         f"--screenshot={tmp_path / 'docs.png'}")
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert not _violations(result.stderr + shot.stderr)
    assert dom.count('class="opblock opblock-') >= 50, "Swagger UI did not render the operations"
    for text in ("create_workspace", "/workspaces/{workspace_id}/contacts", "/auth/session", "btn authorize",
                 # the opened operation's parameter table: the CSRF header, required (a cookie-only write)
                 'data-param-name="X-CSRF-Token" data-param-in="header"', 'parameter__name required">X-CSRF-Token'):
        assert text in dom, text
    assert (tmp_path / "docs.png").stat().st_size > 10_000
