"""B7: decrypting a stored credential through the vault vs a bare AES-256-GCM decrypt (the physical floor).

Paths, all on the same Twilio-shaped plaintext and the local raw AES key (no KMS, no database):
  * floor: cryptography's AESGCM.decrypt of the plaintext, nothing else;
  * cache miss, non-signing committing suite (what the store uses): Vault.decrypt (ESDK message parse,
    data-key unwrap, key-commitment check, AES-GCM, context check) + the pydantic model, i.e. everything
    get_credentials does after its SELECT;
  * cache miss, signing committing suite (ECDSA P-384 verify on top): why we do not use it;
  * cache hit: get_credentials served from the per-process cache (no database, no crypto).
Target: <= 250 us per cache-miss decrypt with the non-signing suite; cache hit ~1 us.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chalicelib.vault.envelope import Vault, credential_context
from chalicelib.vault.providers import load_plaintext, parse_credentials
from chalicelib.vault.store import CredentialCache, get_credentials

ROUNDS, CALLS = 7, 500
# A cache hit never touches the connection: passing none proves it (a miss would raise at once).
_NO_CONNECTION: Any = None


def _time_per_call(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def _paths(key_dir: Path) -> dict[str, Callable[[], object]]:
    tenant = uuid.uuid4()
    model = parse_credentials("twilio", {"account_sid": "AC" + uuid.uuid4().hex, "auth_token": uuid.uuid4().hex})
    plaintext, context = model.to_plaintext(), credential_context(tenant, "twilio")
    plain = Vault.local(key_dir / "master.key")
    signed = Vault.local(key_dir / "master.key", signed=True)
    stored_plain, stored_signed = plain.encrypt(plaintext, context), signed.encrypt(plaintext, context)

    aesgcm, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    sealed = aesgcm.encrypt(nonce, plaintext, None)
    warm = CredentialCache(ttl=3600)
    warm.put(tenant, "twilio", load_plaintext("twilio", plaintext))

    def floor() -> object:
        return aesgcm.decrypt(nonce, sealed, None)

    def miss(vault: Vault, stored: bytes) -> Callable[[], object]:
        def run() -> object:
            return load_plaintext("twilio", vault.decrypt(stored, context).plaintext)
        return run

    def hit() -> object:
        return get_credentials(_NO_CONNECTION, tenant_id=tenant, provider="twilio", vault=plain, cache=warm)

    return {"AESGCM floor": floor, "miss, committing (non-signing)": miss(plain, stored_plain),
            "miss, committing + ECDSA P-384": miss(signed, stored_signed), "cache hit": hit}


def run() -> dict[str, float]:
    """Run B7 and print its figures; returns them for the summary."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = _paths(Path(tmp))
        for fn in paths.values():
            assert fn() is not None  # every path really yields the credential
            _time_per_call(fn, 50)  # warm up
        samples: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(ROUNDS):  # interleaved rounds: noise hits every path alike
            for name, fn in paths.items():
                samples[name].append(_time_per_call(fn, CALLS))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["AESGCM floor"]
    results: dict[str, float] = {}
    print(f"B7 vault decrypt, local raw AES key (median of {ROUNDS} x {CALLS} calls)")
    for name, median in medians.items():
        results[f"B7 {name} us"] = median * 1e6
        results[f"B7 {name} ratio"] = median / base
        print(f"  {name:34s} {median * 1e6:9.2f} us/op   ratio {median / base:8.1f}x")
    plain, signed = medians["miss, committing (non-signing)"], medians["miss, committing + ECDSA P-384"]
    print(f"  signing / non-signing suite: {signed / plain:4.1f}x;  non-signing miss {plain * 1e6:.0f} us"
          f" (target <= 250 us): {'ok' if plain <= 250e-6 else 'OVER'};  cache hit {medians['cache hit'] * 1e6:.2f} us")
    results["B7 signing/non-signing"] = signed / plain
    return results


if __name__ == "__main__":
    run()
