"""An overall deadline for one delivery attempt (an SMTP conversation, an SMS request).

Socket timeouts bound each read and write, not the whole: a server that trickles its answer one
byte at a time holds the attempt, and the worker thread running it, for ever. The watchdog shuts
the connection down at the deadline from a timer thread, which ends whatever read or write is
waiting on it (TLS handshakes included); the caller then sees a connection error and asks
`fired` whether the deadline is what ended it."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType


class Watchdog:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._over = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def connect_timeout(self, timeout: float, addresses_left: int) -> float:
        """How long connecting to the next of `addresses_left` addresses may take: at most `timeout`
        and at most an even share of what is left of the deadline, so a silent address leaves the
        ones after it time to be tried (the last gets all that is left, up to `timeout`)."""
        return max(0.01, min(timeout, self.remaining() / max(1, addresses_left)))

    def watch(self, sock: socket.socket) -> None:
        """Shut the connection of `sock` down at the deadline. The watchdog keeps a duplicate of its
        descriptor: it stays valid however the caller wraps (TLS) or closes its own, so the
        shutdown can never reach a descriptor number the system handed to another connection."""
        with self._lock:
            if self._over:
                return
            copy = sock.dup()
            self._sockets.append(copy)
            if self.fired:
                _shut(copy)

    def _fire(self) -> None:
        with self._lock:
            if self._over:
                return
            self.fired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._over = True
            self._timer.cancel()
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer
