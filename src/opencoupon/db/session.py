"""The database handle shared by the app, the worker and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from opencoupon.db.engine import make_engine, sqlite_write_lock


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine: Engine = make_engine(url, pool_size=pool_size)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.write_lock = sqlite_write_lock(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readonly_sessions = sessionmaker(
            self.engine.execution_options(sqlite_readonly=True), expire_on_commit=False
        )

    def new_session(self, *, read_only: bool = False) -> Session:
        """A session whose transaction the caller begins and ends itself (db/group.py)."""
        return self._readonly_sessions() if read_only else self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits when the block ends, rolls back on an exception."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work (on SQLite it does not take the write lock)."""
        with self._readonly_sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def upsert_insert(session: Session, table: Any) -> PgInsert | SqliteInsert:
    """An INSERT with `on_conflict_do_nothing()` / `on_conflict_do_update()` for the session's
    database: both dialects have them, each under its own class."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)
