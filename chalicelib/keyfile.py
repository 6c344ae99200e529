"""Local key files (local stage only): created once, atomically, mode 0600; refused when unsafe.

One implementation for every local secret: the master key of the vault and the app's HMAC key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

KEY_BYTES = 32  # AES-256 / HMAC-SHA256


class KeyFileError(RuntimeError):
    """A key file is missing, malformed or readable by others (never says its bytes)."""


def _check_open_file(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{path} is not a regular file")
    # Group/other bits set means another local user may have read the key: refuse rather than use
    # a key that may already be known (and tell the operator to rotate, not to chmod and carry on).
    if info.st_mode & 0o077:
        raise KeyFileError(f"{path} is accessible by group or others (mode {stat.S_IMODE(info.st_mode):o}); "
                           "it must be 0600 and the key should be rotated")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise KeyFileError(f"{path} is owned by another user")
    if info.st_size != KEY_BYTES:
        raise KeyFileError(f"{path} must hold exactly {KEY_BYTES} bytes")


def read_key_file(path: Path) -> bytes:
    """Read an existing key file, refusing a wrong length, a symlink or group/other permissions."""
    try:
        # O_NOFOLLOW: a symlink planted at the key path cannot redirect us to another file.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyFileError(f"{path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be opened ({exc.strerror})") from None
    try:
        _check_open_file(fd, path)
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path} must hold exactly {KEY_BYTES} bytes")
    return key


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_CREAT|O_EXCL with mode 0600: the file is never, even for an instant, readable by others and
    # never reuses a file someone else created. Written under a temporary name and then hard-linked
    # into place, so a concurrent first run never sees a half-written key.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process won the race; its key is the key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_key_file(path: Path) -> bytes:
    """The local master key at `path`, created (32 random bytes, mode 0600) on first use."""
    if not os.path.lexists(path):
        _create_key_file(path)
    return read_key_file(path)
