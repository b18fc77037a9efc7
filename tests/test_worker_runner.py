# ruff: noqa: F811  (the `receiver` fixture is imported, then requested by name)
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

from conftest import TEST_SECRET_KEY, TestAccount
from coupons_fixtures import create_campaign
from opencoupon.config import Settings
from opencoupon.kit.clock import utcnow
from opencoupon.models import DistributionSend, Event, Job, SingleUseBatch, WebhookMessage
from opencoupon.runtime import Runtime
from opencoupon.worker import queue, registry
from opencoupon.worker.runner import Runner
from webhooks_fixtures import Receiver, Reply, emit, receiver  # noqa: F401


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
    """At once, while the running job is still running (a server waits only so long for its
    runner, and a supervisor SIGKILLs a worker that takes too long to stop), then the running job
    finishes."""
    kind = _kind("stop")
    started = threading.Event()

    @registry.task(kind)
    def slow(_runtime: Runtime, _payload: dict[str, Any]) -> None:
        started.set()
        time.sleep(3)

    with runtime.db.transaction() as session:
        for n in range(4):
            queue.enqueue(session, kind, {"n": n})
    runner = Runner(runtime, concurrency=1)
    thread = runner.start_thread()
    assert started.wait(30)
    runner.stop()
    _wait_until(lambda: [job.status for job in _jobs(runtime, kind)].count("queued") == 3, 2.5)
    assert [job.status for job in _jobs(runtime, kind)].count("running") == 1
    thread.join(30)
    assert not thread.is_alive()
    states = sorted((job.status, job.attempts, job.locked_until) for job in _jobs(runtime, kind))
    assert states == [("done", 1, None)] + [("queued", 0, None)] * 3


def test_a_job_waiting_in_a_live_runners_pool_is_not_taken_over_nor_buried(short_lease: Runtime) -> None:
    """Another worker (PostgreSQL: several processes) saw a job's lease run out while it waited
    behind a slow one in a live runner's pool: on its last attempt it was buried unrun (its
    on_dead handler failing, say, a webhook message never tried). The live runner renews the
    leases of what it holds."""
    slow_kind, quick_kind = _kind("slow"), _kind("last")
    ran: list[str] = []
    buried: list[dict[str, Any]] = []

    @registry.task(slow_kind)
    def slow(_runtime: Runtime, _payload: dict[str, Any]) -> None:
        time.sleep(2.5)

    @registry.task(quick_kind)
    def quick(_runtime: Runtime, _payload: dict[str, Any]) -> None:
        ran.append("quick")

    registry.on_dead(quick_kind)(lambda _runtime, payload: buried.append(payload))
    with short_lease.db.transaction() as session:
        queue.enqueue(session, slow_kind, {})
        queue.enqueue(session, quick_kind, {}, max_attempts=1)
    holder = Runner(short_lease, concurrency=1)
    thread = holder.start_thread()
    other = Runner(short_lease)
    try:
        _wait_until(lambda: {job.status for job in _jobs(short_lease, quick_kind)} == {"running"}, 30)
        deadline = time.monotonic() + 2.0  # past the one-second lease, the quick job still waiting
        while time.monotonic() < deadline:
            assert not [job for job in other.claim() if job.kind in (slow_kind, quick_kind)]
            time.sleep(0.1)
        _wait_until(lambda: {job.status for job in _jobs(short_lease, quick_kind)} == {"done"}, 30)
    finally:
        holder.stop()
        thread.join(30)
    assert (ran, buried) == (["quick"], [])


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


def _bury_one(rt: Runtime, kind: str, payload: dict[str, Any]) -> None:
    """A job of `kind` whose worker died on its last attempt, and a claim that finds it."""
    with rt.db.transaction() as session:
        queue.enqueue(session, kind, payload, max_attempts=1)
        session.execute(
            update(Job)
            .where(Job.kind == kind, Job.payload == queue.encode(payload))
            .values(
                status="running",
                attempts=1,
                locked_by="gone",
                locked_until=utcnow() - dt.timedelta(seconds=5),
            )
        )
    Runner(rt).claim()
    with rt.db.read() as session:
        status = session.scalar(
            select(Job.status).where(Job.kind == kind, Job.payload == queue.encode(payload))
        )
    assert status == "dead"


def test_a_send_or_link_batch_whose_worker_died_every_time_is_failed_not_in_progress(
    runtime: Runtime, account: TestAccount
) -> None:
    """An email `sending` for ever kept its recipient's duplicate-check key (no later
    check_unique send could reach them); a link batch `running` for ever showed in progress on
    the dashboard and was never cleaned up."""
    from opencoupon.distribution import service as distribution
    from opencoupon.singleuse import batches

    campaign_id = int(create_campaign(account)["id"].removeprefix("cam_"))
    now = utcnow()
    key = f"dead-{secrets.token_hex(6)}"
    with runtime.db.transaction() as session:
        send = DistributionSend(
            account_id=account.id,
            channel="email",
            campaign_id=campaign_id,
            recipient="x@example.org",
            recipient_key="x@example.org",
            status="sending",
            attempts=1,
            dedup_key=key,
            created_at=now,
            updated_at=now,
        )
        batch = SingleUseBatch(
            account_id=account.id, campaign_id=campaign_id, status="running", created_at=now, updated_at=now
        )
        session.add_all([send, batch])
        session.flush()
        send_id, batch_id = send.id, batch.id
    _bury_one(runtime, distribution.EMAIL_JOB, {"send_id": send_id})
    _bury_one(runtime, batches.KIND, {"batch": batch_id})
    with runtime.db.read() as session:
        send = session.get(DistributionSend, send_id)
        batch = session.get(SingleUseBatch, batch_id)
        assert send is not None
        assert batch is not None
        assert (send.status, send.dedup_key) == ("failed", None)
        assert "worker stopped" in send.last_error
        assert (batch.status, batch.finished_at is not None) == ("failed", True)


def test_a_delivery_slower_than_its_lease_is_sent_once_per_attempt_and_retried(
    settings: Settings, account: TestAccount, receiver: Receiver
) -> None:
    """A receiver that takes longer than the lease to answer 500, then recovers. The first
    deliveries, run inline by the event's dispatch job, were not held by the runner: it claimed
    them again and sent each twice at once; the run that recorded second finished the job `done`
    and the message stayed `pending` for good, never retried."""
    rt = Runtime.from_settings(
        settings.model_copy(update={"worker_lease_seconds": 1.0, "webhook_retry_delays": "1,1,1,1"})
    )
    started: dict[str, list[float]] = collections.defaultdict(list)
    lock = threading.Lock()

    def slow_then_fine(_path: str, headers: dict[str, str], _body: str) -> Reply:
        with lock:
            starts = started[headers["webhook-id"]]
            starts.append(time.monotonic())
        return Reply(status=500, delay=1.6) if len(starts) == 1 else Reply(status=204)

    receiver.behaviour = slow_then_fine
    created = account.client.post(
        "/v4/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    events = [emit(rt, account.id) for _ in range(3)]
    runner = Runner(rt)
    thread = runner.start_thread()

    def messages() -> list[str]:
        with rt.db.read() as session:
            return list(
                session.scalars(
                    select(WebhookMessage.status)
                    .join(Event, Event.id == WebhookMessage.event_id)
                    .where(Event.public_id.in_(events))
                )
            )

    try:
        _wait_until(lambda: messages() == ["succeeded"] * 3, 60)
    finally:
        runner.stop()
        thread.join(30)
        rt.db.dispose()
    # One failed attempt, then one success after it: no second send while the first was waiting.
    assert {event: len(starts) for event, starts in started.items()} == dict.fromkeys(events, 2)
    assert all(starts[1] - starts[0] >= 1.6 for starts in started.values()), started


def test_a_stopping_runner_keeps_its_running_jobs_leased_until_they_end(short_lease: Runtime) -> None:
    """SIGTERM: the runner stops claiming and waits for its running job, which takes longer than
    a lease. It stopped renewing meanwhile: another worker took the job over and ran it again."""
    kind = _kind("finishing")
    runs: list[str] = []
    started = threading.Event()

    @registry.task(kind)
    def long_job(_runtime: Runtime, _payload: dict[str, Any]) -> None:
        runs.append("run")
        started.set()
        time.sleep(2.5)

    with short_lease.db.transaction() as session:
        queue.enqueue(session, kind, {})
    stopping = Runner(short_lease, concurrency=1)
    thread = stopping.start_thread()
    other = Runner(short_lease)
    assert started.wait(30)
    stopping.stop()
    while thread.is_alive():
        assert not [job for job in other.claim() if job.kind == kind]
        time.sleep(0.1)
    assert runs == ["run"]
    assert {(job.status, job.attempts) for job in _jobs(short_lease, kind)} == {("done", 1)}


BURIER = """
import os, sys
from opencoupon.config import Settings
from opencoupon.runtime import Runtime
from opencoupon.worker import registry
from opencoupon.worker.runner import Runner

@registry.on_dead(sys.argv[2])
def dies_burying(runtime, payload):
    os._exit(9)  # killed between the burial's claim and its end

settings = Settings(database_url=sys.argv[1], secret_key=sys.argv[3], var_dir=sys.argv[4],
                    worker_lease_seconds=1.0)
Runner(Runtime.from_settings(settings)).claim()
"""


def test_a_runner_killed_while_burying_a_job_leaves_it_to_be_buried_again(
    short_lease: Runtime, var_dir: Path
) -> None:
    """The job was marked dead before its on_dead handler ran: a worker killed in between left,
    say, a webhook message pending for good. Now the burial is leased; the next claim after the
    lease buries it again, handler included."""
    kind = _kind("burial")
    heard: list[dict[str, Any]] = []
    registry.on_dead(kind)(lambda _runtime, payload: heard.append(payload))
    payload = {"message_id": 11}
    with short_lease.db.transaction() as session:
        queue.enqueue(session, kind, payload, max_attempts=1)
        session.execute(
            update(Job)
            .where(Job.kind == kind)
            .values(
                status="running",
                attempts=1,
                locked_by="gone",
                locked_until=utcnow() - dt.timedelta(seconds=5),
            )
        )
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            BURIER,
            short_lease.settings.database_url,
            kind,
            TEST_SECRET_KEY,
            str(var_dir),
        ],
        timeout=120,
    )
    assert child.returncode == 9
    [job] = _jobs(short_lease, kind)
    assert job.status == "running"  # not dead: its handler never finished
    time.sleep(1.1)  # the burial's lease runs out
    Runner(short_lease).claim()
    [job] = _jobs(short_lease, kind)
    assert (job.status, heard) == ("dead", [payload])


def test_a_job_whose_last_attempt_fails_is_closed_by_its_on_dead_handler(runtime: Runtime) -> None:
    """on_dead ran only for jobs buried after their worker died: a job whose last attempt raised
    went dead with what it was doing left open (an email `sending` for good, its recipient's
    duplicate-check key kept)."""
    kind = _kind("fails")
    closed: list[dict[str, Any]] = []

    @registry.task(kind)
    def fails(_runtime: Runtime, _payload: dict[str, Any]) -> None:
        raise RuntimeError("the database refused what the job recorded")

    registry.on_dead(kind)(lambda _runtime, payload: closed.append(payload))
    with runtime.db.transaction() as session:
        queue.enqueue(session, kind, {"n": 1}, max_attempts=2)
    runner = Runner(runtime)
    runner.run_once()
    [job] = _jobs(runtime, kind)
    assert (job.status, job.attempts, closed) == ("queued", 1, [])
    with runtime.db.transaction() as session:  # its backoff is over
        session.execute(update(Job).where(Job.id == job.id).values(run_at=utcnow()))
    runner.run_once()
    [job] = _jobs(runtime, kind)
    assert (job.status, job.attempts) == ("dead", 2)
    assert "the database refused" in job.last_error
    assert closed == [{"n": 1}]


def test_a_database_down_or_not_migrated_does_not_flood_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Claims that fail are tried again after a doubling delay (up to 30 s): the traceback once,
    then one line per attempt; the recovery is logged once."""
    from opencoupon.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'not-migrated.db'}"
    runtime = Runtime.from_settings(Settings(database_url=url, secret_key=TEST_SECRET_KEY, var_dir=tmp_path))
    runner = Runner(runtime, poll=0.2)
    caplog.set_level("INFO", logger="opencoupon.worker")
    thread = runner.start_thread()
    try:
        time.sleep(2.0)
        failing = [r for r in caplog.records if r.name == "opencoupon.worker"]
        # 0.2 s polls would have logged ten tracebacks; with back-off: t = 0, 0.4, 1.2 (next 2.8).
        assert 2 <= len(failing) <= 4, [r.getMessage() for r in failing]
        assert sum(1 for r in failing if r.exc_info) == 1
        upgrade(url)
        deadline = time.monotonic() + 6
        while (
            not any("again after" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert sum(1 for r in caplog.records if "again after" in r.getMessage()) == 1
    finally:
        runner.stop()
        thread.join(timeout=10)
        runtime.db.dispose()


def test_a_wake_cuts_the_claim_back_off_short(tmp_path: Path) -> None:
    """The back-off between failed claims waited out its whole delay (up to 30 s) whatever
    happened: work queued by this process once the database was back (the distribution command
    wakes its runner after each batch) waited for it. A wake now ends the wait."""
    from opencoupon.db.migrate import upgrade

    kind = _kind("after_outage")
    ran: list[float] = []
    registry.task(kind)(lambda _runtime, _payload: ran.append(time.monotonic()))
    url = f"sqlite:///{tmp_path / 'not-migrated.db'}"
    runtime = Runtime.from_settings(Settings(database_url=url, secret_key=TEST_SECRET_KEY, var_dir=tmp_path))
    runner = Runner(runtime, poll=0.2)
    thread = runner.start_thread()
    try:
        # Failed claims at t = 0, 0.4, 1.2 and 2.8 s; the next one only at 6.0 s.
        time.sleep(3.3)
        upgrade(url)
        with runtime.db.transaction() as session:
            queue.enqueue(session, kind, {})
        woken = time.monotonic()
        runner.wake()
        _wait_until(lambda: ran, 5)
        assert ran[0] - woken < 1.5, ran[0] - woken
    finally:
        runner.stop()
        thread.join(timeout=10)
        runtime.db.dispose()


def test_a_long_outage_does_not_end_the_runner(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim back-off's delay was poll * 2**failures, capped after the power was taken: at
    1,024 failures in a row (about 8.5 hours of outage at 30 s a try) it overflowed a float and
    the runner's thread ended, so no job ran again until a restart. The cap is set to nothing here
    only to reach 1,024 failures in seconds."""
    from opencoupon.worker import runner as runner_module

    monkeypatch.setattr(runner_module, "CLAIM_BACKOFF_MAX", 0.0)
    url = f"sqlite:///{tmp_path / 'not-migrated.db'}"
    runtime = Runtime.from_settings(Settings(database_url=url, secret_key=TEST_SECRET_KEY, var_dir=tmp_path))
    runner = Runner(runtime, poll=0.2)
    caplog.set_level("WARNING", logger="opencoupon.worker")
    thread = runner.start_thread()
    try:
        deadline = time.monotonic() + 60
        while len(caplog.records) < 1_100 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(caplog.records) >= 1_100, len(caplog.records)
        assert thread.is_alive()
    finally:
        runner.stop()
        thread.join(timeout=10)
        runtime.db.dispose()


WORKER_WITH_SENDERS = """
import sys
from pathlib import Path
from opencoupon.worker import registry

@registry.task(sys.argv[1])
def connect(runtime, payload):
    from opencoupon.push.outbound import push_outbound_for
    from opencoupon.webhooks.outbound import outbound_for

    for sender in (outbound_for(runtime.settings), push_outbound_for(runtime.settings)):
        sender.run(sender._client())
    Path(sys.argv[2]).write_text("connected")

from opencoupon.cli.main import app
app(["worker", "--concurrency", "1"])
"""


def test_the_worker_command_closes_its_senders(runtime: Runtime, var_dir: Path, tmp_path: Path) -> None:
    """A worker that made webhook and push connections, stopped by SIGTERM, closes them: it logged
    'Unclosed client session' for each."""
    kind = _kind("senders")
    marker = tmp_path / "connected"
    with runtime.db.transaction() as session:
        queue.enqueue(session, kind, {})
    env = {
        **os.environ,
        "OPENCOUPON_DATABASE_URL": runtime.settings.database_url,
        "OPENCOUPON_SECRET_KEY": TEST_SECRET_KEY,
        "OPENCOUPON_VAR_DIR": str(var_dir),
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER_WITH_SENDERS), kind, str(marker)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until(lambda: marker.exists(), 60)
        time.sleep(0.3)
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err[-800:]
    assert "Unclosed" not in err, err[-800:]
