"""The /docs page: Swagger UI from the pinned swagger-ui-py wheel, served by the API itself (no CDN).

Each asset is served under a name that carries a hash of its content, so browsers may cache it for a
year: a new release of the files is a new name, never a stale copy.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from string import Template

_HERE = Path(__file__).parent
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
HTML = "text/html; charset=utf-8"
# Scripts and styles come only from this API, and the page may only talk to this API: no inline code, no
# CDN, no framing, no forms. img-src allows data: because Swagger UI's stylesheet draws its icons as data:
# images (and the favicon is one).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
ASSET_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    """One file of the page, as served under its hashed name."""

    name: str
    body: str
    content_type: str
    etag: str

    def headers(self) -> dict[str, str]:
        """Content type, validator and a year's caching (the name changes when the content does)."""
        return {"Content-Type": self.content_type, "ETag": self.etag, "Cache-Control": ASSET_CACHE}


def _swagger_static() -> Path:
    """swagger-ui-py's static folder, found without importing the package (its import pulls in Jinja)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _asset(path: Path, content_type: str) -> Asset:
    data = path.read_bytes()
    digest = _digest(data)
    stem, _, extension = path.name.rpartition(".")
    return Asset(f"{stem}.{digest}.{extension}", data.decode("utf-8"), content_type, f'"{digest}"')


@functools.cache
def _assets() -> dict[str, Asset]:
    """Template key -> asset, read and hashed once per process (on the first /docs request)."""
    static = _swagger_static()
    return {
        "swagger_ui_css": _asset(static / "swagger-ui.css", CSS),
        "index_css": _asset(static / "index.css", CSS),
        "swagger_ui_bundle_js": _asset(static / "swagger-ui-bundle.js", JS),
        "docs_js": _asset(_HERE / "docs.js", JS),
    }


def asset(name: str) -> Asset | None:
    """The asset served under this hashed name, or None (an unknown or outdated name)."""
    return next((a for a in _assets().values() if a.name == name), None)


@functools.cache
def docs_page() -> Asset:
    """The HTML page; its security headers come from `page_headers`."""
    # Inline as a data: URL: a PNG route would need Chalice's binary handling (and a matching Accept header).
    favicon = base64.b64encode((_swagger_static() / "favicon-32x32.png").read_bytes()).decode()
    # Relative URLs: the page works under a path prefix too (an API Gateway stage in the URL).
    values = {key: f"docs/{a.name}" for key, a in _assets().items()}
    html = Template((_HERE / "docs.html").read_text(encoding="utf-8")).substitute(
        values, favicon=f"data:image/png;base64,{favicon}")
    return Asset("docs", html, HTML, f'"{_digest(html.encode())}"')


def page_headers(page: Asset) -> dict[str, str]:
    """The page's headers: its CSP, no framing, no Referer, and revalidation on every load."""
    return {
        "Content-Type": page.content_type,
        "Content-Security-Policy": CSP,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        # Revalidated each time (a cheap 304): the page names the current assets' hashes.
        "Cache-Control": "no-cache",
        "ETag": page.etag,
    }
