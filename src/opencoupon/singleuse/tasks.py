"""The `singleuse.batch` job: make a dashboard batch's links, keeping its progress in its row.

Exactly once, even when a job whose lease ran out is run again while the first run still goes
on: the links and the batch's `done` status are written in one transaction, which takes the
campaign's lock first (singleuse.repository.lock_campaign; SQLite has one writer anyway) and then
checks the batch is not done yet."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from typing import Any

from sqlalchemy import select

from opencoupon.errors import ApiError
from opencoupon.kit.clock import utcnow
from opencoupon.models import SingleUseBatch
from opencoupon.runtime import Runtime
from opencoupon.singleuse import batches, repository, service
from opencoupon.worker.registry import on_dead, task
from opencoupon.worker.runner import finish_first_attempts

log = logging.getLogger("opencoupon.singleuse")

FAILED = "The batch failed; nothing was created. Try again."
# The name under which a server process claims the batch jobs it starts itself.
PROCESS_RUNNER = f"pages:{socket.gethostname()}:{os.getpid()}"[-64:]


@task(batches.KIND)
def run_batch(runtime: Runtime, payload: dict[str, Any]) -> None:
    batch_id = int(payload["batch"])
    with runtime.db.transaction() as session:
        batch = session.get(SingleUseBatch, batch_id)
        if batch is None:
            return
        spec = batches.spec_of(batch)
        campaign_id, total = batch.campaign_id, batch.total
        started = batches.mark(
            session, batch_id, ("queued", "running"), status="running", updated_at=utcnow()
        )
    if not started:
        return  # done or failed already
    try:
        _make_links(runtime, batch_id, campaign_id, total, spec)
    except ApiError as err:
        _fail(runtime, batch_id, err.description)
    except Exception:
        log.exception("single-use batch %s failed", batch_id)
        _fail(runtime, batch_id, FAILED)


@on_dead(batches.KIND)
def batch_died(runtime: Runtime, payload: dict[str, Any]) -> None:
    """A batch whose worker stopped during every attempt: failed (its links were made in one
    transaction that never committed), not `running` for ever."""
    _fail(runtime, int(payload["batch"]), FAILED)


def _make_links(
    runtime: Runtime, batch_id: int, campaign_id: int, total: int, spec: service.BatchSpec
) -> None:
    made = 0

    def progress(count: int) -> None:
        nonlocal made
        made += count
        # PostgreSQL: the count is committed on another connection while the batch's own
        # transaction goes on. SQLite has one writer, and the batch is it: there the count
        # moves when the batch is done.
        if not runtime.db.is_sqlite:
            with runtime.db.transaction() as other:
                batches.mark(other, batch_id, ("running",), done=made, updated_at=utcnow())

    with runtime.db.transaction() as session:
        campaign = repository.campaign_by_id(session, campaign_id)
        if campaign is None:
            raise service.campaign_not_found()
        repository.lock_campaign(session, campaign)
        status = session.scalar(select(SingleUseBatch.status).where(SingleUseBatch.id == batch_id))
        if status != "running":
            return  # another run of this job finished it while this one waited for the lock
        items = service.create_batch(
            session,
            campaign,
            spec,
            now=utcnow(),
            base_url=runtime.settings.public_base_url,
            progress=progress,
        )
        now = utcnow()
        finished = batches.mark(
            session,
            batch_id,
            ("running",),
            status="done",
            done=total,
            result=batches.pack(batches.links_csv(items)),
            updated_at=now,
            finished_at=now,
        )
        if not finished:
            raise RuntimeError(f"single-use batch {batch_id} changed under its run")


def _fail(runtime: Runtime, batch_id: int, message: str) -> None:
    now = utcnow()
    with runtime.db.transaction() as session:
        batches.mark(
            session,
            batch_id,
            ("queued", "running"),
            status="failed",
            message=message,
            updated_at=now,
            finished_at=now,
        )


def run_claimed(runtime: Runtime, job_id: int, batch_id: int) -> threading.Thread:
    """Run a batch job this process queued claimed by PROCESS_RUNNER, in a background thread, and
    record the job's outcome. Should this process die first, the lease runs out and a worker
    (`opencoupon worker`, or the runner in `opencoupon serve` on SQLite) runs the job."""

    def work() -> None:
        outcome: BaseException | None = None
        try:
            run_batch(runtime, {"batch": batch_id})
        except Exception as exc:
            outcome = exc
        try:
            finish_first_attempts(
                runtime, PROCESS_RUNNER, batches.KIND, [(job_id, outcome)], max_attempts=batches.MAX_ATTEMPTS
            )
        except Exception:
            # The lease runs out and a worker claims the job; the batch row says it is done.
            log.exception("could not record single-use batch job %s", job_id)

    thread = threading.Thread(target=work, daemon=True, name=f"singleuse-batch-{batch_id}")
    thread.start()
    return thread


def lease(runtime: Runtime) -> dt.timedelta:
    return dt.timedelta(seconds=runtime.settings.worker_lease_seconds)
