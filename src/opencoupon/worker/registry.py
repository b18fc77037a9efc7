"""Job kinds and their handlers. A handler gets the runtime and the job payload, and either
returns (done), raises Retry(after) to run again later (the handler's own schedule: it does not
count against the job's max_attempts), or raises any other exception (retried with backoff until
max_attempts, then dead). A job whose worker died on its last attempt is dead too. Either way
its kind's `on_dead` handler, if any, closes what it was doing.

A batch handler (`@batch_task(kind)`) gets every claimed job of its kind at once, as
`[(job_id, payload), ...]`, and answers an outcome per job ID: None (done), a Retry, or another
exception. Webhook and push deliveries use it: one database round trip and one asyncio gather for
the whole batch instead of one of each per job."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opencoupon.runtime import Runtime

JobHandler = Callable[["Runtime", dict[str, Any]], None]
BatchItems = list[tuple[int, dict[str, Any]]]
BatchOutcomes = dict[int, BaseException | None]
BatchHandler = Callable[["Runtime", BatchItems], BatchOutcomes]

_handlers: dict[str, JobHandler] = {}
_batch_handlers: dict[str, BatchHandler] = {}
_dead_handlers: dict[str, JobHandler] = {}
_current = threading.local()


class Retry(Exception):
    """Run the job again after `after`, without using up an attempt. `busy`: it could not start
    for want of a place (a cap on concurrent work), so a runner draining the queue
    (`run_until_idle`, `opencoupon worker --once`) waits for it instead of ending its run."""

    def __init__(self, after: dt.timedelta, reason: str = "", *, busy: bool = False) -> None:
        super().__init__(reason)
        self.after = after
        self.busy = busy


def task(kind: str) -> Callable[[JobHandler], JobHandler]:
    def register(fn: JobHandler) -> JobHandler:
        _handlers[kind] = fn
        return fn

    return register


def batch_task(kind: str) -> Callable[[BatchHandler], BatchHandler]:
    def register(fn: BatchHandler) -> BatchHandler:
        _batch_handlers[kind] = fn
        return fn

    return register


def on_dead(kind: str) -> Callable[[JobHandler], JobHandler]:
    """What to do with the payload of a job of `kind` that the runner gives up: its last attempt
    raised (not Retry), or its worker died on the last attempt. Close what it was doing; it may
    run more than once for a job."""

    def register(fn: JobHandler) -> JobHandler:
        _dead_handlers[kind] = fn
        return fn

    return register


def dead_handler_for(kind: str) -> JobHandler | None:
    return _dead_handlers.get(kind)


def handler_for(kind: str) -> JobHandler | None:
    return _handlers.get(kind)


def batch_handler_for(kind: str) -> BatchHandler | None:
    return _batch_handlers.get(kind)


class JobHolder(Protocol):
    """What a runner offers the handlers it runs: holding jobs they claimed for it themselves."""

    def hold_running(self, ids: list[int]) -> None: ...

    def release(self, ids: list[int]) -> None: ...


def set_worker_name(name: str, holder: JobHolder | None = None) -> None:
    _current.name = name
    _current.holder = holder


@contextmanager
def holding(ids: list[int]) -> Iterator[None]:
    """Jobs a handler queued already claimed by its runner (`enqueue_many(claimed_by=...)`) and
    runs itself: the runner renews their leases meanwhile and does not claim them again."""
    holder: JobHolder | None = getattr(_current, "holder", None)
    if holder is None:
        yield
        return
    holder.hold_running(ids)
    try:
        yield
    finally:
        holder.release(ids)


def worker_name() -> str:
    """The name of the runner running the current job (for logs kept with the job's work)."""
    return str(getattr(_current, "name", ""))
