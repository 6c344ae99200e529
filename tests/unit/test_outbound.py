"""SSRF guard of outbound calls: non-public addresses, schemes, rebinding, redirects, size caps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chalicelib.outbound import OutboundRefused, is_public, request, resolve_checked

BLOCKED = ["169.254.169.254", "127.0.0.1", "10.0.0.5", "172.16.1.1", "192.168.0.1", "0.0.0.0", "100.64.0.1",
           "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "224.0.0.1"]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(address)
    with pytest.raises(OutboundRefused):
        resolve_checked("https://media.example/x", resolver=lambda host, port: [address])


def test_public_address_is_pinned() -> None:
    assert resolve_checked("https://media.example/x", resolver=lambda h, p: ["93.184.216.34"])[3] == "93.184.216.34"


def test_a_mix_of_public_and_private_answers_is_refused() -> None:
    # DNS rebinding in one answer: any private address refuses the whole host.
    with pytest.raises(OutboundRefused):
        resolve_checked("https://media.example/x", resolver=lambda h, p: ["93.184.216.34", "127.0.0.1"])


@pytest.mark.parametrize("url", ["http://media.example/x", "file:///etc/passwd", "gopher://media.example/",
                                 "https://user:pw@media.example/x", "https:///nohost"])
def test_only_plain_https_urls_are_allowed(url: str) -> None:
    with pytest.raises(OutboundRefused):
        resolve_checked(url, resolver=lambda h, p: ["93.184.216.34"])


@pytest.mark.parametrize("url", ["https://" + "a" * 64 + ".example.com/x", "https://a..example.com/x"])
def test_a_host_name_the_resolver_cannot_encode_is_refused_not_raised(url: str) -> None:
    # The system resolver raises UnicodeError (IDNA), not OSError, for an empty or over-long label.
    with pytest.raises(OutboundRefused, match="does not resolve"):
        resolve_checked(url)


def test_numeric_and_dotted_host_forms_of_loopback_are_refused() -> None:
    # 0x7f.1 and 2130706433 resolve to 127.0.0.1 through the system resolver.
    for url in ("https://2130706433/x", "https://0x7f.1/x", "https://localhost./x", "https://[::ffff:127.0.0.1]/x"):
        with pytest.raises(OutboundRefused):
            resolve_checked(url)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        body = b"x" * (2048 if self.path == "/big" else 10)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_loopback_is_reachable_only_through_the_explicit_allow_list(fake_server: str) -> None:
    with pytest.raises(OutboundRefused):
        request("GET", f"http://{fake_server}/ok")
    response = request("GET", f"http://{fake_server}/ok", allow=frozenset({fake_server}))
    assert response.status == 200 and response.body == b"x" * 10


def test_redirects_are_not_followed(fake_server: str) -> None:
    response = request("GET", f"http://{fake_server}/redirect", allow=frozenset({fake_server}))
    assert response.status == 302
    assert response.body == b""


def test_responses_over_the_cap_are_refused(fake_server: str) -> None:
    with pytest.raises(OutboundRefused, match="larger"):
        request("GET", f"http://{fake_server}/big", allow=frozenset({fake_server}), max_bytes=1024)
