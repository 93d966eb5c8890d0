"""A TCP proxy that breaks on command: the "fake Redis" of the chaos tests and benchmark.

It sits between a client and a real server (here: a real redis-server) and forwards bytes
in one of four modes:

- ``pass``: forward everything;
- ``down``: every connection is reset at once (a dead or restarting server);
- ``slow``: each client chunk waits ``delay_s`` before it is forwarded (an overloaded one);
- ``hang``: connections are accepted and read, nothing is ever answered (a stuck one).

Changing the mode closes the open connections, as a restart would, so clients reconnect.
"""

from __future__ import annotations

import socket
import struct
import threading
import time


class FaultyProxy:
    MODES = ("pass", "down", "slow", "hang")

    def __init__(self, upstream: tuple[str, int], delay_s: float = 0.3):
        self.upstream = upstream
        self.delay_s = delay_s
        self.mode = "pass"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(mode)
        with self._lock:
            self.mode = mode
            conns, self._conns = self._conns, []
        for c in conns:
            _reset(c)

    def close(self) -> None:
        self._closed.set()
        self.set_mode("down")
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            mode = self.mode
            if mode == "down":
                _reset(client)
                continue
            upstream = None
            if mode != "hang":
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    _reset(client)
                    continue
            with self._lock:
                self._conns += [client] + ([upstream] if upstream else [])
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            if upstream is not None:
                threading.Thread(
                    target=self._pump, args=(upstream, client, False), daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                mode = self.mode
                if mode == "hang" or dst is None:
                    continue  # read and never answer
                if mode == "down":
                    break
                if mode == "slow" and from_client:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _reset(src)
            if dst is not None:
                _reset(dst)


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer would."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
