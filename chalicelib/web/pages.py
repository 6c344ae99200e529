"""The sign-in confirm page, with a CSP that allows exactly its own inline script and style."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

_PAGE = Path(__file__).with_name("confirm.html")


def _hash(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"


@functools.cache
def confirm_page() -> tuple[str, dict[str, str]]:
    """The HTML and its security headers."""
    html = _PAGE.read_text(encoding="utf-8")
    scripts = [_hash(m) for m in re.findall(r"<script>(.*?)</script>", html, re.S)]
    styles = [_hash(m) for m in re.findall(r"<style>(.*?)</style>", html, re.S)]
    csp = (f"default-src 'none'; script-src {' '.join(scripts)}; style-src {' '.join(styles)}; "
           "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": csp,
        # The link's fragment never leaves the browser, and no Referer leaks the page either.
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }
    return html, headers
