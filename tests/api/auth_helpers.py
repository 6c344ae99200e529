"""Shared helpers for the sign-in, session, workspace and API key tests.

The outbox (DATA_DIR/outbox) plays the fake mailer: every email is one .eml file. `sign_in()` walks the
real flow (POST /auth/magic-link, read the link from the newest email, POST /auth/session) and returns
what a browser would hold afterwards: the cookie and the CSRF token. `call()` sends what the browser's
script would send: JSON, the cookie, `Origin: PUBLIC_BASE_URL's origin` and `X-CSRF-Token`.
"""

from __future__ import annotations

import contextlib
import email
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from chalice.test import Client

from chalicelib.settings import get_settings

ORIGIN = "http://127.0.0.1:8000"  # the origin of the default PUBLIC_BASE_URL
TOKEN_RE = re.compile(r"#token=([A-Za-z0-9_-]+)")
CODE_RE = re.compile(r"code on the sign-in page: ([0-9A-Z]{6,8})\b")


@dataclass(frozen=True)
class Mail:
    """One email from the outbox."""

    path: Path
    message: EmailMessage

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]

    @property
    def raw(self) -> bytes:
        return self.path.read_bytes()

    @property
    def link(self) -> str:
        match = re.search(r"https?://\S+", self.text)
        assert match, self.text
        return match.group(0)

    @property
    def token(self) -> str:
        match = TOKEN_RE.search(self.text)
        assert match, self.text
        return match.group(1)

    @property
    def code(self) -> str:
        match = CODE_RE.search(self.text)
        assert match, self.text
        return match.group(1)


class Outbox:
    """The local mail backend's directory, read like a fake mailer."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def clear(self) -> None:
        if self.path.exists():
            for item in self.path.iterdir():
                if item.is_file():
                    item.unlink()

    def files(self) -> list[Path]:
        if not self.path.exists():
            return []
        found = [p for p in self.path.iterdir() if p.suffix == ".eml" and not p.name.startswith(".")]
        # Modification time first (the file names carry the traveled clock under time-machine).
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def messages(self) -> list[Mail]:
        result = []
        for path in self.files():
            with path.open("rb") as handle:
                message = email.message_from_binary_file(handle, policy=default_policy)
            assert isinstance(message, EmailMessage)
            result.append(Mail(path, message))
        return result

    def count(self) -> int:
        return len(self.files())

    def newest(self, to: str | None = None) -> Mail:
        mails = [m for m in self.messages() if to is None or m.to.lower() == to.lower()]
        assert mails, f"no email{' to ' + to if to else ''} in {self.path}"
        return mails[-1]


def outbox_dir() -> Path:
    return get_settings().data_dir / "outbox"


@dataclass
class Browser:
    """What a signed-in browser holds: the cookie (header form and raw value) and the CSRF token."""

    cookie: str
    cookie_value: str
    csrf: str
    user: dict[str, Any]
    body: dict[str, Any]

    @property
    def user_id(self) -> str:
        return str(self.user["id"])


def body_of(response: Any) -> Any:
    raw = response.body
    if not raw:
        return None
    return json.loads(raw)


def set_cookie_of(response: Any) -> str:
    value = response.headers.get("Set-Cookie") or response.headers.get("set-cookie")
    assert value, f"no Set-Cookie in {dict(response.headers)}"
    return str(value)


def cookie_pair(set_cookie: str) -> tuple[str, str]:
    name, _, value = set_cookie.split(";", 1)[0].partition("=")
    return name.strip(), value.strip()


def post_json(client: Client, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    """A JSON POST without cookie or CSRF token (the unauthenticated sign-in routes)."""
    return client.http.post(path, headers={"Content-Type": "application/json", **(headers or {})},
                            body=json.dumps(body))


def request_link(client: Client, address: str, *, next_path: str | None = None,
                 headers: dict[str, str] | None = None) -> Any:
    body: dict[str, Any] = {"email": address}
    if next_path is not None:
        body["next"] = next_path
    return post_json(client, "/auth/magic-link", body, headers)


def session_from(response: Any) -> Browser:
    assert response.status_code == 200, response.body
    payload = body_of(response)
    header = set_cookie_of(response)
    name, value = cookie_pair(header)
    return Browser(cookie=f"{name}={value}", cookie_value=value, csrf=payload["csrf_token"],
                   user=payload["user"], body=payload)


def sign_in_with_token(client: Client, token: str, headers: dict[str, str] | None = None) -> Any:
    return post_json(client, "/auth/session", {"token": token}, {"Origin": ORIGIN, **(headers or {})})


def sign_in(client: Client, address: str, outbox: Outbox | None = None, *, next_path: str | None = None,
            headers: dict[str, str] | None = None) -> Browser:
    """The whole magic-link flow for `address`; returns the signed-in browser."""
    box = outbox or Outbox(outbox_dir())
    response = request_link(client, address, next_path=next_path)
    assert response.status_code == 202, response.body
    mail = box.newest(to=address)
    return session_from(sign_in_with_token(client, mail.token, headers))


def call(client: Client, method: str, path: str, browser: Browser | None = None, body: Any = None, *,
         bearer: str | None = None, origin: str | None = ORIGIN, csrf: str | bool | None = True,
         headers: dict[str, str] | None = None) -> Any:
    """One API call as the signed-in browser (cookie + Origin + X-CSRF-Token) or with an API key."""
    sent: dict[str, str] = {}
    if body is not None:
        sent["Content-Type"] = "application/json"
    if browser is not None:
        sent["Cookie"] = browser.cookie
        if csrf is True:
            sent["X-CSRF-Token"] = browser.csrf
    if isinstance(csrf, str):
        sent["X-CSRF-Token"] = csrf
    if bearer is not None:
        sent["Authorization"] = f"Bearer {bearer}"
    if origin is not None:
        sent["Origin"] = origin
    sent.update(headers or {})
    raw = b"" if body is None else json.dumps(body).encode()
    return client.http.request(method, path, headers=sent, body=raw)


def create_workspace(client: Client, browser: Browser, name: str = "Acme") -> dict[str, Any]:
    response = call(client, "POST", "/workspaces", browser, {"name": name})
    assert response.status_code == 201, response.body
    return dict(body_of(response))


def invite_and_join(client: Client, outbox: Outbox, inviter: Browser, workspace_id: str, address: str,
                    role: str = "member") -> Browser:
    """Invite `address` into the workspace and sign in with the invitation's link."""
    response = call(client, "POST", f"/workspaces/{workspace_id}/invitations", inviter,
                    {"email": address, "role": role})
    assert response.status_code == 202, response.body
    mail = outbox.newest(to=address)
    return session_from(sign_in_with_token(client, mail.token))


def create_key(client: Client, browser: Browser, workspace_id: str, role: str = "member",
               **extra: Any) -> dict[str, Any]:
    response = call(client, "POST", f"/workspaces/{workspace_id}/api-keys", browser,
                    {"name": f"{role} key", "role": role, **extra})
    assert response.status_code == 201, response.body
    return dict(body_of(response))


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.body)
    assert response.headers["Content-Type"] == "application/problem+json"
    payload = body_of(response)
    assert payload["status"] == status
    return dict(payload)


def fresh_address(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@example.test"


@contextlib.contextmanager
def real_environ() -> Iterator[None]:
    """Put the process's os.environ back afterwards: chalice.test.Client swaps os.environ for a copy around each
    request and restores what it found, so clients in several threads can leave a copy (with this test's settings)
    in place for every later test."""
    environ = os.environ
    try:
        yield
    finally:
        os.environ = environ  # noqa: B003 - the very object chalice.test swapped out, not a new mapping
