"""Group commit for the quick writes on SQLite (validations, stamps), and shared read
transactions for the quick reads (session data).

A SQLite commit writes every page the transaction touched to the WAL: about twelve 4 KB frames
for a validation, most of them shared with the validations around it (the campaign row, the day's
counters, the tails of the events and validations tables and their indexes). Calls that arrive
together therefore run one after another in ONE transaction, each inside its own savepoint, and
are answered only once that transaction has committed:

- every call sees the writes of the calls before it, exactly as if they had run one by one (the
  conditional UPDATEs that make validations exactly-once work unchanged);
- a call that fails rolls back its savepoint only; the others still commit;
- no answer leaves before the commit, so an answered call is durable; if the commit itself fails,
  every call of the group gets the error and nothing of it was stored.

The group runs on the event loop, like the quick calls it replaces; it holds the database's write
lock for its duration (bounded by MAX_CALLS).

Quick reads that are waiting together share one read transaction the same way (`ReadGroup`): it
takes no lock, and only calls that arrived before it began join it, so each call's snapshot is
taken after the call arrived (a client always reads what it was told was stored). What they
save is the per-call session, BEGIN and COMMIT: on a call of 0.5 ms, a sixth of it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from opencoupon.db import raw
from opencoupon.db.engine import hand_lock_to_next_transaction
from opencoupon.db.session import Database

Work = Callable[[Session], Any]

# Calls per transaction: enough to share the commit among every client of a busy server, few
# enough that the first call of a group does not wait long for its answer.
MAX_CALLS = 32


class WriteGroup:
    """Quick writes: one write transaction per group, a savepoint per call."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: deque[tuple[Work, asyncio.Future[Any]]] = deque()
        self.draining: asyncio.Task[None] | None = None

    async def submit(self, work: Work) -> Any:
        """Run `work(session)` in the next group's transaction; its result once committed (or the
        exception it raised, once its savepoint is rolled back)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((work, future))
        if self.draining is None:
            self.draining = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                await self._run_group()
        except BaseException as exc:
            # The group could not even start (the lock file, the connection): no caller may be
            # left waiting for an answer that will never come.
            while self.pending:
                _work, future = self.pending.popleft()
                if not future.done():
                    future.set_exception(exc)
            raise
        finally:
            self.draining = None

    async def _take_lock(self) -> None:
        lock = self.db.write_lock
        assert lock is not None
        if not lock.acquire(blocking=False):
            # Held by another thread or process: wait for it on a worker thread, which wakes the
            # moment it is released (polling from the loop would sleep past that moment).
            await run_in_threadpool(lock.acquire)

    async def _run_group(self) -> None:
        await self._take_lock()
        answered: list[tuple[asyncio.Future[Any], bool, Any]] = []
        done: list[tuple[Work, asyncio.Future[Any]]] = []  # calls that succeeded, not yet committed
        in_flight: asyncio.Future[Any] | None = None  # the call running when the group fails
        lock = self.db.write_lock
        assert lock is not None
        session = self.db.new_session()
        try:
            with hand_lock_to_next_transaction(lock):
                session.begin()
                session.connection()  # BEGIN IMMEDIATE now, under the lock just taken
            dbapi = raw.dbapi_connection(session)
            while self.pending and len(answered) < MAX_CALLS:
                work, future = self.pending.popleft()
                in_flight = future
                # Savepoints on the driver: SQLAlchemy's begin_nested() cost a third of a call.
                dbapi.execute("SAVEPOINT call")
                try:
                    value = work(session)
                    session.flush()
                except Exception as exc:  # the call's own failure: undo its writes only
                    if not session.is_active:
                        raise  # an ORM flush failed: the session must roll back as a whole
                    dbapi.execute("ROLLBACK TO SAVEPOINT call")
                    dbapi.execute("RELEASE SAVEPOINT call")
                    answered.append((future, False, exc))
                else:
                    dbapi.execute("RELEASE SAVEPOINT call")
                    answered.append((future, True, value))
                    done.append((work, future))
                in_flight = None
                # Each call starts from an empty identity map and session.info, as in a
                # transaction of its own.
                session.expunge_all()
                raw.reset_info(session)
                if not self.pending:
                    await asyncio.sleep(0)  # let the requests that are ready join this group
            session.commit()
        except Exception as exc:  # the group failed: nothing of it was stored
            try:
                session.rollback()
            finally:
                if in_flight is None and not answered:
                    raise  # it failed before any call ran: _drain answers them all with it
                if in_flight is not None:
                    # One call broke the transaction (an ORM flush failed): it gets the error,
                    # the calls that had succeeded run again in the next group, and those
                    # refused keep their own answer.
                    failed = {id(future) for future, ok, _value in answered if not ok}
                    answered = [a for a in answered if id(a[0]) in failed] + [(in_flight, False, exc)]
                    self.pending.extendleft(reversed(done))
                else:  # the COMMIT itself failed: every call of the group gets the error
                    answered = [(future, False, exc) for future, _ok, _value in answered]
        finally:
            session.close()
            _answer(answered)


class ReadGroup(WriteGroup):
    """Quick reads: one read transaction for the calls waiting when it begins."""

    async def _run_group(self) -> None:
        batch = [self.pending.popleft() for _ in range(min(MAX_CALLS, len(self.pending)))]
        answered: list[tuple[asyncio.Future[Any], bool, Any]] = []
        session = self.db.new_session(read_only=True)
        try:
            session.begin()
            for work, future in batch:
                try:
                    answered.append((future, True, work(session)))
                except Exception as exc:
                    answered.append((future, False, exc))
                    if isinstance(exc, SQLAlchemyError):
                        # A read that failed in the database must not spoil the next ones (a call
                        # refusing on its own, e.g. an unknown code, leaves the transaction as it is).
                        session.rollback()
                        session.begin()
                session.expunge_all()
                raw.reset_info(session)
            session.commit()
        except Exception as exc:
            session.rollback()
            done = {id(future) for future, _ok, _value in answered}
            answered += [(future, False, exc) for _work, future in batch if id(future) not in done]
        finally:
            session.close()
        _answer(answered)


def _answer(answered: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in answered:
        if future.done():  # its client went away
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
