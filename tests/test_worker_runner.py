"""The job runner's promises: a job runs once while its runner lives, however long it waited in
the runner's pool; a job that kills its worker on every attempt ends dead instead of killing
workers for ever; a handler's own Retry does not use up the job's attempts; a stopped runner (or a
SIGTERM to `opencoupon worker`) gives back the jobs it had not started."""

from __future__ import annotations

import collections
import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from conftest import TEST_SECRET_KEY
from opencoupon.config import Settings
from opencoupon.kit.clock import utcnow
from opencoupon.models import Job
from opencoupon.runtime import Runtime
from opencoupon.worker import queue, registry
from opencoupon.worker.runner import Runner


@pytest.fixture
def short_lease(settings: Settings) -> Iterator[Runtime]:
    """A runtime whose runners lease jobs for one second."""
    rt = Runtime.from_settings(settings.model_copy(update={"worker_lease_seconds": 1.0}))
    yield rt
    rt.db.dispose()


def _kind(name: str) -> str:
    return f"test.{name}.{secrets.token_hex(4)}"


def _jobs(rt: Runtime, kind: str) -> list[Job]:
    with rt.db.read() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def _wait_until(done: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_job_that_waited_in_the_pool_past_its_lease_runs_once(short_lease: Runtime) -> None:
    """Twelve jobs of 0.3 s on two threads wait up to 1.8 s in the pool, longer than their
    one-second lease; the runner claimed them again and ran some twice."""
    kind = _kind("slow")
    runs: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    @registry.task(kind)
    def slow(_runtime: Runtime, payload: dict[str, Any]) -> None:
        with lock:
            runs[payload["n"]] += 1
        time.sleep(0.3)

    with short_lease.db.transaction() as session:
        for n in range(12):
            queue.enqueue(session, kind, {"n": n})
    runner = Runner(short_lease, concurrency=2)
    thread = runner.start_thread()
    try:
        _wait_until(lambda: all(job.status == "done" for job in _jobs(short_lease, kind)), 60)
        time.sleep(1.5)  # past every lease: a second claim would have happened by now
    finally:
        runner.stop()
        thread.join(30)
    assert runs == dict.fromkeys(range(12), 1)
    assert {(job.status, job.attempts) for job in _jobs(short_lease, kind)} == {("done", 1)}


CHILD = """
import os, signal, sys
from opencoupon.config import Settings
from opencoupon.runtime import Runtime
from opencoupon.worker import registry
from opencoupon.worker.runner import Runner

@registry.task(sys.argv[2])
def dies(runtime, payload):
    os.kill(os.getpid(), signal.SIGKILL)  # the worker dies running this job

settings = Settings(database_url=sys.argv[1], secret_key=sys.argv[3], var_dir=sys.argv[4],
                    worker_lease_seconds=1.0)
Runner(Runtime.from_settings(settings)).run_once()
"""


def test_a_job_that_kills_its_worker_every_time_ends_dead(short_lease: Runtime, var_dir: Path) -> None:
    """Two workers die running it (SIGKILL, for real); the third claim finds its attempts used
    up and buries it, and its kind's on_dead handler hears of it. Before, it was claimed again
    after every lease, for ever."""
    kind = _kind("poison")
    buried: list[dict[str, Any]] = []
    registry.on_dead(kind)(lambda _runtime, payload: buried.append(payload))
    with short_lease.db.transaction() as session:
        queue.enqueue(session, kind, {"fanout_id": 7}, max_attempts=2)
    url = short_lease.settings.database_url
    for _ in range(2):
        child = subprocess.run(
            [sys.executable, "-c", CHILD, url, kind, TEST_SECRET_KEY, str(var_dir)], timeout=120
        )
        assert child.returncode == -signal.SIGKILL
        time.sleep(1.1)  # its lease runs out
    [job] = _jobs(short_lease, kind)
    assert (job.status, job.attempts) == ("running", 2)
    Runner(short_lease).claim()
    [job] = _jobs(short_lease, kind)
    assert (job.status, job.attempts) == ("dead", 2)
    assert "lease ran out on its last attempt" in job.last_error
    assert buried == [{"fanout_id": 7}]


def test_a_handlers_retry_does_not_use_up_the_jobs_attempts(runtime: Runtime) -> None:
    """A fan-out continues in slices (Retry at once) many times; one ordinary failure after
    that is retried, not the end of the job."""
    kind = _kind("slices")
    calls = collections.Counter[str]()

    @registry.task(kind)
    def slices(_runtime: Runtime, _payload: dict[str, Any]) -> None:
        calls["all"] += 1
        if calls["all"] <= 12:
            raise registry.Retry(dt.timedelta(0), "continuing")
        if calls["all"] == 13:
            raise ConnectionError("one transient error")

    with runtime.db.transaction() as session:
        queue.enqueue(session, kind, {}, max_attempts=3)
    runner = Runner(runtime)
    for _ in range(13):
        runner.run_once()
    [job] = _jobs(runtime, kind)
    assert (job.status, job.attempts, calls["all"]) == ("queued", 1, 13)
    with runtime.db.transaction() as session:  # its backoff is over
        session.execute(update(Job).where(Job.id == job.id).values(run_at=utcnow()))
    runner.run_once()
    [job] = _jobs(runtime, kind)
    assert (job.status, calls["all"]) == ("done", 14)


def test_a_stopped_runner_gives_back_the_jobs_it_had_not_started(runtime: Runtime) -> None:
    kind = _kind("stop")
    started = threading.Event()

    @registry.task(kind)
    def slow(_runtime: Runtime, _payload: dict[str, Any]) -> None:
        started.set()
        time.sleep(0.5)

    with runtime.db.transaction() as session:
        for n in range(4):
            queue.enqueue(session, kind, {"n": n})
    runner = Runner(runtime, concurrency=1)
    thread = runner.start_thread()
    assert started.wait(30)
    runner.stop()
    thread.join(30)
    assert not thread.is_alive()
    states = sorted((job.status, job.attempts, job.locked_until) for job in _jobs(runtime, kind))
    assert states == [("done", 1, None)] + [("queued", 0, None)] * 3


WORKER = """
import sys, time
from opencoupon.worker import registry

@registry.task(sys.argv[1])
def slow(runtime, payload):
    open(sys.argv[2], "a").write("started\\n")
    time.sleep(1.0)

from opencoupon.cli.main import app
app(["worker", "--concurrency", "1"])
"""


def test_sigterm_stops_the_worker_command_cleanly(runtime: Runtime, var_dir: Path, tmp_path: Path) -> None:
    """`opencoupon worker` on SIGTERM (systemd, docker stop): the running job finishes, the
    others go back to the queue, and it exits 0. It died at once, leaving every claimed job
    leased for a minute and its running one half done."""
    kind = _kind("term")
    log = tmp_path / "started.log"
    with runtime.db.transaction() as session:
        for n in range(3):
            queue.enqueue(session, kind, {"n": n})
    env = {
        **os.environ,
        "OPENCOUPON_DATABASE_URL": runtime.settings.database_url,
        "OPENCOUPON_SECRET_KEY": TEST_SECRET_KEY,
        "OPENCOUPON_VAR_DIR": str(var_dir),
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), kind, str(log)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until(lambda: log.exists(), 60)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    statuses = sorted(job.status for job in _jobs(runtime, kind))
    assert statuses == ["done", "queued", "queued"]
    assert all(job.locked_until is None for job in _jobs(runtime, kind))
