"""`make run`: the embedded PostgreSQL (unless DATABASE_URL is set), migrations, then `chalice local`.

Ctrl-C or SIGTERM stops everything this process started, PostgreSQL included. Local state lives
under DATA_DIR, so a second run reuses the data.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from chalicelib.db.embedded import prepare_database
from chalicelib.observability import command_settings
from chalicelib.settings import get_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("crm.devserver")


_QUERY_IN_REQUEST_LINE = re.compile(r'("(?:[A-Z]+) [^" ?]*)\?[^" ]*')


def _relay(child: subprocess.Popen[str]) -> None:
    """Copy chalice local's output, dropping query strings from its access-log lines."""
    # http.server logs the full request line; a query string may carry a token or an email.
    assert child.stdout is not None
    for line in child.stdout:
        sys.stdout.write(_QUERY_IN_REQUEST_LINE.sub(r"\1", line))
        sys.stdout.flush()


def _start_scheduler(env: dict[str, str]) -> Any:
    """The scheduled functions on their schedules, in this process (EventBridge's local stand-in)."""
    if "JOBS_DATABASE_URL" not in env:
        log.warning("JOBS_DATABASE_URL is not set: scheduled jobs do not run")
        return None
    os.environ.update({k: env[k] for k in ("DATA_DIR", "DATABASE_URL", "JOBS_DATABASE_URL")})
    get_settings.cache_clear()
    from functions.schedules import Scheduler

    scheduler = Scheduler()
    scheduler.start()
    return scheduler


def main() -> int:
    """Start the local stack and serve the API until interrupted."""
    settings = command_settings()
    if settings is None:
        return 2
    data_dir = settings.data_dir.resolve()
    for sub in ("outbox", "blobs"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    prepared = prepare_database(settings)
    env = {**os.environ, "DATA_DIR": str(data_dir), "DATABASE_URL": prepared.app_url, "STAGE": "local"}
    if prepared.jobs_url:
        env["JOBS_DATABASE_URL"] = prepared.jobs_url
    scheduler = _start_scheduler(env)
    # chalice local, with API Gateway's greedy catch-all matching (chalicelib.localserver).
    command = [sys.executable, "-m", "chalicelib.localserver", "local", "--host", settings.host,
               "--port", str(settings.port), "--stage", "local", "--no-autoreload"]
    child = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env,  # noqa: S603 - our own venv's Python
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    threading.Thread(target=_relay, args=(child,), daemon=True).start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        # Forward the stop to chalice local; PostgreSQL is stopped once it has exited.
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"API: http://{settings.host}:{settings.port}/health  (Ctrl-C stops everything)", flush=True)
    try:
        code = child.wait()
    finally:
        if scheduler is not None:
            scheduler.stopped.set()
            scheduler.join(timeout=30)
        if child.poll() is None:
            child.kill()
        prepared.stop()
        print("stopped", flush=True)
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


if __name__ == "__main__":
    sys.exit(main())
