"""A loopback TCP proxy to a PostgreSQL unix socket that delays every client->server write.

With a delay D much larger than the query time, elapsed / D is the number of round trips a client
made: that is how the benchmarks show round-trip counts without trusting the code under test.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


class DelayProxy:
    """Listen on 127.0.0.1:<port>, forward to a unix socket, delay client->server chunks by `delay` s."""

    def __init__(self, unix_socket_path: str, delay: float) -> None:
        self.unix_socket_path = unix_socket_path
        self.delay = delay
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.unix_socket_path)
            threading.Thread(target=self._pump, args=(client, server, self.delay), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, 0.0), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
        # A delay line, not a serial sleep: each chunk leaves `delay` after it arrived, so several
        # writes of one batch cost one delay, exactly like network latency.
        line: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def deliver() -> None:
            try:
                while True:
                    due, data = line.get()
                    if not data:
                        break
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    dst.sendall(data)
            except OSError:
                pass

        sender = threading.Thread(target=deliver, daemon=True)
        sender.start()
        try:
            while True:
                data = src.recv(65536)
                line.put((time.monotonic() + delay, data))
                if not data:
                    break
        except OSError:
            line.put((0.0, b""))
        sender.join()
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting connections."""
        self._closed = True
        self._listener.close()


class DelayProxyProcess:
    """DelayProxy in a process of its own: for delays of a fraction of a millisecond, where the proxy's
    threads must not compete with the measured client for its interpreter lock."""

    def __init__(self, unix_socket_path: str, delay: float) -> None:
        self.delay = delay
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.delayproxy", unix_socket_path, repr(delay)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        assert self._process.stdout is not None
        self.port = int(self._process.stdout.readline())

    def close(self) -> None:
        """Stop the proxy process (it exits when its stdin closes)."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=10)


def _serve(unix_socket_path: str, delay: float) -> None:
    proxy = DelayProxy(unix_socket_path, delay)
    print(proxy.port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    proxy.close()


if __name__ == "__main__":
    _serve(sys.argv[1], float(sys.argv[2]))
