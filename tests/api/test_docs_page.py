"""GET /docs: a Swagger UI page from files the API serves itself, under a strict CSP, with no CDN."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from chalice.test import Client

import app as app_module


class _Page(HTMLParser):
    """What the page loads: scripts (and whether any is inline), stylesheets, icons, inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.inline_scripts = 0
        self.stylesheets: list[str] = []
        self.icons: list[str] = []
        self.inline_styles = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "style" or "style" in found:
            self.inline_styles += 1
        if any(name.startswith("on") for name in found):  # event handler attributes are inline script
            self.inline_scripts += 1
        if tag == "script":
            self._in_script = True
            if "src" in found:
                self.scripts.append(found["src"])
        if tag == "link" and found.get("rel") == "stylesheet":
            self.stylesheets.append(found["href"])
        if tag == "link" and found.get("rel") == "icon":
            self.icons.append(found["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(app_module.app) as c:
        yield c


def _page(client: Client) -> tuple[str, _Page]:
    response = client.http.get("/docs")
    assert response.status_code == 200, response.body
    html = response.body.decode()
    parsed = _Page()
    parsed.feed(html)
    return html, parsed


def _directives(csp: str) -> dict[str, str]:
    return {part.split()[0]: " ".join(part.split()[1:]) for part in csp.split(";") if part.strip()}


def test_docs_page_is_html_under_a_csp_that_allows_only_its_own_files() -> None:
    with Client(app_module.app) as client:
        response = client.http.get("/docs")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert _directives(response.headers["Content-Security-Policy"]) == {
        "default-src": "'none'", "script-src": "'self'", "style-src": "'self'", "img-src": "'self' data:",
        "connect-src": "'self'", "frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'none'"}
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_docs_page_has_no_inline_script_or_style_and_names_no_other_host(client: Client) -> None:
    html, page = _page(client)
    assert page.inline_scripts == 0 and page.inline_styles == 0
    assert not re.search(r"(?:https?:)?//", html), "the page must load nothing from another host (no CDN)"
    assert page.scripts and page.stylesheets
    assert all(url.startswith("docs/") for url in page.scripts + page.stylesheets)
    assert [icon.split(",")[0] for icon in page.icons] == ["data:image/png;base64"]


def test_every_file_the_docs_page_loads_is_served_with_its_type_and_a_year_of_caching(client: Client) -> None:
    _, page = _page(client)
    expected = {**dict.fromkeys(page.scripts, "text/javascript; charset=utf-8"),
                **dict.fromkeys(page.stylesheets, "text/css; charset=utf-8")}
    assert len(page.scripts) >= 2 and page.stylesheets
    for url, content_type in expected.items():
        response = client.http.get("/" + url)  # relative to /docs, so under /docs/
        assert response.status_code == 200, url
        assert response.headers["Content-Type"] == content_type
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        digest = url.rsplit(".", 2)[1]
        assert re.fullmatch(r"[0-9a-f]{16}", digest) and response.headers["ETag"] == f'"{digest}"'
        # The name follows the content (what makes a year of caching safe): a new file, a new name.
        body = response.body if isinstance(response.body, bytes) else response.body.encode()
        assert digest == hashlib.sha256(body).hexdigest()[:16]


def test_docs_page_loads_swagger_ui_and_a_starter_script_that_reads_openapi_json(client: Client) -> None:
    _, page = _page(client)
    names = [url.split("/")[-1].split(".")[0] for url in page.scripts]
    assert names == ["docs", "swagger-ui-bundle"]  # the starter first: it waits for DOMContentLoaded
    starter = client.http.get("/" + page.scripts[0]).body.decode()
    assert 'url: "openapi.json"' in starter and "validatorUrl: null" in starter
    bundle = client.http.get("/" + page.scripts[1]).body.decode()
    assert "SwaggerUIBundle" in bundle


def test_an_unchanged_docs_file_answers_304_to_its_etag(client: Client) -> None:
    _, page = _page(client)
    for url in ("docs", page.scripts[0]):
        first = client.http.get("/" + url)
        again = client.http.get("/" + url, headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304 and not again.body
        assert again.headers["ETag"] == first.headers["ETag"]
        other = client.http.get("/" + url, headers={"If-None-Match": '"0000000000000000"'})
        assert other.status_code == 200 and other.body == first.body


@pytest.mark.parametrize("name", ["swagger-ui-bundle.js", "swagger-ui-bundle.0000000000000000.js",
                                  "swagger-editor-bundle.js", "LICENSE", "..%2Fdocs.py", "favicon-32x32.png"])
def test_a_file_not_named_by_the_current_page_is_a_404_problem(client: Client, name: str) -> None:
    response = client.http.get(f"/docs/{name}")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
