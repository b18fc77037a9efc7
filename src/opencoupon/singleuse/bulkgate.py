"""One large `/v3/multiplesingleuse/create` at a time per server process.

A 100,000-link call holds its links, their ~21 MB JSON answer and, with an Idempotency-Key, the
encrypted copy kept for retries: a few hundred MB at its peak. Several at once added up with no
bound (six with keys reached 1.4 GB). Calls over `GATED_AMOUNT` links take
turns, first come first served; on SQLite they ran one after the other anyway (one writer). A
call that would wait longer than `WAIT_SECONDS` is answered 429 with Retry-After.

A process-wide lock polled from the event loop rather than an asyncio.Lock: it holds across
event loops and threads, and a waiter whose client gave up (its task cancelled) leaves the queue
without ever holding the lock."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

# Calls asking for more links than this take turns (smaller ones cost little memory and run at once).
GATED_AMOUNT = 1_000
# How long a call waits for its turn before it is answered 429 (a 100,000-link call takes 2-6 s).
WAIT_SECONDS = 60.0
# What a 429 suggests: about one 100,000-link call.
RETRY_AFTER_SECONDS = 5
_POLL_SECONDS = 0.02


class TakeTurns:
    """A FIFO queue of callers, one of whom holds the turn at a time."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[object] = deque()
        self._busy = False

    def _try_take(self, ticket: object) -> bool:
        with self._mutex:
            if self._busy or self._waiting[0] is not ticket:
                return False
            self._waiting.popleft()
            self._busy = True
            return True

    async def enter(self, patience: float) -> bool:
        """Wait for this caller's turn; False when `patience` seconds passed first."""
        ticket = object()
        with self._mutex:
            self._waiting.append(ticket)
        deadline = time.monotonic() + patience
        try:
            while not self._try_take(ticket):
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(_POLL_SECONDS)
            return True
        finally:
            with self._mutex:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)

    def leave(self) -> None:
        with self._mutex:
            self._busy = False


BULK_CALLS = TakeTurns()
