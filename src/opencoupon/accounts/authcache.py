"""Short-lived, per-process caches of what every call reads from account rows.

Authentication is the fixed cost of every API call, and consumer pages show the owning
account's brand: reading them from the database each time halves throughput on the hot paths
(validations, stamps, pages). A hit is trusted for TTL_SECONDS. Any change to the rows a cache
depends on made in this process clears it when flushed and again once committed (a request that
read the old row in between cannot keep it: a value read before a clear is not stored); a change
made by another process (another API worker, the CLI) takes effect within TTL_SECONDS.
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
import time
import weakref
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
        # Bumped by every clear: `put` refuses a value read before the last one.
        self.generation = 0
        _caches.append(self)

    def get(self, key: K) -> V | Literal[Missing.MISSING]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return MISSING
        return entry[1]

    def put(self, key: K, value: V, read_at: int) -> None:
        """Keep `value`, read from the database when `generation` was `read_at`."""
        with self._lock:
            if read_at != self.generation:
                return  # the rows changed since it was read: it may be the old value
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + TTL_SECONDS, value)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
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


# The caches each open transaction changed rows of: cleared again once it commits.
_stale: weakref.WeakKeyDictionary[Session, set[AccountCache[Any, Any]]] = weakref.WeakKeyDictionary()
_stale_lock = threading.Lock()


def clear_after_commit(session: Session) -> None:
    """For changes the flush hook cannot see (bulk UPDATEs): every cache now, and again when
    `session` commits."""
    _mark(session, _caches)


def _mark(session: Session, caches: list[AccountCache[Any, Any]]) -> None:
    for cache in caches:
        cache.clear()
    with _stale_lock:
        _stale.setdefault(session, set()).update(caches)


@event.listens_for(Session, "after_flush")
def _clear_on_change(session: Session, _context: Any) -> None:
    changed = {type(obj) for obj in (*session.new, *session.dirty, *session.deleted)}
    if not changed:
        return
    _mark(session, [c for c in _caches if any(issubclass(kind, c.depends_on) for kind in changed)])


@event.listens_for(Session, "after_commit")
def _clear_once_committed(session: Session) -> None:
    with _stale_lock:
        caches = _stale.pop(session, set())
    for cache in caches:
        cache.clear()
