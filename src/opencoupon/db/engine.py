"""Engines for SQLite (WAL, busy timeout, BEGIN IMMEDIATE) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

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


# One writer at a time per process on SQLite: waiting on a Python lock is fair and fast,
# where SQLite's busy handler sleeps in growing steps and makes tail latency explode.
_sqlite_write_locks: dict[str, threading.Lock] = {}
_LOCK_FLAG = "opencoupon_write_lock"
# A write lock this thread took before its transaction began (see `try_write_lock`).
_pre_acquired = threading.local()


def sqlite_write_lock(engine: Engine) -> threading.Lock | None:
    """The process-wide write lock of a SQLite engine (None on PostgreSQL)."""
    if engine.dialect.name != "sqlite":
        return None
    return _sqlite_write_locks.get(_lock_key(engine.url.database or ""))


def _lock_key(database: str) -> str:
    return str(Path(database).resolve())


@contextmanager
def try_write_lock(lock: threading.Lock) -> Iterator[bool]:
    """Take the write lock now if it is free, without waiting; the next write transaction this
    thread begins inside the block uses it (and releases it at its end)."""
    if not lock.acquire(blocking=False):
        yield False
        return
    _pre_acquired.lock = lock
    try:
        yield True
    finally:
        # No write transaction began (a failed authentication, a read-only call): give it back.
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
        max_overflow=20,
        connect_args={"check_same_thread": False, "timeout": 30},
    )
    write_lock = _sqlite_write_locks.setdefault(_lock_key(database), threading.Lock())

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
        if conn.get_execution_options().get("sqlite_readonly"):
            dbapi.execute("BEGIN")
            return
        record_info = conn.connection.info
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
