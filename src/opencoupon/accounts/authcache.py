"""Short-lived, per-process caches of what every call reads from account rows.

Authentication is the fixed cost of every API call, and consumer pages show the owning
account's brand: reading them from the database each time halves throughput on the hot paths
(validations, stamps, pages). A hit is trusted for TTL_SECONDS. Any change to the rows a cache
depends on made in this process clears it at once (one ORM flush hook for all caches); a change
made by another process (another API worker, the CLI) takes effect within TTL_SECONDS.
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

from opencoupon.models import Account, ApiSecret

TTL_SECONDS = 5.0
MAX_ENTRIES = 10_000

K = TypeVar("K")
V = TypeVar("V")


class Missing(enum.Enum):
    """What `AccountCache.get` returns for a key it does not hold (None may be a cached value)."""

    MISSING = enum.auto()


MISSING: Final = Missing.MISSING


class AccountCache(Generic[K, V]):
    """Values read from the rows of `depends_on`, kept for TTL_SECONDS."""

    def __init__(self, *depends_on: type[Any]) -> None:
        self.depends_on = depends_on
        self._entries: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()
        _caches.append(self)

    def get(self, key: K) -> V | Literal[Missing.MISSING]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return MISSING
        return entry[1]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + TTL_SECONDS, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_caches: list[AccountCache[Any, Any]] = []


@dataclass(frozen=True)
class CachedAuth:
    account: Account  # detached snapshot; copied into each request's session without a query (db.raw.adopt)
    parent_blocked: bool
    parent_expiry: dt.date | None
    secret_expires_at: dt.datetime | None


# (client ID, digest of the secret presented) → what authenticating them found.
authentications: AccountCache[tuple[str, str], CachedAuth] = AccountCache(Account, ApiSecret)


def clear() -> None:
    """Forget every cached authentication (for changes the flush hook cannot see: bulk UPDATEs)."""
    authentications.clear()


@event.listens_for(Session, "after_flush")
def _clear_on_change(session: Session, _context: Any) -> None:
    changed = {type(obj) for obj in (*session.new, *session.dirty, *session.deleted)}
    if not changed:
        return
    for cache in _caches:
        if any(issubclass(kind, cache.depends_on) for kind in changed):
            cache.clear()
