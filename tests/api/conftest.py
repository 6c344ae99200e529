"""Fixtures shared by the API tests: alice's workspace and bob's, each with its signed-in owner (a module
that needs another label or type defines its own `ws`)."""

from __future__ import annotations

import pytest
from chalice.test import Client

from tests.api.auth_helpers import Outbox
from tests.api.crm_helpers import Workspace, new_workspace


@pytest.fixture
def ws(api: Client, outbox: Outbox) -> Workspace:
    return new_workspace(api, outbox, "alice")


@pytest.fixture
def other(api: Client, outbox: Outbox) -> Workspace:
    return new_workspace(api, outbox, "bob")
