"""`make run`'s entry point over real HTTP: embedded PostgreSQL, migrations, chalice local, clean stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import TestDatabase

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.wire


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def devserver(data_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATA_DIR")}
    full_env.update({"DATA_DIR": str(data_dir), "PORT": str(port), "MAX_BODY_BYTES": "4096", **env})
    proc = subprocess.Popen([sys.executable, "-m", "chalicelib.devserver"], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                urllib.request.urlopen(base + "/health", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        else:
            raise AssertionError("the API did not come up")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _post(url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Short, so the unix socket path in DATA_DIR/postgres stays under the 107-byte limit.
    path = Path(tempfile.mkdtemp(prefix="crm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_run_serves_the_api_on_embedded_postgres_and_stops_it(short_tmp: Path) -> None:
    data = short_tmp / "data"
    with devserver(data) as (base, proc):
        status, headers, body = _get(base + "/health/ready")
        assert status == 200, body
        assert headers["X-Request-Id"]
        status, _, body = _get(base + "/openapi.json")
        assert status == 200 and "/health/ready" in json.loads(body)["paths"]
        # Over the wire the body limit applies before any parsing.
        status, headers, body = _post(base + "/health", b"{" + b" " * 8192 + b"}")
        assert status == 413 and headers["Content-Type"] == "application/problem+json"
        assert (data / "postgres" / ".s.PGSQL.5432").exists()
        assert (data / "postgres" / "postmaster.pid").exists()
        canary = "CANARY-token-" + os.urandom(8).hex()
        assert _get(base + f"/health?token={canary}")[0] == 200
    assert proc.returncode == 0
    assert proc.stdout is not None
    output = proc.stdout.read()
    assert "GET /health HTTP/1.1" in output  # the access log is there, without its query string
    assert canary not in output
    # chalice local's own plain-text root handler is replaced by the JSON one (no unscrubbed copy).
    assert "request" not in output.splitlines()
    assert any('"logger":"crm.request"' in line for line in output.splitlines())
    assert not (data / "postgres" / "postmaster.pid").exists(), "PostgreSQL was left running"
    # A second run reuses the data directory.
    with devserver(data) as (base, _):
        assert _get(base + "/health/ready")[0] == 200
    assert not (data / "postgres" / "postmaster.pid").exists()


def test_run_with_database_url_starts_no_embedded_postgres(short_tmp: Path, fresh_db: TestDatabase) -> None:
    data = short_tmp / "data"
    with devserver(data, DATABASE_URL=fresh_db.app_url) as (base, _):
        assert _get(base + "/health/ready")[0] == 200
    assert not (data / "postgres").exists()
