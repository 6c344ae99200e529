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


PAYMENT_COMPLETE = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Payment received</title>"
                    "<meta name=\"viewport\" content=\"width=device-width\"></head><body><h1>Thank you</h1>"
                    "<p>Your payment was received. You can close this page.</p></body></html>")


def payment_complete_page() -> tuple[str, dict[str, str | list[str]]]:
    """Where Stripe's Checkout sends a payer back: a static page, no script, nothing of the payment."""
    return PAYMENT_COMPLETE, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
                              "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
                              "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
