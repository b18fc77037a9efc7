"""Wrong-guess lockouts for short secrets typed on pages (staff PINs), kept in process."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable


class Lockout:
    """Wrong PINs: after `limit` within `window` seconds under one key, PINs are refused under that
    key for the rest of the window, so a short PIN cannot be guessed by trying them all."""

    def __init__(self, limit: int = 10, window: float = 900.0, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[Hashable, list[float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many keys (campaigns, clients) it remembers failures of."""
        with self._lock:
            return len(self._failures)

    def blocked(self, key: Hashable) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(key, []) if now - t < self.window]
            if recent:
                self._failures[key] = recent
            else:
                self._failures.pop(key, None)
            return len(recent) >= self.limit

    def reset(self) -> None:
        """Forget every failure (tests start from a clean slate)."""
        with self._lock:
            self._failures.clear()

    def fail(self, key: Hashable) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= self.max_keys:
                # Keys whose failures all left the window: without this sweep, every client that
                # once typed a wrong PIN would stay in memory for the process's lifetime.
                kept = {k: times for k, times in self._failures.items() if now - times[-1] < self.window}
                # A flood of fresh keys (many client addresses): the oldest go, down to 90 %, so
                # memory stays bounded and the next sweeps are many failures away.
                excess = len(kept) - self.max_keys * 9 // 10
                for old in list(kept)[: max(0, excess)]:
                    del kept[old]
                self._failures = kept
            self._failures.setdefault(key, []).append(now)
