"""Local key files (local stage only): created once with mode 0600, refused if readable by others."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class KeyFileError(RuntimeError):
    """The key file exists but is unsafe or malformed."""


def load_or_create_key(path: Path, length: int = 32) -> bytes:
    """Read `length` random bytes from `path`, creating the file (0600, exclusive) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once cannot both create (and disagree on) the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(length))
    mode = path.stat().st_mode
    # A key readable by group or others is as good as published: refuse rather than use it.
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path.name} must be readable by its owner only (chmod 600)")
    key = path.read_bytes()
    if len(key) != length:
        raise KeyFileError(f"{path.name} must hold exactly {length} bytes")
    return key
