"""Over the wire (`make run`'s chalice local): unknown paths, over-deep JSON and a database that is down
get problems (404, 400, 503), never chalice local's 403 or a 500."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.test_wire import devserver
from tests.conftest import TestDatabase
from tests.dbfaults import closed_port

pytestmark = pytest.mark.wire


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short, so a unix socket path under it stays under the 107-byte limit.
    path = Path(tempfile.mkdtemp(prefix="crm-", dir="/tmp"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


def _send(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _problem(answer: tuple[int, dict[str, str], bytes], status: int) -> dict[str, object]:
    code, headers, body = answer
    assert code == status, (code, body)
    assert headers["Content-Type"] == "application/problem+json"
    found: dict[str, object] = json.loads(body)
    assert found["status"] == status and "Traceback" not in body.decode()
    return found


def test_unknown_paths_and_deep_json_get_problems_over_the_wire(data_dir: Path, fresh_db: TestDatabase) -> None:
    with devserver(data_dir, DATABASE_URL=fresh_db.app_url) as (base, _):
        for path in ("/", "/favicon.ico", "/nope", "/a/b/c", "/workspaces/x/nope/deeper"):
            for method in ("GET", "POST", "DELETE"):
                _problem(_send(method, base + path, b"{}" if method == "POST" else None), 404)
        deep = b'{"email": ' + b"[" * 1000 + b"]" * 1000 + b"}"
        _problem(_send("POST", base + "/auth/magic-link", deep), 400)


def test_database_down_is_503_with_retry_after_over_the_wire(data_dir: Path) -> None:
    down = f"host=127.0.0.1 port={closed_port()} dbname=crm user=crm_app"
    with devserver(data_dir, DATABASE_URL=down) as (base, _):
        for answer in (_send("GET", base + "/health/ready"),
                       _send("POST", base + "/auth/magic-link", b'{"email": "a@example.test"}')):
            _problem(answer, 503)
            assert int(answer[1]["Retry-After"]) > 0
