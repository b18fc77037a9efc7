"""No event lost (R7): 10,000 events, a receiver failing ~30% of requests at random (500, timeouts,
dropped connections), and `opencoupon worker` processes killed with SIGKILL three times mid-run;
and the events of validations made through a served API, the worker killed mid-delivery.
And (R-PG) two worker processes sharing one database never deliver the same attempt twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from conftest import TEST_SECRET_KEY
from coupons_fixtures import bulk_sessions, create_campaign
from opencoupon.config import Settings
from opencoupon.events import service as events
from opencoupon.models import Event, WebhookAttempt, WebhookMessage
from opencoupon.runtime import Runtime
from serve_process import ServeProcess, serve_env
from webhooks_fixtures import Receiver, Reply

if TYPE_CHECKING:
    from conftest import TestAccount

pytestmark = pytest.mark.slow


def _worker(settings: Settings, var_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "OPENCOUPON_DATABASE_URL": settings.database_url,
        "OPENCOUPON_SECRET_KEY": TEST_SECRET_KEY,
        "OPENCOUPON_VAR_DIR": str(var_dir),
        "OPENCOUPON_ALLOW_PRIVATE_WEBHOOKS": "1",
        "OPENCOUPON_WORKER_LEASE_SECONDS": "3",
        "OPENCOUPON_WEBHOOK_TIMEOUT_SECONDS": "0.5",
        "OPENCOUPON_WEBHOOK_CONCURRENCY": "256",
        # Short delays, and enough of them that 30% failures cannot exhaust a message.
        "OPENCOUPON_WEBHOOK_RETRY_DELAYS": ",".join(["0.2"] * 5 + ["0.5"] * 25),
        **env,
    }
    opencoupon = Path(sys.executable).parent / "opencoupon"
    return subprocess.Popen(
        [str(opencoupon), "worker", "--concurrency", "8"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _emit_many(runtime: Runtime, account_id: int, total: int, chunk: int = 500) -> list[str]:
    ids: list[str] = []
    for start in range(0, total, chunk):
        with runtime.db.transaction() as session:
            for n in range(start, min(total, start + chunk)):
                ids.append(events.emit(session, account_id, "coupon_validated", {"n": n}, campaign="cam_9"))
    return ids


def _endpoint(acc: TestAccount, url: str) -> str:
    resp = acc.client.post("/v4/webhooks", json={"url": url, "events": ["*"]}, headers=acc.headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["secret"])


def _succeeded(runtime: Runtime, account_id: int) -> int:
    with runtime.db.read() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(WebhookMessage)
                .where(WebhookMessage.account_id == account_id, WebhookMessage.status == "succeeded")
            )
            or 0
        )


def test_no_event_lost_with_random_failures_and_sigkilled_workers(
    runtime: Runtime, settings: Settings, var_dir: Path, account: TestAccount
) -> None:
    total = 10_000
    rng = random.Random(7)
    lock = threading.Lock()

    def chaos(_path: str, _headers: dict[str, str], _body: str) -> Reply:
        with lock:
            roll = rng.random()
        if roll < 0.10:
            return Reply(status=500)
        if roll < 0.20:
            return Reply(delay=2.0)
        if roll < 0.30:
            return Reply(drop=True)
        return Reply(status=204)

    receiver = Receiver().start()
    receiver.behaviour = chaos
    secret = _endpoint(account, receiver.url + "/chaos")
    worker = _worker(settings, var_dir)
    kills = 0
    succeeded_at_kills: list[int] = []
    try:
        producer_ids: list[str] = []
        producer = threading.Thread(
            target=lambda: producer_ids.extend(_emit_many(runtime, account.id, total))
        )
        started = time.monotonic()
        producer.start()
        for at in (3.0, 7.0, 11.0):
            time.sleep(max(0.0, started + at - time.monotonic()))
            # On a loaded machine a restarted worker may not have delivered anything yet: kill it
            # only once it has made progress since the last kill (it is then mid-run).
            before = succeeded_at_kills[-1] if succeeded_at_kills else 0
            deadline = time.monotonic() + 60
            while _succeeded(runtime, account.id) <= before and time.monotonic() < deadline:
                time.sleep(0.1)
            succeeded_at_kills.append(_succeeded(runtime, account.id))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
            worker = _worker(settings, var_dir)
        producer.join()
        assert len(producer_ids) == total
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            delivered = {r.event_id for r in receiver.requests() if 200 <= r.answered < 300}
            if delivered >= set(producer_ids) and _succeeded(runtime, account.id) == total:
                break
            time.sleep(0.5)
        got = receiver.requests()
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        receiver.stop()

    assert kills == 3
    # Each kill fell while the worker was delivering: after some progress since the previous
    # one, and the first long before the end.
    assert 0 < succeeded_at_kills[0] < total, succeeded_at_kills
    assert succeeded_at_kills == sorted(set(succeeded_at_kills)), succeeded_at_kills
    delivered = {r.event_id for r in got if 200 <= r.answered < 300}
    missing = set(producer_ids) - delivered
    assert not missing, f"{len(missing)} events never delivered"
    assert _succeeded(runtime, account.id) == total
    # Every request (first tries, retries, duplicates after a kill) is signed and carries the
    # event's own ID as webhook-id.
    verifier = Webhook(secret)
    for request in got:
        payload = verifier.verify(request.body, request.headers)
        assert request.headers["webhook-id"] == payload["id"]
    failures = sum(1 for r in got if not 200 <= r.answered < 300)
    assert failures > total * 0.2  # the receiver really failed about 30% of requests


def test_two_workers_never_deliver_the_same_attempt_twice(
    runtime: Runtime, settings: Settings, var_dir: Path, account: TestAccount
) -> None:
    total = 2_000
    receiver = Receiver().start()
    _endpoint(account, receiver.url + "/pair")
    workers = [
        _worker(
            settings, var_dir, OPENCOUPON_WORKER_LEASE_SECONDS="60", OPENCOUPON_WEBHOOK_TIMEOUT_SECONDS="10"
        )
        for _ in range(2)
    ]
    try:
        ids = _emit_many(runtime, account.id, total)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _succeeded(runtime, account.id) < total:
            time.sleep(0.3)
        time.sleep(0.5)
        got = receiver.requests()
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        receiver.stop()
    counts = Counter(r.headers["webhook-id"] for r in got)
    assert set(counts) == set(ids)
    with runtime.db.read() as session:
        rows: list[Any] = session.execute(
            select(Event.public_id, WebhookAttempt.attempt, WebhookAttempt.worker)
            .join(Event, Event.id == WebhookAttempt.event_id)
            .join(WebhookMessage, WebhookMessage.id == WebhookAttempt.message_id)
            .where(WebhookMessage.account_id == account.id)
        ).all()
    # Every request the receiver got is exactly one recorded attempt: no attempt was sent twice
    # (a retry after a slow answer is a new attempt, recorded as such).
    attempts = Counter(public_id for public_id, _, _ in rows)
    assert attempts == counts
    assert len({(public_id, number) for public_id, number, _ in rows}) == len(rows) == len(got)
    by_worker = Counter(worker for _, _, worker in rows)
    # Both processes took part (on SQLite the claims are serialised, still both get batches).
    assert len(by_worker) == 2, by_worker


def test_events_of_api_validations_survive_a_worker_sigkilled_mid_delivery(
    runtime: Runtime, settings: Settings, var_dir: Path, account: TestAccount, tmp_path: Path
) -> None:
    """R7 with the events made by business calls: validations through a served API write their
    outbox rows; the worker is SIGKILLed while deliveries are in flight at the receiver and others
    are committed but not sent yet; after a restart every event arrives, the interrupted ones again
    with the same webhook-id."""
    total, answered_at_once, hang = 40, 5, 2.0
    lock = threading.Lock()
    arrivals = 0
    killed = False
    # The stalled requests: when each arrived, its headers and body (the receiver records a request
    # only once answered, which these are not before the kill).
    hung: list[tuple[float, dict[str, str], str]] = []

    def stall_after_a_few(_path: str, headers: dict[str, str], body: str) -> Reply:
        nonlocal arrivals
        with lock:
            arrivals += 1
            if killed or arrivals <= answered_at_once:
                return Reply(status=204)
            hung.append((time.monotonic(), headers, body))
        return Reply(delay=hang)

    receiver = Receiver().start()
    receiver.behaviour = stall_after_a_few
    secret = _endpoint(account, receiver.url + "/business")
    campaign = create_campaign(account)
    codes = bulk_sessions(runtime, campaign["id"], total)
    api = ServeProcess(
        serve_env(
            settings.database_url,
            tmp_path,
            OPENCOUPON_RUN_WORKER_IN_PROCESS="0",
            OPENCOUPON_ALLOW_PRIVATE_WEBHOOKS="1",
        )
    )
    base = api.start()
    # A short lease: the killed worker's deliveries are taken over a second later.
    worker_env = {"OPENCOUPON_WEBHOOK_TIMEOUT_SECONDS": "10", "OPENCOUPON_WORKER_LEASE_SECONDS": "1"}
    worker = _worker(settings, var_dir, **worker_env)
    try:
        with httpx2.Client(base_url=base, headers=account.headers, timeout=30) as client:
            for code in codes:
                r = client.post("/v3/couponsession/update", json={"couponsession": code, "validate": True})
                assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not hung:
            time.sleep(0.02)
        with lock:
            in_flight = [(h, b) for arrived, h, b in hung if time.monotonic() < arrived + hang]
            delivered_before = {r.event_id for r in receiver.requests() if 200 <= r.answered < 300}
            sent_before = delivered_before | {headers["webhook-id"] for _, headers, _ in hung}
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            killed = True
        worker = _worker(settings, var_dir, **worker_env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _succeeded(runtime, account.id) < total:
            time.sleep(0.2)
        got = receiver.requests()
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        api.stop()
        receiver.stop()

    # The kill really interrupted deliveries: some in flight, some already done, not all.
    assert in_flight, "no delivery was in flight at the kill"
    assert 0 < len(delivered_before) < total, len(delivered_before)
    with runtime.db.read() as session:
        event_ids = set(
            session.scalars(
                select(Event.public_id).where(
                    Event.account_id == account.id, Event.type == "coupon_validated"
                )
            )
        )
    assert len(event_ids) == total  # one outbox row per validation, written with it
    assert event_ids - sent_before, "every event had been sent before the kill"  # committed, not sent
    delivered = {r.event_id for r in got if 200 <= r.answered < 300}
    assert delivered == event_ids
    assert _succeeded(runtime, account.id) == total
    # Every request, the interrupted ones included, is signed and carries its event's ID as
    # webhook-id; the interrupted deliveries were sent again after the restart with that same ID.
    verifier = Webhook(secret)
    for headers, body in [(r.headers, r.body) for r in got] + in_flight:
        assert headers["webhook-id"] == verifier.verify(body, headers)["id"]
    resent = {r.headers["webhook-id"] for r in got if 200 <= r.answered < 300}
    assert {headers["webhook-id"] for headers, _ in in_flight} <= resent
