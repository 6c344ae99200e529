"""Outbound HTTP to providers and media hosts, safe against SSRF.

https only; the host is resolved once and every address must be public (no private, loopback,
link-local, multicast, reserved or metadata ranges, IPv4-mapped forms included); the connection goes
to that pinned address (no second lookup: no DNS rebinding), with TLS verified for the host name;
redirects are never followed; time and size are capped. Local fake servers used by tests are allowed
only by an explicit `allow` list of host:port (OUTBOUND_ALLOW_HOSTS, refused in prod).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # urllib3 is imported on first use: it costs cold-start time on every API Lambda
    import urllib3

Resolver = Callable[[str, int], list[str]]
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 3.0, 10.0


class OutboundRefused(Exception):
    """The URL is not one we may call (scheme, address, size), or the request failed on the way.

    `kind` classifies it without any detail of the URL or the answer: refused (the guard said no),
    too_large, or the transport error's class name (ConnectTimeoutError, ReadTimeoutError, ...).
    """

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class OutboundResponse:
    """Status, headers and (capped) body of a response."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def json_object(response: OutboundResponse, error: Callable[[str], Exception], call: str,
                ok: Container[int] = (200,)) -> dict[str, Any]:
    """A provider API's answer as its JSON object, or `error` naming the call and what was wrong (the status, never
    the body: it may quote what was sent)."""
    if response.status not in ok:
        raise error(f"{call} answered {response.status}")
    try:
        answer = json.loads(response.body)
    except ValueError:
        raise error(f"{call} answered no JSON") from None
    if not isinstance(answer, dict):
        raise error(f"{call} answered no object")
    return answer


def _system_resolver(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable (and not a mapped or embedded private one)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            return is_public(str(mapped))
    return bool(ip.is_global) and not (ip.is_multicast or ip.is_reserved or ip.is_link_local)


def resolve_checked(url: str, *, allow: frozenset[str] = frozenset(), resolver: Resolver = _system_resolver
                    ) -> tuple[str, str, int, str]:
    """(scheme, host, port, pinned address) for a URL we may call, or OutboundRefused."""
    parts = urlsplit(url)
    host, scheme = (parts.hostname or "").rstrip("."), parts.scheme
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise OutboundRefused("bad port") from None
    if f"{host}:{port}" in allow:
        return scheme, host, port, resolver(host, port)[0]
    if scheme != "https" or not host or parts.username or parts.password:
        raise OutboundRefused("only plain https URLs are allowed")
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError):  # UnicodeError: a label that is empty or longer than 63 (IDNA)
        raise OutboundRefused("the host does not resolve") from None
    # Every address must be public: an attacker's DNS could mix a public and a private answer.
    if not addresses or not all(is_public(a) for a in addresses):
        raise OutboundRefused("the host resolves to a non-public address")
    return scheme, host, port, addresses[0]


def request(method: str, url: str, *, headers: Mapping[str, str] | None = None, body: bytes | None = None,
            max_bytes: int = 16 * 1024 * 1024, allow: frozenset[str] = frozenset(),
            resolver: Resolver | None = None, timeout: urllib3.Timeout | None = None,
            total_timeout_s: float | None = None, truncate: bool = False) -> OutboundResponse:
    """One request to a checked, pinned address; 3xx is returned as is (never followed).

    `total_timeout_s` bounds the whole exchange (connect still CONNECT_TIMEOUT_S). A body over `max_bytes` is
    refused, or with `truncate` cut to its first `max_bytes` (the rest unread)."""
    import urllib3

    if total_timeout_s is not None:
        timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT_S, total=total_timeout_s)
    timeout = timeout or urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
    scheme, host, port, address = resolve_checked(url, allow=allow, resolver=resolver or _system_resolver)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = {"Host": host if port in (80, 443) else f"{host}:{port}", **(headers or {})}
    pool: urllib3.HTTPConnectionPool
    if scheme == "https":
        # Connect to the pinned IP, but verify the certificate (and send SNI) for the host name.
        pool = urllib3.HTTPSConnectionPool(address, port, server_hostname=host, assert_hostname=host,
                                           cert_reqs="CERT_REQUIRED", timeout=timeout, retries=False)
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    try:
        response = pool.urlopen(method, path, headers=sent, body=body, redirect=False, preload_content=False)
        try:
            declared = response.headers.get("content-length")
            if not truncate and declared is not None and declared.isascii() and declared.isdigit() and (
                    len(declared) > 18 or int(declared) > max_bytes):
                raise OutboundRefused("the response is larger than allowed", "too_large")
            data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                if not truncate:
                    raise OutboundRefused("the response is larger than allowed", "too_large")
                data = data[:max_bytes]
            return OutboundResponse(response.status, dict(response.headers), data)
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise OutboundRefused(f"the request failed: {type(exc).__name__}", type(exc).__name__) from None
    finally:
        pool.close()
