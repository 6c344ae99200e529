"""Database faults for tests: a server that goes silent, a server that is down, one that restarts.

A SIGSTOPped server (or a hung host behind a live network) still has its kernel accept connections and
acknowledge what is sent; it just never answers. FreezableProxy's `freeze()` does the same: the proxy
keeps accepting and reading, and forwards nothing in either direction until `thaw()`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chalicelib.db.embedded import start_embedded, stop_embedded


class FreezableProxy:
    """Listen on 127.0.0.1:<port> and forward to a PostgreSQL unix socket while not frozen."""

    def __init__(self, unix_socket_path: str) -> None:
        self.unix_socket_path = unix_socket_path
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def freeze(self) -> None:
        """Stop forwarding (connections stay open; new ones are accepted and then ignored)."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward again, starting with whatever arrived meanwhile."""
        self._flowing.set()

    def conninfo(self, server_conninfo: str, **params: str) -> str:
        """`server_conninfo` (a unix-socket one) reached through this proxy instead."""
        given = {k: v for k, v in conninfo_to_dict(server_conninfo).items() if k not in ("host", "port")}
        return make_conninfo("", **{**given, "host": "127.0.0.1", "port": str(self.port), **params})

    def close(self) -> None:
        """Stop accepting and cut every proxied connection."""
        self._flowing.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.unix_socket_path)
            self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def unix_socket_of(conninfo: str) -> str:
    """The socket file a unix-socket conninfo (the embedded server's) points at; skips the test otherwise."""
    params = conninfo_to_dict(conninfo)
    host = str(params.get("host") or "")
    if not host.startswith("/"):
        pytest.skip("the proxy forwards to a unix socket (TEST_DATABASE_URL is a TCP server)")
    return f"{host}/.s.PGSQL.{params.get('port') or 5432}"


def closed_port() -> int:
    """A loopback port nobody listens on (connections to it are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateCluster:
    """An embedded cluster of one test module's own, which it may stop and start at will."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None
        self.start()
        self.admin_url = str(self._server.get_uri())

    def start(self) -> None:
        """Start the server (again)."""
        self._server, _ = start_embedded(self.pgdata)

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are terminated, as in a restart or failover)."""
        if self._server is not None:
            stop_embedded(self._server)
            self._server = None


@contextlib.contextmanager
def freezable_proxy(server_conninfo: str) -> Iterator[FreezableProxy]:
    """A FreezableProxy in front of the server `server_conninfo` reaches, closed afterwards."""
    proxy = FreezableProxy(unix_socket_of(server_conninfo))
    try:
        yield proxy
    finally:
        proxy.close()
