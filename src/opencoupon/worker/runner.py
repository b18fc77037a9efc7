"""The job runner: claims due jobs with a lease, runs them, retries with backoff.

On PostgreSQL, claims use FOR UPDATE SKIP LOCKED so several `opencoupon worker` processes share
one table. A job whose lease ran out (its worker died) is claimed again. Jobs of a kind with a
batch handler (webhook and push deliveries) are handed over together; the others run on a thread
pool. Every outcome of one round is written back in one transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import random
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, or_, select, update

from opencoupon.kit.clock import utcnow
from opencoupon.models import Job
from opencoupon.runtime import Runtime
from opencoupon.worker import housekeeping
from opencoupon.worker.registry import Retry, batch_handler_for, handler_for, set_worker_name

log = logging.getLogger("opencoupon.worker")

LEASE = dt.timedelta(seconds=60)

Unit = Callable[[], list[tuple[Job, BaseException | None]]]


def _backoff(attempts: int) -> dt.timedelta:
    base = min(3600.0, 2.0 ** min(attempts, 12))
    return dt.timedelta(seconds=base * random.uniform(0.8, 1.2))


class _NoHandler(Exception):
    pass


def import_task_modules() -> None:
    """Import every module that registers job handlers."""
    import importlib

    for module in (
        "opencoupon.webhooks.tasks",
        "opencoupon.push.tasks",
        "opencoupon.distribution.tasks",
        "opencoupon.singleuse.tasks",
        "opencoupon.subaccounts.tasks",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not (module == exc.name or module.startswith(exc.name + ".")):
                raise


def outcome_values(job: Job, outcome: BaseException | None) -> dict[str, Any]:
    if outcome is None:
        return {"status": "done", "finished_at": utcnow(), "last_error": ""}
    if isinstance(outcome, Retry):
        return {"status": "queued", "run_at": utcnow() + outcome.after, "last_error": str(outcome)[:2000]}
    if job.attempts >= job.max_attempts:
        return {"status": "dead", "last_error": repr(outcome)[:2000], "finished_at": utcnow()}
    return {
        "status": "queued",
        "run_at": utcnow() + _backoff(job.attempts),
        "last_error": repr(outcome)[:2000],
    }


def finish_first_attempts(
    runtime: Runtime,
    name: str,
    kind: str,
    outcomes: list[tuple[int, BaseException | None]],
    *,
    max_attempts: int,
) -> None:
    """Record how the first attempt of jobs went that were enqueued already claimed by runner
    `name` (`enqueue_many(claimed_by=...)`, with `max_attempts`) and run at once by it."""
    now = utcnow()
    finish_jobs(
        runtime,
        name,
        [
            (Job(id=job_id, kind=kind, attempts=1, max_attempts=max_attempts, run_at=now), outcome)
            for job_id, outcome in outcomes
        ],
    )


def finish_jobs(runtime: Runtime, name: str, results: list[tuple[Job, BaseException | None]]) -> None:
    """Record every outcome in one transaction (Core statements: no ORM bookkeeping per row)."""
    if not results:
        return
    table = cast(Table, Job.__table__)
    done_ids: list[int] = []
    others: list[dict[str, Any]] = []
    now = utcnow()
    for job, outcome in results:
        if outcome is None:
            done_ids.append(job.id)
            continue
        if isinstance(outcome, _NoHandler):
            values: dict[str, Any] = {"status": "dead", "last_error": str(outcome), "finished_at": now}
        else:
            values = outcome_values(job, outcome)
        others.append(
            {
                "job_id": job.id,
                "new_status": values["status"],
                "new_run_at": values.get("run_at", job.run_at),
                "new_error": values.get("last_error", ""),
                "new_finished": values.get("finished_at"),
            }
        )
    with runtime.db.transaction() as session:
        connection = session.connection()
        # Only the worker holding the lease may finish a job.
        mine = (table.c.locked_by == name) & (table.c.status == "running")
        for start in range(0, len(done_ids), 500):
            chunk = done_ids[start : start + 500]
            connection.execute(
                update(table)
                .where(table.c.id.in_(chunk), mine)
                .values(status="done", finished_at=now, last_error="", locked_until=None)
            )
        if others:
            connection.execute(
                update(table)
                .where(table.c.id == bindparam("job_id"), mine)
                .values(
                    status=bindparam("new_status"),
                    run_at=bindparam("new_run_at"),
                    last_error=bindparam("new_error"),
                    finished_at=bindparam("new_finished"),
                    locked_until=None,
                ),
                others,
            )


class Runner:
    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int = 8,
        batch: int = 128,
        poll: float = 0.2,
        gather: float = 0.1,
        max_inflight: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[-64:]
        self.concurrency = concurrency
        self.batch = batch
        self.poll = poll
        self.gather = gather
        seconds = getattr(runtime.settings, "worker_lease_seconds", LEASE.total_seconds())
        self.lease = dt.timedelta(seconds=seconds)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self.max_inflight = max_inflight or batch * 4
        import_task_modules()

    def claim(self, limit: int | None = None) -> list[Job]:
        now = utcnow()
        db = self.runtime.db
        due = or_(
            and_(Job.status == "queued", Job.run_at <= now),
            and_(Job.status == "running", Job.locked_until < now),
        )
        if db.is_sqlite:
            # Most polls find nothing: look in a read transaction first, so an idle poll does not
            # take the write lock that validations are queueing for.
            with db.read() as session:
                if session.scalar(select(Job.id).where(due).limit(1)) is None:
                    return []
        with db.transaction() as session:
            query = select(Job.id).where(due).order_by(Job.run_at).limit(limit or self.batch)
            if not db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if not ids:
                return []
            session.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(
                    status="running",
                    locked_by=self.name,
                    locked_until=now + self.lease,
                    attempts=Job.attempts + 1,
                )
            )
            jobs = list(session.scalars(select(Job).where(Job.id.in_(ids))))
            for job in jobs:
                session.expunge(job)
            return jobs

    def _execute(self, job: Job) -> BaseException | None:
        handler = handler_for(job.kind)
        if handler is None:
            return _NoHandler(f"no handler for job kind {job.kind}")
        set_worker_name(self.name)
        try:
            handler(self.runtime, json.loads(job.payload))
        except Exception as exc:
            if not isinstance(exc, Retry):
                log.exception("job %s (%s) failed", job.id, job.kind)
            return exc
        return None

    def _finish(self, results: list[tuple[Job, BaseException | None]]) -> None:
        finish_jobs(self.runtime, self.name, results)

    def run_job(self, job: Job) -> None:
        self._finish([(job, self._execute(job))])

    def _run_batch(self, kind: str, jobs: list[Job]) -> list[tuple[Job, BaseException | None]]:
        handler = batch_handler_for(kind)
        assert handler is not None
        set_worker_name(self.name)
        try:
            outcomes = handler(self.runtime, [(job.id, json.loads(job.payload)) for job in jobs])
        except Exception as exc:
            log.exception("batch of %d %s jobs failed", len(jobs), kind)
            return [(job, exc) for job in jobs]
        return [(job, outcomes.get(job.id)) for job in jobs]

    def _units(self, jobs: list[Job]) -> list[tuple[int, Unit]]:
        """Units of work with their job counts: one per batch kind present, one per other job."""
        by_kind: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            by_kind[job.kind].append(job)
        units: list[tuple[int, Unit]] = []
        for kind, group in by_kind.items():
            if batch_handler_for(kind) is not None:
                units.append((len(group), functools.partial(self._run_batch, kind, group)))
            else:
                units.extend((1, functools.partial(self._run_single, job)) for job in group)
        return units

    def _run_single(self, job: Job) -> list[tuple[Job, BaseException | None]]:
        return [(job, self._execute(job))]

    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="job")
        return self._pool

    def run_once(self) -> int:
        """Claim and run one batch, and wait for it; the number of jobs run."""
        jobs = self.claim()
        if not jobs:
            return 0
        pool = self._get_pool()
        futures = [pool.submit(unit) for _, unit in self._units(jobs)]
        results: list[tuple[Job, BaseException | None]] = []
        for future in futures:
            results.extend(future.result())
        self._finish(results)
        return len(jobs)

    def _run_and_finish(self, unit: Unit) -> None:
        try:
            self._finish(unit())
        except Exception:
            # The leases run out and the jobs are claimed again: nothing is lost.
            log.exception("could not run or record a unit of jobs")

    def _pipeline(self) -> None:
        """Keep claiming while earlier batches are still in flight (a batch waiting on a slow
        receiver does not hold up the next one), up to `max_inflight` jobs."""
        pool = self._get_pool()
        inflight = 0
        lock = threading.Lock()

        def finished(count: int) -> None:
            nonlocal inflight
            with lock:
                inflight -= count
            self._wake.set()

        next_sweep = time.monotonic() + housekeeping.FIRST_SWEEP_AFTER.total_seconds()
        while not self._stop.is_set():
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + housekeeping.INTERVAL.total_seconds()
                try:
                    housekeeping.sweep(self.runtime)
                except Exception:
                    log.exception("housekeeping failed; it runs again in an hour")
            with lock:
                room = self.max_inflight - inflight
            jobs: list[Job] = []
            if room > 0:
                try:
                    jobs = self.claim(min(self.batch, room))
                except Exception:
                    log.exception("worker loop error")
            if not jobs:
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            with lock:
                inflight += len(jobs)
            for count, unit in self._units(jobs):
                future = pool.submit(self._run_and_finish, unit)
                future.add_done_callback(functools.partial(lambda n, _f: finished(n), count))
            if len(jobs) < self.batch:
                # A partial batch means jobs trickle in (e.g. one event per API call): let them
                # gather before the next claim. Claiming each as it came cost three write
                # transactions per job, which on SQLite queued the API calls behind the runner.
                self._stop.wait(self.gather)

    def run_until_idle(self, max_rounds: int = 1000) -> int:
        total = 0
        for _ in range(max_rounds):
            ran = self.run_once()
            total += ran
            if ran == 0:
                break
        return total

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def run_forever(self) -> None:
        try:
            self._pipeline()
        finally:
            self.close()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="opencoupon-worker", daemon=True)
        thread.start()
        return thread
