"""Job kinds and their handlers. A handler gets the runtime and the job payload, and either
returns (done), raises Retry(after) to run again later, or raises any other exception (retried
with backoff until max_attempts, then dead)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencoupon.runtime import Runtime

JobHandler = Callable[["Runtime", dict[str, Any]], None]

_handlers: dict[str, JobHandler] = {}


class Retry(Exception):
    def __init__(self, after: dt.timedelta, reason: str = "") -> None:
        super().__init__(reason)
        self.after = after


def task(kind: str) -> Callable[[JobHandler], JobHandler]:
    def register(fn: JobHandler) -> JobHandler:
        _handlers[kind] = fn
        return fn

    return register


def handler_for(kind: str) -> JobHandler | None:
    return _handlers.get(kind)
