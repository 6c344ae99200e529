"""Fixtures of the sign-in and workspace tests (defined in tests/api/auth_helpers.py)."""

from tests.api.auth_helpers import api, env, logs, outbox  # noqa: F401
