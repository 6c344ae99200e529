"""W07: Twilio's signature covers the public URL from PUBLIC_BASE_URL, never one built from the Host header.

An attacker who holds a leaked or guessed signature for their own host must not get it accepted by sending
that Host; Twilio's genuine callbacks must pass whatever Host a proxy in between puts on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from chalice.test import Client

from tests.api.auth_helpers import Outbox, problem
from tests.api.test_telephony import FORM, TOKEN, _rejections, _rows, _sid, _sign, _status, _workspace
from tests.conftest import TestDatabase

PUBLIC = "https://crm.example.test"


def _post_with_host(client: Client, workspace: str, params: dict[str, str], signed_url: str, host: str) -> Any:
    return client.http.post(f"/webhooks/twilio/{workspace}/calls", body=urlencode(params).encode(),
                            headers={"Content-Type": FORM, "Host": host,
                                     "X-Twilio-Signature": _sign(TOKEN, signed_url, params)})


def test_a_signature_over_the_attackers_host_is_401_and_stores_nothing(
        api: Client, outbox: Outbox, env: Callable[..., None], fresh_db: TestDatabase) -> None:
    _owner, workspace = _workspace(api, outbox)
    env(public_base_url=PUBLIC)
    path = f"/webhooks/twilio/{workspace}/calls"
    for host, signed in (("attacker.example", f"https://attacker.example{path}"),
                         ("attacker.example:8443", f"https://attacker.example:8443{path}"),
                         ("attacker.example", f"http://attacker.example{path}")):
        # Signed with the workspace's real token, over the URL a Host-derived builder would check.
        problem(_post_with_host(api, workspace, _status(_sid("CA"), "ringing"), signed, host), 401)
    assert _rows(fresh_db, "SELECT count(*) FROM inbound_events") == [(0,)]
    assert _rows(fresh_db, "SELECT count(*) FROM calls") == [(0,)]
    assert _rejections(fresh_db) == {"bad_signature": 3}


def test_a_signature_over_the_public_url_passes_whatever_the_host_header(
        api: Client, outbox: Outbox, env: Callable[..., None], fresh_db: TestDatabase) -> None:
    _owner, workspace = _workspace(api, outbox)
    env(public_base_url=PUBLIC)
    public_url = f"{PUBLIC}/webhooks/twilio/{workspace}/calls"
    for host in ("attacker.example", "abc123.execute-api.eu-west-1.amazonaws.com", "127.0.0.1:8000"):
        response = _post_with_host(api, workspace, _status(_sid("CA"), "ringing"), public_url, host)
        assert response.status_code == 200, (host, response.body)
    assert _rows(fresh_db, "SELECT count(*) FROM inbound_events") == [(3,)]
    assert _rejections(fresh_db) == {}
