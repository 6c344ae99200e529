"""AWS stand-ins of the tests (loaded for every test by tests/conftest.py): moto's server, reached over HTTP
through AWS_ENDPOINT_URL as a Lambda's boto3 reaches AWS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's server on a free port of 127.0.0.1 (its state lives in this process), stopped at the end."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
