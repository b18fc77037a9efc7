"""Rows that outlive their use, deleted by the worker so the tables do not grow for ever:

- Idempotency-Key answers older than `OPENCOUPON_IDEMPOTENCY_TTL_HOURS` (a retry after that runs
  again anyway);
- one-time tokens (SSO, password reset, ended dashboard sessions) past their expiry (an expired
  token is refused whether its row is there or not);
- finished jobs: done ones after JOB_RETENTION, dead ones after DEAD_JOB_RETENTION (kept longer:
  they are what an operator looks at when deliveries failed);
- attempt counters (wrong-PIN lockouts, sign-in limits) whose window is over (a count past its
  window is read as zero whether its row is there or not);
- dashboard batches of single-use links finished LINK_BATCH_RETENTION ago (their link lists may
  hold customids that are emails: kept for download, not for ever).

Events are kept: they are what webhook replays send again. Deletes run in batches of BATCH rows,
each in its own short transaction (on SQLite each holds the write lock only briefly)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, inspect, select

from opencoupon.kit.clock import utcnow
from opencoupon.models import AttemptCounter, IdempotencyRecord, Job, OneTimeToken, SingleUseBatch
from opencoupon.runtime import Runtime

log = logging.getLogger("opencoupon.worker")

# How often a worker sweeps (and how soon after it starts: a restarted server cleans up too).
INTERVAL = dt.timedelta(hours=1)
FIRST_SWEEP_AFTER = dt.timedelta(minutes=1)
JOB_RETENTION = dt.timedelta(days=7)
DEAD_JOB_RETENTION = dt.timedelta(days=30)
LINK_BATCH_RETENTION = dt.timedelta(days=7)
BATCH = 5000


@dataclass
class Swept:
    idempotency_records: int = 0
    one_time_tokens: int = 0
    jobs: int = 0
    attempt_counters: int = 0
    link_batches: int = 0


def _delete_all(runtime: Runtime, model: Any, condition: ColumnElement[bool], batch: int) -> int:
    """Delete the rows of `model` matching `condition`, `batch` at a time; how many."""
    total = 0
    (key,) = inspect(model).primary_key  # `id`, or another single-column primary key
    while True:
        keys = select(key).where(condition).limit(batch).scalar_subquery()
        with runtime.db.transaction() as session:
            # The condition again on the row itself: PostgreSQL re-checks only the outer WHERE on
            # a row another transaction changed meanwhile (an attempt count whose window just
            # started again must stay).
            statement = delete(model).where(key.in_(keys), condition)
            deleted = int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]
        total += deleted
        if deleted < batch:
            return total


def sweep(runtime: Runtime, *, now: dt.datetime | None = None, batch: int = BATCH) -> Swept:
    now = now or utcnow()
    ttl = dt.timedelta(hours=runtime.settings.idempotency_ttl_hours)
    swept = Swept(
        idempotency_records=_delete_all(
            runtime, IdempotencyRecord, IdempotencyRecord.created_at < now - ttl, batch
        ),
        one_time_tokens=_delete_all(runtime, OneTimeToken, OneTimeToken.expires_at < now, batch),
        jobs=_delete_all(
            runtime,
            Job,
            ((Job.status == "done") & (Job.finished_at < now - JOB_RETENTION))
            | ((Job.status == "dead") & (Job.finished_at < now - DEAD_JOB_RETENTION)),
            batch,
        ),
        attempt_counters=_delete_all(runtime, AttemptCounter, AttemptCounter.expires_at <= now, batch),
        link_batches=_delete_all(
            runtime,
            SingleUseBatch,
            SingleUseBatch.status.in_(("done", "failed"))
            & (SingleUseBatch.finished_at < now - LINK_BATCH_RETENTION),
            # Each row may hold a few MB of links: fewer per transaction.
            max(1, batch // 100),
        ),
    )
    if any(dataclasses.astuple(swept)):
        log.info("housekeeping deleted %s", swept)
    return swept
