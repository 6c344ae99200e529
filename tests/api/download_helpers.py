"""Download links as a client uses them: ask the API for a link, then fetch the link without credentials."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from chalice.test import Client

from chalicelib.settings import get_settings
from tests.api.auth_helpers import Browser, body_of, call


def link_for(api: Client, browser: Browser, workspace: str, attachment: str) -> dict[str, Any]:
    """The download document of an attachment or recording (asserting a 200 JSON answer)."""
    response = call(api, "GET", f"/workspaces/{workspace}/attachments/{attachment}", browser)
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/json"
    return dict(body_of(response))


def token_of(url: str) -> str:
    """The signed token of a local download link."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == get_settings().public_base_url and parts.path == "/downloads"
    (token,) = parse_qs(parts.query)["token"]
    return token


def follow(api: Client, url: str, *, headers: dict[str, str] | None = None) -> Any:
    """GET a local download link as a browser would: no cookie, no CSRF token, Accept */*."""
    return fetch_token(api, token_of(url), headers=headers)


def fetch_token(api: Client, token: str, *, headers: dict[str, str] | None = None) -> Any:
    """GET /downloads with this token (as is: tests tamper with it)."""
    return api.http.get(f"/downloads?token={token}", headers={"Accept": "*/*", **(headers or {})})
