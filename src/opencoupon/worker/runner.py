"""The job runner: claims due jobs with a lease, runs them, retries with backoff.

On PostgreSQL, claims use FOR UPDATE SKIP LOCKED so several `opencoupon worker` processes share
one table. A job whose lease ran out (its worker died) is claimed again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import and_, or_, select, update

from opencoupon.kit.clock import utcnow
from opencoupon.models import Job
from opencoupon.runtime import Runtime
from opencoupon.worker.registry import Retry, handler_for

log = logging.getLogger("opencoupon.worker")

LEASE = dt.timedelta(seconds=60)


def _backoff(attempts: int) -> dt.timedelta:
    base = min(3600.0, 2.0 ** min(attempts, 12))
    return dt.timedelta(seconds=base * random.uniform(0.8, 1.2))


def import_task_modules() -> None:
    """Import every module that registers job handlers."""
    import importlib

    for module in ("opencoupon.webhooks.tasks", "opencoupon.push.tasks", "opencoupon.distribution.tasks"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not (module == exc.name or module.startswith(exc.name + ".")):
                raise


class Runner:
    def __init__(self, runtime: Runtime, *, concurrency: int = 8, batch: int = 64, poll: float = 0.2) -> None:
        self.runtime = runtime
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.concurrency = concurrency
        self.batch = batch
        self.poll = poll
        self._stop = threading.Event()
        self._wake = threading.Event()
        import_task_modules()

    def claim(self) -> list[Job]:
        now = utcnow()
        db = self.runtime.db
        with db.transaction() as session:
            due = or_(
                and_(Job.status == "queued", Job.run_at <= now),
                and_(Job.status == "running", Job.locked_until < now),
            )
            query = select(Job.id).where(due).order_by(Job.run_at).limit(self.batch)
            if not db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if not ids:
                return []
            session.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(
                    status="running", locked_by=self.name, locked_until=now + LEASE, attempts=Job.attempts + 1
                )
            )
            jobs = list(session.scalars(select(Job).where(Job.id.in_(ids))))
            for job in jobs:
                session.expunge(job)
            return jobs

    def run_job(self, job: Job) -> None:
        handler = handler_for(job.kind)
        now = utcnow()
        values: dict[str, object]
        if handler is None:
            values = {
                "status": "dead",
                "last_error": f"no handler for job kind {job.kind}",
                "finished_at": now,
            }
        else:
            try:
                handler(self.runtime, json.loads(job.payload))
                values = {"status": "done", "finished_at": utcnow(), "last_error": ""}
            except Retry as retry:
                values = {
                    "status": "queued",
                    "run_at": utcnow() + retry.after,
                    "last_error": str(retry)[:2000],
                }
            except Exception as exc:
                log.exception("job %s (%s) failed", job.id, job.kind)
                if job.attempts >= job.max_attempts:
                    values = {"status": "dead", "last_error": repr(exc)[:2000], "finished_at": utcnow()}
                else:
                    values = {
                        "status": "queued",
                        "run_at": utcnow() + _backoff(job.attempts),
                        "last_error": repr(exc)[:2000],
                    }
        with self.runtime.db.transaction() as session:
            # Only the worker holding the lease may finish the job.
            session.execute(
                update(Job)
                .where(Job.id == job.id, Job.locked_by == self.name, Job.status == "running")
                .values(locked_until=None, **values)
            )

    def run_once(self) -> int:
        """Claim and run one batch; the number of jobs run."""
        jobs = self.claim()
        if not jobs:
            return 0
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(self.run_job, jobs))
        return len(jobs)

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

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:
                log.exception("worker loop error")
                ran = 0
            if ran == 0:
                self._wake.wait(self.poll)
                self._wake.clear()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="opencoupon-worker", daemon=True)
        thread.start()
        return thread
