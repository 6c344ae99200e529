"""Export, backup, restore and delete as staff run them: bars with totals on a terminal, ended by a newline;
without a terminal, stdout is the JSON summary and nothing else."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, TestDatabase, make_tenant
from tests.functions.test_backup_restore import seed
from tests.functions.test_delete import new_canary, plant

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Run:
    """One command run: exit code, stdout, and stderr (as the terminal received it, when it was one)."""

    code: int
    out: str
    err: str

    @property
    def summary(self) -> Any:
        return json.loads(self.out)


def run(env: dict[str, str], *argv: str, terminal: bool) -> Run:
    """`python -m functions.<argv>` with stderr on a pseudo-terminal (120 columns) or on a pipe."""
    command = [sys.executable, "-m", *argv]
    if not terminal:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        return Run(done.returncode, done.stdout, done.stderr)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=follower)
    os.close(follower)
    received = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        received += chunk
    os.close(leader)
    assert child.stdout is not None
    out = child.stdout.read().decode()
    child.stdout.close()
    return Run(child.wait(timeout=120), out, received.decode().replace("\r\n", "\n"))


def screen_lines(err: str) -> list[str]:
    """Each line as it finally reads on the terminal: colours and cursor moves dropped, and of what a
    carriage return overwrote, only what came after it."""
    return [ANSI.sub("", line).rsplit("\r", 1)[-1] for line in err.split("\n")]


def assert_bars_then_a_newline(result: Run, label: str, rows: int) -> None:
    """A bar counted every row against its total, and the terminal's output ends with a newline, so no log
    line (nor the shell's prompt) is ever glued onto a bar."""
    assert result.code == 0, result.err
    assert f"{label}" in result.err and f"{rows}/{rows} " in ANSI.sub("", result.err), result.err
    assert result.err.endswith("\n"), repr(result.err[-200:])
    for line in screen_lines(result.err):
        if '{"ts"' in line:
            assert line.startswith('{"ts"'), repr(line)  # a log line starts a line of its own
            json.loads(line)


def assert_summary_only(result: Run) -> Any:
    """stdout is exactly one JSON document; stderr holds no bar (log lines and notes only)."""
    assert result.code == 0, result.err
    summary = result.summary
    assert "rows/s" not in result.err and "\r" not in result.err and "\x1b" not in result.err
    return summary


@pytest.fixture
def staff(fresh_db: TestDatabase, tmp_path: Path) -> dict[str, str]:
    """A staff member's environment: this test's database as JOBS_DATABASE_URL, a DATA_DIR of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SENTRY_DSN", "PUBLIC_BASE_URL")}
    env.update(JOBS_DATABASE_URL=fresh_db.jobs_url, DATA_DIR=str(tmp_path / "data"), STAGE="local", LOG_LEVEL="INFO")
    return env


def workspace(db: TestDatabase, name: str) -> uuid.UUID:
    """A workspace with rows in every tenant table."""
    tenant = make_tenant(db, name)
    plant(db, tenant, new_canary())
    return tenant


def backupable_workspace(db: TestDatabase, name: str) -> uuid.UUID:
    """A workspace a backup can hold (no planted backup key of its own)."""
    return seed(db, name, new_canary(), bulk=1500)


def test_export_draws_bars_on_a_terminal_and_prints_only_its_summary_otherwise(
        fresh_db: TestDatabase, staff: dict[str, str], tmp_path: Path) -> None:
    a = workspace(fresh_db, "a")
    on_terminal = run(staff, "functions.export_tenant", str(a), "--out", str(tmp_path / "1.json"), terminal=True)
    assert_bars_then_a_newline(on_terminal, "export", on_terminal.summary["rows"])
    assert "contacts" in on_terminal.err  # the table bar names the table
    piped = assert_summary_only(run(staff, "functions.export_tenant", str(a), "--out", str(tmp_path / "2.json"),
                                    terminal=False))
    assert piped["rows"] == on_terminal.summary["rows"] > 20


def test_backup_draws_bars_per_workspace_with_its_log_lines_above_them(
        fresh_db: TestDatabase, staff: dict[str, str]) -> None:
    backupable_workspace(fresh_db, "a")
    on_terminal = run(staff, "functions.backup_tenants", "--now", "2025-06-01T02:00:00Z", terminal=True)
    assert_bars_then_a_newline(on_terminal, "backup 1/1", on_terminal.summary["counts"]["rows"])
    assert '"msg":"backup written"' in on_terminal.err  # logged while the bars were up
    piped = assert_summary_only(run(staff, "functions.backup_tenants", "--now", "2025-06-02T02:00:00Z",
                                    terminal=False))
    assert (piped["claimed"], piped["failed"], piped["counts"]["backups"]) == (True, [], 1)


def test_restore_draws_bars_on_a_terminal_and_prints_only_its_receipt_otherwise(
        fresh_db: TestDatabase, staff: dict[str, str]) -> None:
    a = backupable_workspace(fresh_db, "a")
    assert run(staff, "functions.backup_tenants", "--now", "2025-06-01T02:00:00Z", terminal=False).code == 0
    on_terminal = run(staff, "functions.restore_tenant", str(a), "--as-new", terminal=True)
    assert_bars_then_a_newline(on_terminal, "restore", sum(on_terminal.summary["rows"].values()))
    piped = assert_summary_only(run(staff, "functions.restore_tenant", str(a), "--as-new", terminal=False))
    assert piped["rows"] == on_terminal.summary["rows"] and piped["workspace_id"] != on_terminal.summary["workspace_id"]


def test_delete_draws_bars_on_a_terminal_and_prints_only_its_receipt_otherwise(
        fresh_db: TestDatabase, staff: dict[str, str]) -> None:
    a, b = workspace(fresh_db, "a"), workspace(fresh_db, "b")
    on_terminal = run(staff, "functions.delete_tenant", str(a), "--yes", terminal=True)
    assert_bars_then_a_newline(on_terminal, "delete", sum(on_terminal.summary["rows"].values()))
    piped = assert_summary_only(run(staff, "functions.delete_tenant", str(b), "--yes", terminal=False))
    assert piped["found"] is True and piped["rows"] == on_terminal.summary["rows"]
