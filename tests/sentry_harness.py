"""Sentry in a child process with a capturing transport (its integrations patch the interpreter for good).

The child calls `capture()` first and `report(**extra)` last; the parent calls `run_child()` and gets
the captured envelopes (as text), events and whatever the child added.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FAKE_DSN = "https://public@sentry.invalid/1"
_transport: Any = None


def capture() -> None:
    """Initialise Sentry (through the app's own init) with a transport that records every envelope."""
    global _transport
    from sentry_sdk.envelope import Envelope
    from sentry_sdk.transport import Transport

    from chalicelib.observability import init_sentry

    class CapturingTransport(Transport):
        def __init__(self) -> None:
            super().__init__()
            self.envelopes: list[Envelope] = []

        def capture_envelope(self, envelope: Envelope) -> None:
            self.envelopes.append(envelope)

    _transport = CapturingTransport()
    assert init_sentry(FAKE_DSN, environment="test", release="test", transport=_transport)


def report(**extra: Any) -> None:
    """Flush Sentry and print the captured envelopes and events (plus `extra`) as the last stdout line."""
    import sentry_sdk

    sentry_sdk.flush()
    envelopes = _transport.envelopes
    print(json.dumps({**extra, "envelopes": [env.serialize().decode("utf-8", "replace") for env in envelopes],
                      "events": [e for e in (env.get_event() for env in envelopes) if e is not None]}))
    sentry_sdk.get_client().close()


def run_child(module: str, function: str, env_extra: dict[str, str]) -> dict[str, Any]:
    """Run `module.function()` in a fresh interpreter and return what its report() printed."""
    env = {k: v for k, v in os.environ.items() if k not in ("SENTRY_DSN", "DATABASE_URL")}
    env.update({"PYTHONPATH": str(ROOT), "STAGE": "local", **env_extra})
    result = subprocess.run([sys.executable, "-c", f"from {module} import {function}; {function}()"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    captured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return captured
