"""Engines for SQLite (WAL, busy timeout, BEGIN IMMEDIATE) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry


def normalize_url(url: str) -> str:
    """Users write `postgresql://…` or `sqlite:///…`; the driver is ours to choose."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class WriteLock:
    """One writer at a time on a SQLite database, across threads and processes.

    Waiting on a lock is fair and fast, where SQLite's busy handler sleeps in growing steps
    (1, 2, 5, 10 … ms) and makes tail latency explode. Threads of a process queue on a
    threading.Lock; processes (several `serve --workers`, the CLI, `opencoupon worker`) queue on
    an flock of `<database>.lock`, which the kernel hands over as soon as it is released."""

    def __init__(self, database: str) -> None:
        """`database`: the database file's resolved path; "" for an in-memory database."""
        self._thread_lock = threading.Lock()
        self._path = database + ".lock" if database else ""
        self._fd = -1
        self._fd_pid = 0

    def _file(self) -> int:
        # A forked child must not share its parent's open file (and so its lock).
        if self._fd < 0 or self._fd_pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._fd_pid = os.getpid()
        return self._fd

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As threading.Lock.acquire; `timeout` bounds the wait for this process's threads, the
        wait for another process is not bounded (a process holds it for one transaction)."""
        if not self._thread_lock.acquire(blocking, timeout):
            return False
        if not self._path:
            return True
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._thread_lock.release()
            return False
        except BaseException:
            self._thread_lock.release()
            raise
        return True

    def release(self) -> None:
        if self._path:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()


_sqlite_write_locks: dict[str, WriteLock] = {}
_LOCK_FLAG = "opencoupon_write_lock"
_QUERY_ONLY = "opencoupon_query_only"  # the connection's PRAGMA query_only, as last set
# A write lock this thread took before its transaction began (see `hand_lock_to_next_transaction`).
_pre_acquired = threading.local()


def sqlite_write_lock(engine: Engine) -> WriteLock | None:
    """The write lock of a SQLite engine's database (None on PostgreSQL)."""
    if engine.dialect.name != "sqlite":
        return None
    return _sqlite_write_locks.get(_lock_key(engine.url.database or ""))


def _lock_key(database: str) -> str:
    return str(Path(database).resolve())


@contextmanager
def hand_lock_to_next_transaction(lock: WriteLock) -> Iterator[None]:
    """For a write lock this thread already holds: the next write transaction it begins inside
    the block takes it over (and releases it at its end); if none begins, it is released here."""
    _pre_acquired.lock = lock
    try:
        yield
    finally:
        if getattr(_pre_acquired, "lock", None) is lock:
            _pre_acquired.lock = None
            lock.release()


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)

    database = parsed.database or ""
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=pool_size,
        # No limit: a write transaction takes its connection before the write lock (the lock is
        # taken as it begins), so with a bounded pool, writers waiting for the lock could hold
        # every connection while the group commit that held the lock waited for one (a 30 s
        # stall, then 500s: test_group_commit.py). A SQLite connection is a file handle.
        max_overflow=-1,
        connect_args={"check_same_thread": False, "timeout": 30},
    )
    key = _lock_key(database)
    write_lock = _sqlite_write_locks.get(key)
    if write_lock is None:
        write_lock = _sqlite_write_locks.setdefault(
            key, WriteLock(key if database and database != ":memory:" else "")
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module; we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Every transaction may write, so it takes the write lock up front: a deferred
        # transaction that reads and then writes can fail with SQLITE_BUSY despite busy_timeout.
        dbapi = conn.connection.dbapi_connection
        record_info = conn.connection.info
        read_only = bool(conn.get_execution_options().get("sqlite_readonly"))
        if record_info.get(_QUERY_ONLY, False) != read_only:
            # A read transaction takes no write lock, so it must not write: SQLite refuses it
            # (a call wrongly declared read_only fails loudly in the tests, never half-writes).
            # The setting stays with the connection; it is switched only when the use changes.
            dbapi.execute("PRAGMA query_only=ON" if read_only else "PRAGMA query_only=OFF")
            record_info[_QUERY_ONLY] = read_only
        if read_only:
            dbapi.execute("BEGIN")
            return
        if not record_info.get(_LOCK_FLAG):
            if getattr(_pre_acquired, "lock", None) is write_lock:
                _pre_acquired.lock = None  # this transaction now owns it
                record_info[_LOCK_FLAG] = True
            else:
                record_info[_LOCK_FLAG] = write_lock.acquire(timeout=60)
        dbapi.execute("BEGIN IMMEDIATE")

    def _release(info: dict[str, Any]) -> None:
        if info.pop(_LOCK_FLAG, False):
            write_lock.release()

    @event.listens_for(engine, "commit")
    def _on_commit(conn: Any) -> None:
        # COMMIT here, so the lock is released only once the write is durable; the driver's
        # own commit() that follows is then a no-op.
        conn.connection.dbapi_connection.execute("COMMIT")
        _release(conn.connection.info)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        if dbapi.in_transaction:
            dbapi.execute("ROLLBACK")
        _release(conn.connection.info)

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # A connection that went back to the pool (or was invalidated) never keeps the lock.
        _release(record.info)

    return engine
