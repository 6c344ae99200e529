"""The security /openapi.json states for each operation is the one the API enforces.

For every operation of the document: a public one never asks an anonymous caller to sign in; any other does.
An operation that lists the API key works with a key alone (no cookie, Origin or CSRF token); one that does
not refuses a key. Every signed-in one works with the session cookie, and a cookie write without its
X-CSRF-Token is refused. A route added without its access rule in chalicelib/openapi.py fails here.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from chalice.test import Client

import app as app_module
from chalicelib.db.pool import Database, use_database
from chalicelib.openapi import KEY_SCHEME, build_openapi
from chalicelib.settings import get_settings
from tests.api.auth_helpers import (
    Browser,
    Outbox,
    body_of,
    call,
    create_key,
    create_workspace,
    invite_and_join,
    sign_in,
)
from tests.conftest import scratch_database
from tests.security.test_idor_matrix import PARAM_RE, PARAM_SAMPLES, _try_body

SPEC = build_openapi(app_module.app)
OPERATIONS = sorted((path, method.upper()) for path, ops in SPEC["paths"].items() for method in ops)
MEMBER = "docs-admin@example.test"
# Bodies the IDOR matrix's generator cannot make (an address; it covers workspace routes only).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/auth/email-change"): {"new_email": "docs-new@example.test"},
    ("POST", "/auth/magic-link"): {"email": "docs-anyone@example.test"},
}


@dataclass
class World:
    """A workspace with an owner, an admin member (whose browser is used) and an admin API key."""

    client: Client
    outbox: Outbox
    workspace: str
    key: str
    browser: Browser

    def signed_in(self) -> Browser:
        """The admin's browser, signed in again when an operation (a logout) ended its session."""
        if call(self.client, "GET", "/auth/me", self.browser).status_code == 401:
            self.browser = sign_in(self.client, MEMBER, self.outbox)
        return self.browser


@pytest.fixture(scope="module")
def world(pg_admin_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Built once: the admin (not the owner) cannot delete the workspace the other operations use."""
    with pytest.MonkeyPatch.context() as patch, contextlib.ExitStack() as stack:
        patch.setenv("DATA_DIR", str(tmp_path_factory.mktemp("openapi-security")))
        for name in ("MAGIC_LINK_LIMIT_PER_EMAIL", "MAGIC_LINK_LIMIT_PER_IP", "SIGN_IN_ATTEMPTS_PER_IP"):
            patch.setenv(name, "10000")  # one sign-in per logout, and invitations, stay under the limits
        get_settings.cache_clear()
        stack.callback(get_settings.cache_clear)
        db = stack.enter_context(scratch_database(pg_admin_url, template_db))
        stack.callback(use_database, None, "app")
        use_database(Database(db.app_url, size=1, name="app"), "app")
        client = stack.enter_context(Client(app_module.app))
        box = Outbox(get_settings().data_dir / "outbox")
        owner = sign_in(client, "docs-owner@example.test", box)
        workspace = create_workspace(client, owner, "Docs")["id"]
        admin = invite_and_join(client, box, owner, workspace, MEMBER, "admin")
        key = create_key(client, owner, workspace, role="admin")["key"]
        yield World(client, box, workspace, key, admin)


def _detail(response: Any) -> str:
    try:
        return str((body_of(response) or {}).get("detail", ""))
    except json.JSONDecodeError:
        return ""


def _asks_to_sign_in(response: Any) -> bool:
    return response.status_code == 401 and "sign in" in _detail(response)


def _csrf_refusal(response: Any) -> bool:
    return response.status_code == 403 and ("X-CSRF-Token" in _detail(response) or "cross-site" in _detail(response))


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_operation_accepts_exactly_the_credentials_its_openapi_security_lists(world: World, path: str,
                                                                              method: str) -> None:
    op = SPEC["paths"][path][method.lower()]
    url = path
    for name in PARAM_RE.findall(path):
        url = url.replace("{" + name + "}", world.workspace if name == "workspace_id"
                          else PARAM_SAMPLES.get(name, str(uuid.uuid4())))
    valid, body = _try_body(method, path, {})
    body = BODIES.get((method, path), body if valid else None)
    assert valid or (method, path) in BODIES, f"add a valid body for {method} {path} to BODIES"
    schemes = {name for requirement in op["security"] for name in requirement}
    anonymous = call(world.client, method, url, body=body, origin=None, csrf=None)
    if not schemes:
        assert not _asks_to_sign_in(anonymous), (anonymous.status_code, anonymous.body)
        return
    assert _asks_to_sign_in(anonymous), (anonymous.status_code, anonymous.body)
    browser = world.signed_in()
    if any(p["name"] == "X-CSRF-Token" for p in op.get("parameters", [])):
        without = call(world.client, method, url, browser, body, csrf=None)
        assert _csrf_refusal(without), (without.status_code, without.body)
    by_cookie = call(world.client, method, url, browser, body)
    assert by_cookie.status_code != 401 and not _csrf_refusal(by_cookie), (by_cookie.status_code, by_cookie.body)
    by_key = call(world.client, method, url, body=body, bearer=world.key, origin=None, csrf=None)
    if KEY_SCHEME in schemes:
        # The key (admin, like the browser's user) gets what the cookie got, with no Origin or CSRF token; a
        # 409 after the cookie's 201 is the same unique record again, so the key's write got that far.
        same = by_key.status_code == by_cookie.status_code or (by_cookie.status_code, by_key.status_code) == (201, 409)
        assert same, (by_key.status_code, by_key.body, by_cookie.body)
    else:
        assert by_key.status_code in (401, 403), (by_key.status_code, by_key.body)
