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
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, and_, bindparam, or_, select, update

from opencoupon.kit.clock import utcnow
from opencoupon.models import Job
from opencoupon.runtime import Runtime
from opencoupon.worker import housekeeping
from opencoupon.worker.registry import (
    Retry,
    batch_handler_for,
    dead_handler_for,
    handler_for,
    set_worker_name,
)

if TYPE_CHECKING:
    from opencoupon.config import Settings

log = logging.getLogger("opencoupon.worker")

# Longest wait between two attempts to claim jobs while they fail (the database down).
CLAIM_BACKOFF_MAX = 30.0


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


LEASE = dt.timedelta(seconds=60)
BURIED = "its lease ran out on its last attempt (the worker stopped or it ran too long)"

# Runs its jobs (those still held by the runner when it starts) and gives their outcomes.
Unit = Callable[[list[Job]], list[tuple[Job, BaseException | None]]]


def _tell_dead(runtime: Runtime, kind: str, payload: dict[str, Any]) -> None:
    handler = dead_handler_for(kind)
    if handler is None:
        return
    try:
        handler(runtime, payload)
    except Exception:
        log.exception("the on_dead handler of a %s job failed", kind)


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
        # A Retry is the handler's own schedule (a delivery's next try, the next slice of a
        # fan-out), bounded by the handler: the attempt does not use up the job's max_attempts,
        # which count failures and workers that died running it.
        return {
            "status": "queued",
            "run_at": utcnow() + outcome.after,
            "last_error": str(outcome)[:2000],
            "attempts": max(0, job.attempts - 1),
        }
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
    dying: list[Job] = []
    now = utcnow()
    for job, outcome in results:
        if outcome is None:
            done_ids.append(job.id)
            continue
        if isinstance(outcome, _NoHandler):
            values: dict[str, Any] = {"status": "dead", "last_error": str(outcome), "finished_at": now}
        else:
            values = outcome_values(job, outcome)
            if values["status"] == "dead":
                dying.append(job)
        others.append(
            {
                "job_id": job.id,
                "new_status": values["status"],
                "new_run_at": values.get("run_at", job.run_at),
                "new_error": values.get("last_error", ""),
                "new_finished": values.get("finished_at"),
                "new_attempts": values.get("attempts", job.attempts),
            }
        )
    _close_dying(runtime, dying)
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
                    attempts=bindparam("new_attempts"),
                    locked_until=None,
                ),
                others,
            )


def _close_dying(runtime: Runtime, jobs: list[Job]) -> None:
    """The `on_dead` handlers of jobs whose last attempt failed, as for those buried after their
    worker died: before they are marked dead, so a runner dying meanwhile leaves them to be
    buried, their handler run again (handlers are idempotent)."""
    jobs = [job for job in jobs if dead_handler_for(job.kind) is not None]
    if not jobs:
        return
    payloads = {job.id: job.payload for job in jobs if job.payload}
    missing = [job.id for job in jobs if job.id not in payloads]
    if missing:  # jobs recorded by finish_first_attempts carry no payload
        with runtime.db.read() as session:
            payloads.update(session.execute(select(Job.id, Job.payload).where(Job.id.in_(missing))).tuples())
    for job in jobs:
        if job.id in payloads:
            _tell_dead(runtime, job.kind, json.loads(payloads[job.id]))


def close_senders(settings: Settings) -> None:
    """Close the process's webhook and push senders (at the end of the worker or server)."""
    from opencoupon.push.outbound import close_push_outbound_for
    from opencoupon.webhooks.outbound import close_outbound_for

    for close in (close_outbound_for, close_push_outbound_for):
        try:
            close(settings)
        except Exception:
            log.exception("could not close an outbound sender")


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
        # Jobs this runner has claimed and not finished yet (queued in its pool or running),
        # and those of them whose unit has not started. The runner renews their leases while it
        # lives (`_renew_held`): only a dead runner's jobs are taken over or buried.
        self._held: set[int] = set()
        self._waiting: set[int] = set()
        self._held_lock = threading.Lock()
        # When the last job put back for want of a place (Retry busy) comes due (monotonic
        # seconds): run_until_idle waits for it.
        self._busy_due: float | None = None
        import_task_modules()

    def _hold(self, ids: list[int]) -> None:
        with self._held_lock:
            self._held.update(ids)
            self._waiting.update(ids)

    def hold_running(self, ids: list[int]) -> None:
        """Jobs a handler of this runner claimed for it and runs itself (registry.holding)."""
        with self._held_lock:
            self._held.update(ids)

    def release(self, ids: list[int]) -> None:
        self._release(ids)

    def _release(self, ids: list[int]) -> None:
        with self._held_lock:
            self._held.difference_update(ids)
            self._waiting.difference_update(ids)

    def _start(self, jobs: list[Job]) -> list[Job]:
        """The jobs of a unit now starting, less those a stopping runner gave back meanwhile."""
        with self._held_lock:
            kept = [job for job in jobs if job.id in self._waiting]
            self._waiting.difference_update(job.id for job in kept)
        return kept

    def _renew_held(self) -> None:
        """Extend the leases of every job this runner holds: a job waiting in its pool, or running
        long, is not another worker's to take over (nor to bury on its last attempt)."""
        with self._held_lock:
            held = list(self._held)
        if not held:
            return
        with self.runtime.db.transaction() as session:
            session.execute(
                update(Job)
                .where(Job.id.in_(held), Job.locked_by == self.name, Job.status == "running")
                .values(locked_until=utcnow() + self.lease)
            )

    def claim(self, limit: int | None = None) -> list[Job]:
        now = utcnow()
        db = self.runtime.db
        with self._held_lock:
            held = list(self._held)
        lease_over = and_(Job.status == "running", Job.locked_until < now)
        if held:
            lease_over = and_(lease_over, Job.id.not_in(held))
        due = or_(and_(Job.status == "queued", Job.run_at <= now), lease_over)
        if db.is_sqlite:
            # Most polls find nothing: look in a read transaction first, so an idle poll does not
            # take the write lock that validations are queueing for.
            with db.read() as session:
                if session.scalar(select(Job.id).where(due).limit(1)) is None:
                    return []
        buried: list[tuple[int, str, dict[str, Any]]] = []
        with db.transaction() as session:
            buried = self._bury(session, lease_over, now)
            query = select(Job.id).where(due).order_by(Job.run_at).limit(limit or self.batch)
            if not db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            jobs: list[Job] = []
            if ids:
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
                self._hold(ids)
        if buried:
            self._finish_burials(buried)
        return jobs

    def _bury(self, session: Any, lease_over: Any, now: dt.datetime) -> list[tuple[int, str, dict[str, Any]]]:
        """Jobs whose lease ran out on their last attempt are not run again: a job that kills its
        worker every time would otherwise be re-run for ever. They are leased to this runner
        for their burial (`_finish_burials`: the kind's `on_dead` handler, then `dead`), so a
        runner dying meanwhile leaves them to be buried again, their handler not skipped."""
        query = select(Job.id, Job.kind, Job.payload).where(lease_over, Job.attempts >= Job.max_attempts)
        if not self.runtime.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows = session.execute(query).all()
        if not rows:
            return []
        session.execute(
            update(Job)
            .where(Job.id.in_([row.id for row in rows]))
            .values(locked_by=self.name, locked_until=now + self.lease)
        )
        return [(row.id, row.kind, json.loads(row.payload)) for row in rows]

    def _finish_burials(self, buried: list[tuple[int, str, dict[str, Any]]]) -> None:
        set_worker_name(self.name, self)
        for _job_id, kind, payload in buried:
            _tell_dead(self.runtime, kind, payload)
        with self.runtime.db.transaction() as session:
            session.execute(
                update(Job)
                .where(
                    Job.id.in_([job_id for job_id, _kind, _payload in buried]),
                    Job.locked_by == self.name,
                    Job.status == "running",
                )
                .values(
                    status="dead",
                    finished_at=utcnow(),
                    locked_until=None,
                    last_error=BURIED,
                )
            )
        log.error("%d job(s) dead: their worker stopped during every attempt", len(buried))

    def _still_held(self, jobs: list[Job]) -> list[Job]:
        """The jobs of a unit about to start that are still this runner's. A unit that waited in
        the pool for a good part of the lease renews it first; a job another worker took over
        meanwhile (its lease had run out) is left to that worker."""
        claimed_until = min((job.locked_until for job in jobs if job.locked_until), default=None)
        if claimed_until is None or utcnow() < claimed_until - self.lease * 3 / 4:
            return jobs
        ids = [job.id for job in jobs]
        now = utcnow()
        with self.runtime.db.transaction() as session:
            mine = (Job.id.in_(ids)) & (Job.locked_by == self.name) & (Job.status == "running")
            session.execute(update(Job).where(mine).values(locked_until=now + self.lease))
            kept = set(session.scalars(select(Job.id).where(mine)))
        for job in jobs:
            job.locked_until = now + self.lease
        return [job for job in jobs if job.id in kept]

    def _execute(self, job: Job) -> BaseException | None:
        handler = handler_for(job.kind)
        if handler is None:
            return _NoHandler(f"no handler for job kind {job.kind}")
        set_worker_name(self.name, self)
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
        try:
            self._finish([(job, self._execute(job))])
        finally:
            self._release([job.id])

    def _run_batch(self, kind: str, jobs: list[Job]) -> list[tuple[Job, BaseException | None]]:
        handler = batch_handler_for(kind)
        assert handler is not None
        set_worker_name(self.name, self)
        try:
            outcomes = handler(self.runtime, [(job.id, json.loads(job.payload)) for job in jobs])
        except Exception as exc:
            log.exception("batch of %d %s jobs failed", len(jobs), kind)
            return [(job, exc) for job in jobs]
        return [(job, outcomes.get(job.id)) for job in jobs]

    def _units(self, jobs: list[Job]) -> list[tuple[list[Job], Unit]]:
        """Units of work with their jobs: one per batch kind present, one per other job."""
        by_kind: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            by_kind[job.kind].append(job)
        units: list[tuple[list[Job], Unit]] = []
        for kind, group in by_kind.items():
            if batch_handler_for(kind) is not None:
                units.append((group, functools.partial(self._run_batch, kind)))
            else:
                units.extend(([job], self._run_single) for job in group)
        return units

    def _run_single(self, jobs: list[Job]) -> list[tuple[Job, BaseException | None]]:
        return [(job, self._execute(job)) for job in jobs]

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
        try:
            futures = [pool.submit(unit, unit_jobs) for unit_jobs, unit in self._units(jobs)]
            results: list[tuple[Job, BaseException | None]] = []
            for future in futures:
                results.extend(future.result())
            self._finish(results)
        finally:
            self._release([job.id for job in jobs])
        waits = [exc.after for _job, exc in results if isinstance(exc, Retry) and exc.busy]
        if waits:
            due = time.monotonic() + max(waits).total_seconds()
            self._busy_due = max(self._busy_due or 0.0, due)
        return len(jobs)

    def _run_and_finish(self, jobs: list[Job], unit: Unit) -> None:
        try:
            held = self._start(jobs)
            if held:
                held = self._still_held(held)
            if held:
                self._finish(unit(held))
        except Exception:
            # The leases run out and the jobs are claimed again: nothing is lost.
            log.exception("could not run or record a unit of jobs")
        finally:
            self._release([job.id for job in jobs])

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
        renew_every = self.lease.total_seconds() / 3
        next_renewal = time.monotonic() + renew_every
        failures = 0
        while not self._stop.is_set():
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + renew_every
                try:
                    self._renew_held()
                except Exception:
                    log.exception("could not renew the leases of held jobs")
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
                except Exception as exc:
                    # The database down or not migrated: the traceback once, then one line per
                    # attempt, tried again after a delay doubling up to CLAIM_BACKOFF_MAX.
                    failures += 1
                    if failures == 1:
                        log.exception("could not claim jobs; trying again with back-off")
                    else:
                        log.warning(
                            "could not claim jobs (%d failures in a row): %s", failures, _one_line(exc)
                        )
                    # The exponent stops growing at the cap (2**1024 overflowed a float after
                    # about 8.5 hours of outage and ended the runner thread). A wake (new work
                    # queued by this process, a unit finished, stop) cuts the wait short: the
                    # database answered someone, so it may be back.
                    self._wake.wait(min(self.poll * 2 ** min(failures, 20), CLAIM_BACKOFF_MAX))
                    self._wake.clear()
                    continue
                if failures:
                    log.warning("claiming jobs again after %d failures", failures)
                    failures = 0
            if not jobs:
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            with lock:
                inflight += len(jobs)
            for unit_jobs, unit in self._units(jobs):
                future = pool.submit(self._run_and_finish, unit_jobs, unit)
                future.add_done_callback(functools.partial(lambda n, _f: finished(n), len(unit_jobs)))
            if len(jobs) < self.batch:
                # A partial batch means jobs trickle in (e.g. one event per API call): let them
                # gather before the next claim. Claiming each as it came cost three write
                # transactions per job, which on SQLite queued the API calls behind the runner.
                self._stop.wait(self.gather)

    def run_until_idle(self, max_rounds: int = 1000) -> int:
        """Run batches until nothing is due. Jobs put back for want of a place (Retry busy, e.g.
        one account's share of concurrent sends) are waited for: they were due when the run began,
        and `worker --once` sent only an account's first few emails per run."""
        total = 0
        self._busy_due = None
        for _ in range(max_rounds):
            ran = self.run_once()
            total += ran
            if ran == 0:
                if self._busy_due is None:
                    break
                wait, self._busy_due = self._busy_due - time.monotonic(), None
                if wait > 0:
                    time.sleep(wait)
        return total

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        """Give the jobs of units not started back to the queue at once (not after their lease),
        as if never claimed; then let the units already running finish."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        with self._held_lock:
            unstarted = list(self._waiting)
            self._waiting.clear()
            self._held.difference_update(unstarted)
        if unstarted:
            try:
                with self.runtime.db.transaction() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id.in_(unstarted), Job.locked_by == self.name, Job.status == "running")
                        .values(status="queued", locked_until=None, attempts=Job.attempts - 1)
                    )
            except Exception:
                log.exception("could not give back %d unstarted jobs; their leases run out", len(unstarted))
        if pool is not None:
            # The running jobs are still this runner's while they finish: their leases are
            # renewed (no other worker takes them over, nor buries them on a last attempt).
            finished = threading.Event()
            renewing = threading.Thread(target=self._renew_until, args=(finished,), daemon=True)
            renewing.start()
            try:
                pool.shutdown(wait=True)
            finally:
                finished.set()
                renewing.join(timeout=10)

    def _renew_until(self, finished: threading.Event) -> None:
        while not finished.wait(self.lease.total_seconds() / 3):
            try:
                self._renew_held()
            except Exception:
                log.exception("could not renew the leases of held jobs")

    def run_forever(self) -> None:
        try:
            self._pipeline()
        finally:
            self.close()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="opencoupon-worker", daemon=True)
        thread.start()
        return thread
