"""Fixtures of the sign-in and workspace tests (defined in tests/api/auth_helpers.py)."""

from collections.abc import Iterator

import pytest

from chalicelib.inbox.ingest import use_queue
from chalicelib.inbox.processing import process_event
from chalicelib.inbox.queue import LocalQueue
from tests.api.auth_helpers import api, env, logs, outbox  # noqa: F401


@pytest.fixture
def worker() -> Iterator[LocalQueue]:
    """The inbox's in-process worker; `drain()` waits until every enqueued event is processed."""
    queue = LocalQueue(process_event)
    use_queue(queue)
    yield queue
    use_queue(None)
