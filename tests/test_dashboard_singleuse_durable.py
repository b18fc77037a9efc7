"""Dashboard single-use batches live in the database, not in the memory of the process that
started them: a second `opencoupon serve` process on the same database shows a batch's progress
and serves its CSV; a batch whose process was killed (SIGKILL) in the middle is left with no links
(all or nothing) and is then made, exactly once, by `opencoupon worker`."""

from __future__ import annotations

import csv
import fcntl
import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import undefer

from conftest import LiveServer, TestAccount
from dashboard_fixtures import post_form, signed_in, singleuse_campaign, wait_batch_done
from opencoupon.config import Settings
from opencoupon.models import CouponSession, Job, SingleUseBatch
from opencoupon.runtime import Runtime
from serve_process import OPENCOUPON, ServeProcess, serve_env

PAGE = "/dashboard/singleuse"
BIG = 30_000


def _env(settings: Settings, var_dir: Path) -> dict[str, str]:
    return serve_env(
        settings.database_url,
        var_dir,
        OPENCOUPON_BASE_URL=settings.base_url,
        OPENCOUPON_RUN_WORKER_IN_PROCESS="false",
        # A job of a killed process is claimed again 2 seconds later instead of 60.
        OPENCOUPON_WORKER_LEASE_SECONDS="2",
    )


@pytest.fixture
def second_server(settings: Settings, tmp_path: Path, live_server: LiveServer) -> Iterator[ServeProcess]:
    """Another `opencoupon serve` process on the suite's database."""
    server = ServeProcess(_env(settings, tmp_path))
    server.start()
    yield server
    server.kill()


def _batch(runtime: Runtime, job_path: str) -> SingleUseBatch:
    batch_id = int(job_path.rsplit("batch_", 1)[1])
    with runtime.db.read() as session:
        found = session.get(SingleUseBatch, batch_id, options=[undefer(SingleUseBatch.result)])
        assert found is not None
        session.expunge(found)
        return found


def _write_lock_held(settings: Settings) -> bool:
    """Whether some process holds the SQLite database's write lock (db/engine.py WriteLock)."""
    database = Path(make_url(settings.database_url).database or "").resolve()
    with open(f"{database}.lock", "a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        return False


def _links(runtime: Runtime, campaign: str) -> int:
    with runtime.db.read() as session:
        count = session.scalar(
            select(func.count())
            .select_from(CouponSession)
            .where(CouponSession.campaign_id == int(campaign[4:]))
        )
        return int(count or 0)


def test_progress_and_csv_are_read_from_the_database_by_another_process(
    live_server: LiveServer,
    second_server: ServeProcess,
    account: TestAccount,
    other_account: TestAccount,
    runtime: Runtime,
) -> None:
    campaign = singleuse_campaign(account, "Durable links")
    other_base = second_server.base
    with signed_in(live_server.url, account.email) as web:
        started = post_form(web, PAGE, f"{PAGE}/batches", {"campaign": campaign, "amount": "3000"})
        assert started.status_code == 303, started.text
        job_path = started.headers["location"]
        assert "3000 links ready" in wait_batch_done(web, job_path, seconds=60)
        here = web.get(job_path + "/links.csv").text
    stored = _batch(runtime, job_path)
    assert (stored.status, stored.done, stored.total) == ("done", 3000, 3000)
    assert stored.result is not None
    # The job the batch ran as is done in the outbox.
    with runtime.db.read() as session:
        job = session.get(Job, stored.job_id)
        assert job is not None
        assert (job.kind, job.status) == ("singleuse.batch", "done")
    with signed_in(other_base, account.email) as elsewhere:
        page = elsewhere.get(job_path)
        assert page.status_code == 200
        assert "3000 links ready" in elsewhere.get(job_path + "/progress").text
        there = elsewhere.get(job_path + "/links.csv")
        assert there.status_code == 200
        assert there.text == here
        rows = list(csv.DictReader(io.StringIO(there.text)))
        assert len({r["single_use_code"] for r in rows}) == 3000
        # The list of recent batches links to it, from either process.
        assert job_path.rsplit("/", 1)[1] in elsewhere.get(PAGE).text
    with signed_in(other_base, other_account.email) as stranger:
        assert stranger.get(job_path).status_code == 404
        assert stranger.get(job_path + "/progress").status_code == 404
        assert stranger.get(job_path + "/links.csv").status_code == 404
        assert stranger.get(f"{PAGE}/jobs/batch_999999999").status_code == 404
        # Malformed addresses answer like unknown ones (a superscript digit, a number beyond SQL's).
        for key in ("batch_\u00b2", "batch_" + "9" * 30, "batch_", "job_1"):
            assert stranger.get(f"{PAGE}/jobs/{key}").status_code == 404, key


def test_a_batch_of_a_killed_process_is_made_once_by_the_worker(
    live_server: LiveServer,
    second_server: ServeProcess,
    account: TestAccount,
    runtime: Runtime,
    settings: Settings,
    tmp_path: Path,
) -> None:
    campaign = singleuse_campaign(account, "Durable links")
    other_base = second_server.base
    with signed_in(other_base, account.email) as elsewhere:
        started = post_form(
            elsewhere,
            PAGE,
            f"{PAGE}/batches",
            {
                "campaign": campaign,
                "amount": str(BIG),
                "automated_codes": "1",
                "code_length": "12",
                "code_type": "alphanumeric",
            },
        )
        assert started.status_code == 303, started.text
        job_path = started.headers["location"]
        # The process must die in the middle of writing the links. PostgreSQL commits the count
        # every 10,000 links while the batch goes on: wait for one. On SQLite the batch is the
        # single writer: wait until the row says "running" and the database's write lock is
        # held (by the links transaction: nothing else writes meanwhile).
        deadline = time.monotonic() + 30
        while True:
            seen = _batch(runtime, job_path)
            if seen.status == "running" and (
                _write_lock_held(settings) if runtime.db.is_sqlite else seen.done >= 10_000
            ):
                break
            assert seen.status != "done", "the batch finished before the process could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        second_server.kill()
    left = _batch(runtime, job_path)
    assert left.status == "running"
    assert left.result is None
    # All or nothing: the killed transaction left no link.
    assert _links(runtime, campaign) == 0
    with signed_in(live_server.url, account.email) as web:
        # Any process shows where the batch stands (still running: nobody finished it).
        fragment = web.get(job_path + "/progress").text
        assert "hx-get" in fragment
        if not runtime.db.is_sqlite:
            assert f"Creating links… {left.done} of {BIG}" in fragment
        time.sleep(2.5)  # the killed process's lease on the job runs out
        worker = subprocess.run(
            [OPENCOUPON, "worker", "--once"],
            env=_env(settings, tmp_path),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert worker.returncode == 0, worker.stderr.decode()[-2000:]
        assert f"{BIG} links ready" in wait_batch_done(web, job_path, seconds=5)
        rows = list(csv.DictReader(io.StringIO(web.get(job_path + "/links.csv").text)))
    assert len(rows) == BIG
    assert len({r["single_use_code"] for r in rows}) == BIG
    assert _links(runtime, campaign) == BIG
    done = _batch(runtime, job_path)
    assert (done.status, done.done) == ("done", BIG)
    with runtime.db.read() as session:
        job = session.get(Job, done.job_id)
        assert job is not None
        assert (job.status, job.attempts) == ("done", 2)
