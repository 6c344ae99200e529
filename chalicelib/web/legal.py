"""The /legal/sub-processors page: the registry as HTML, every value escaped, under a CSP with no script."""

from __future__ import annotations

import base64
import hashlib
from html import escape

from chalicelib.legal import SubProcessorOut, SubProcessors

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "section{border-top:1px solid #ccc;padding:.5rem 0}dt{font-weight:600}dd{margin:0 0 .5rem 1rem}"
          "code{font-size:.9em}")


def _hash(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"


# Nothing to run, load, connect to or submit: only the page's own inline style, by its hash.
CSP = (f"default-src 'none'; style-src {_hash(_STYLE)}; form-action 'none'; frame-ancestors 'none'; "
       "base-uri 'none'")


# Public, like the privacy policy that points here; the list changes only with a deployment.
CACHE = {"Cache-Control": "public, max-age=300"}


def page_headers() -> dict[str, str | list[str]]:
    """The page's security headers: its CSP, no framing, no Referer; cached briefly by anyone."""
    return {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer", **CACHE}


def _items(values: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(v)}</li>" for v in values) + "</ul>" if values else "<p>none</p>"


def _entry(p: SubProcessorOut) -> str:
    services = "".join(f"<dt>{escape(s.name)}</dt><dd>{escape(s.purpose)}{_items(s.data_categories)}</dd>"
                       for s in p.services)
    hosts = ", ".join(f"<code>{escape(h)}</code>" for h in p.hosts) or "none (the code calls no host of theirs)"
    parts = [f'<section id="{escape(p.key)}"><h2>{escape(p.name)}</h2>',
             f"<dl><dt>Purpose</dt><dd>{escape(p.purpose)}</dd>",
             f"<dt>Data it receives</dt><dd>{_items(p.data_categories)}</dd>",
             f"<dt>Region</dt><dd>{escape(p.region)}</dd>",
             f"<dt>Hosts the service contacts</dt><dd>{hosts}</dd>"]
    if p.note:
        parts.append(f"<dt>Note</dt><dd>{escape(p.note)}</dd>")
    parts.append("</dl>")
    if services:
        parts.append(f"<h3>Services used</h3><dl>{services}</dl>")
    parts.append("</section>")
    return "".join(parts)


def render(listing: SubProcessors) -> str:
    """The whole page."""
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Sub-processors</title><style>{_STYLE}</style></head><body>"
            "<h1>Sub-processors</h1>"
            f"<p>{escape(listing.operator)} shares data only with the parties below, each for the purpose "
            "given. The same list is available as JSON at <a href=\"sub-processors.json\">"
            "sub-processors.json</a>. Questions: "
            f"<a href=\"mailto:{escape(listing.contact)}\">{escape(listing.contact)}</a>.</p>"
            + "".join(_entry(p) for p in listing.sub_processors) + "</body></html>")
