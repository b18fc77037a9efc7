# ruff: noqa: F811  (the `receiver` fixture is imported, then requested by name)
"""Faults found in the second review of webhooks, with a real receiver on loopback and the real
database: deliveries follow a subaccount's `webhook_endpoint` field when it changes or is cleared,
one tenant's slow receivers hold up no other tenant's webhooks (nor make their signatures stale),
and a replay of everything since a time runs in the background in chunks."""

from __future__ import annotations

import datetime as dt
import random
import string
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from sqlalchemy import select, text
from standardwebhooks import Webhook

from helpers import assert_error, assert_ok
from opencoupon.models import Event, WebhookMessage
from opencoupon.runtime import Runtime
from opencoupon.webhooks import outbound
from webhooks_fixtures import Receiver, Reply, drain, emit, receiver  # noqa: F401

if TYPE_CHECKING:
    from conftest import TestAccount


def _field(acc: TestAccount) -> dict[str, Any]:
    listed = acc.client.get("/v4/webhooks", headers=acc.headers).json()
    return dict(next(e for e in listed if e["source"] == "account_field"))


def _endpoint(acc: TestAccount, url: str) -> dict[str, Any]:
    resp = acc.client.post("/v4/webhooks", json={"url": url, "events": ["*"]}, headers=acc.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _log(acc: TestAccount, endpoint_id: str) -> list[dict[str, Any]]:
    resp = acc.client.get(f"/v4/webhooks/{endpoint_id}/deliveries", headers=acc.headers)
    assert resp.status_code == 200, resp.text
    return list(resp.json())


def _message(runtime: Runtime, event_public_id: str) -> WebhookMessage:
    with runtime.db.read() as session:
        return session.execute(
            select(WebhookMessage)
            .join(Event, Event.id == WebhookMessage.event_id)
            .where(Event.public_id == event_public_id)
        ).scalar_one()


# ---- 1. the field endpoint follows the field, for retries and replays too -------------------------


def test_a_cleared_field_gets_no_more_retries(
    runtime: Runtime,
    account: TestAccount,
    subaccount: TestAccount,
    receiver: Receiver,
    clock_offset: Callable[[dt.timedelta], None],
) -> None:
    """Before, clearing the field stopped new events only: the failing message's retries went on
    to the old URL for a day, and GET /v4/webhooks still listed it, enabled."""
    receiver.behaviour = lambda *_: Reply(status=500)
    sub = f"sub_{subaccount.id}"
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/old"))
    event = emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    assert len(receiver.requests()) == 1
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=""))
    field = _field(subaccount)
    assert (field["url"], field["enabled"]) == ("", False)
    assert "field was cleared" in field["disabled_reason"]
    for hours in (1, 3, 8, 20, 30):
        clock_offset(dt.timedelta(hours=hours))
        drain(runtime)
    time.sleep(0.2)
    assert [r.path for r in receiver.requests()] == ["/old"]
    message = _message(runtime, event)
    assert message.status == "failed"
    assert "field was cleared" in message.last_error
    replay = subaccount.client.post(
        f"/v4/webhooks/{field['id']}/replay", json={"event": event}, headers=subaccount.headers
    )
    assert_error(replay, 409, 308)  # disabled: nothing to send to

    # Set again: the endpoint starts afresh at the new URL.
    receiver.behaviour = lambda *_: Reply(status=204)
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/again"))
    field = _field(subaccount)
    assert (field["url"], field["enabled"], field["disabled_reason"]) == (receiver.url + "/again", True, "")
    later = emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    got = receiver.wait_for(2)
    assert (got[1].path, got[1].event_id) == ("/again", later)


def test_after_the_field_changes_the_retry_goes_to_the_new_url(
    runtime: Runtime,
    account: TestAccount,
    subaccount: TestAccount,
    receiver: Receiver,
    clock_offset: Callable[[dt.timedelta], None],
) -> None:
    receiver.behaviour = lambda path, *_: Reply(status=500 if path == "/old" else 204)
    sub = f"sub_{subaccount.id}"
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/old"))
    event = emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/new"))
    field = _field(subaccount)
    assert (field["url"], field["enabled"]) == (receiver.url + "/new", True)
    clock_offset(dt.timedelta(minutes=1))
    drain(runtime)
    time.sleep(0.2)
    got = receiver.requests()
    assert [(r.path, r.event_id) for r in got] == [("/old", event), ("/new", event)]
    assert _message(runtime, event).status == "succeeded"
    log = subaccount.client.get(f"/v4/webhooks/{field['id']}/deliveries", headers=subaccount.headers).json()
    assert [e["status_code"] for e in log] == [204, 500]


# ---- 2. one tenant's slow receivers hold up no other tenant's webhooks ------------------------------


@pytest.fixture
def small_pool(runtime: Runtime) -> Iterator[Runtime]:
    """The same database and keys, with a pool of two connections, one per endpoint, a 1 s
    limit and an hour before a retry."""
    settings = runtime.settings.model_copy(
        update={
            "webhook_concurrency": 2,
            "webhook_endpoint_concurrency": 1,
            "webhook_timeout_seconds": 1.0,
            "webhook_retry_delays": "3600",
        }
    )
    small = Runtime(settings=settings, db=runtime.db, keyring=runtime.keyring)
    try:
        yield small
    finally:
        outbound.close_outbound_for(settings)


def test_a_tenants_slow_receivers_do_not_hold_up_another_tenants_webhooks(
    small_pool: Runtime,
    account: TestAccount,
    other_account: TestAccount,
    receiver: Receiver,
    clock_offset: Callable[[dt.timedelta], None],
) -> None:
    """Account A: two endpoints on a receiver that never answers in time, ten events. Account B:
    one healthy receiver, one event, in the same batch. Before, A's twenty requests took the two
    connections one timeout after another: B's webhook left after 10 s, its webhook-timestamp
    (taken when the batch started) 11 s old. Now an endpoint gets one connection at a time and
    its waiting requests are deferred once it timed out (no attempt used); B's goes out at
    once, signed when it is sent."""
    tarpit = Receiver().start()
    tarpit.behaviour = lambda *_: Reply(status=204, delay=3)
    arrivals: list[float] = []
    receiver.behaviour = lambda *_: arrivals.append(time.time()) or Reply(status=204)
    try:
        slow = [_endpoint(account, tarpit.url + f"/t{i}") for i in range(2)]
        victim = _endpoint(other_account, receiver.url + "/victim")
        for _ in range(10):
            emit(small_pool, account.id)
        victim_event = emit(small_pool, other_account.id)
        started = time.time()
        drain(small_pool)
        took = time.time() - started
        got = receiver.wait_for(1, 30)[0]
        assert got.event_id == victim_event
        # Sent as soon as a connection was free (after one 1 s timeout at most), signed then.
        assert arrivals[0] - started < 2.5, arrivals[0] - started
        assert 0 <= arrivals[0] - int(got.headers["webhook-timestamp"]) < 1.5
        Webhook(str(victim["secret"])).verify(got.body, got.headers)
        assert took < 4, took  # the batch waited one timeout per slow endpoint, not ten

        # A's deferred messages used no attempt: one logged timeout per endpoint, the rest wait.
        for endpoint in slow:
            log = _log(account, str(endpoint["id"]))
            assert [(e["status_code"], "timeout" in e["error"]) for e in log] == [(0, True)]
        with small_pool.db.read() as session:
            attempts = sorted(
                session.scalars(
                    select(WebhookMessage.attempts).where(WebhookMessage.account_id == account.id)
                )
            )
        assert attempts == [0] * 18 + [1] * 2

        # Later, with the receiver fixed, every one of them is delivered.
        tarpit.behaviour = lambda *_: Reply(status=204)
        clock_offset(dt.timedelta(hours=1, minutes=10))
        drain(small_pool)
        tarpit.wait_for(20 + 2, 30)
        with small_pool.db.read() as session:
            statuses = session.scalars(
                select(WebhookMessage.status).where(WebhookMessage.account_id == account.id)
            ).all()
        assert statuses == ["succeeded"] * 20
    finally:
        tarpit.stop()


@pytest.fixture
def shared_pool(runtime: Runtime) -> Iterator[Runtime]:
    """A pool of four connections, one per endpoint, two per account (with its subaccounts)."""
    settings = runtime.settings.model_copy(
        update={
            "webhook_concurrency": 4,
            "webhook_endpoint_concurrency": 1,
            "webhook_account_concurrency": 2,
            "webhook_timeout_seconds": 1.5,
            "webhook_retry_delays": "3600",
        }
    )
    shared = Runtime(settings=settings, db=runtime.db, keyring=runtime.keyring)
    try:
        yield shared
    finally:
        outbound.close_outbound_for(settings)


def test_many_endpoints_of_one_account_on_a_slow_host_leave_connections_to_others(
    shared_pool: Runtime,
    account: TestAccount,
    subaccount: TestAccount,
    other_account: TestAccount,
    receiver: Receiver,
) -> None:
    """The per-endpoint share alone let an account with as many endpoints as the pool has
    connections (here three of its own and one of its subaccount's, all on a receiver that never
    answers in time) take every connection: another account's webhook waited a whole timeout.
    An account and its subaccounts now share two; the other account's goes out at once."""
    tarpit = Receiver().start()
    tarpit.behaviour = lambda *_: Reply(status=204, delay=3)
    arrivals: list[float] = []
    receiver.behaviour = lambda *_: arrivals.append(time.time()) or Reply(status=204)
    try:
        for i in range(3):
            _endpoint(account, tarpit.url + f"/a{i}")
        _endpoint(subaccount, tarpit.url + "/sub")
        _endpoint(other_account, receiver.url + "/victim")
        emit(shared_pool, account.id)
        emit(shared_pool, subaccount.id)
        victim_event = emit(shared_pool, other_account.id)
        started = time.time()
        drain(shared_pool)
        got = receiver.wait_for(1, 30)[0]
        assert got.event_id == victim_event
        assert arrivals[0] - started < 1.0, arrivals[0] - started  # not after a 1.5 s timeout
        # The tenant's own requests all went out in turn (two at a time), each timing out.
        with shared_pool.db.read() as session:
            attempts = session.scalars(
                select(WebhookMessage.attempts).where(
                    WebhookMessage.account_id.in_([account.id, subaccount.id])
                )
            ).all()
        assert attempts == [1] * 4
    finally:
        tarpit.stop()


@pytest.fixture
def one_connection(runtime: Runtime) -> Iterator[Runtime]:
    settings = runtime.settings.model_copy(update={"webhook_concurrency": 1, "webhook_timeout_seconds": 5.0})
    narrow = Runtime(settings=settings, db=runtime.db, keyring=runtime.keyring)
    try:
        yield narrow
    finally:
        outbound.close_outbound_for(settings)


def test_a_webhook_is_timestamped_when_it_is_sent_not_when_its_batch_starts(
    one_connection: Runtime, account: TestAccount, receiver: Receiver
) -> None:
    """Five endpoints, one connection, a receiver taking 0.6 s: the last request leaves 2.4 s
    after the batch started. Its webhook-timestamp was the batch's start; now it is when it is
    sent (and still verifies)."""
    arrivals: dict[str, float] = {}

    def answer(path: str, _headers: dict[str, str], _body: str) -> Reply:
        arrivals[path] = time.time()
        return Reply(status=204, delay=0.6)

    receiver.behaviour = answer
    endpoints = [_endpoint(account, receiver.url + f"/e{i}") for i in range(5)]
    emit(one_connection, account.id)
    drain(one_connection)
    got = {r.path: r for r in receiver.wait_for(5)}
    assert max(arrivals.values()) - min(arrivals.values()) >= 2.2  # one at a time
    for i, endpoint in enumerate(endpoints):
        request = got[f"/e{i}"]
        assert 0 <= arrivals[f"/e{i}"] - int(request.headers["webhook-timestamp"]) < 1.2
        Webhook(str(endpoint["secret"])).verify(request.body, request.headers)


# ---- 3. a replay since a time runs in the background, chunk by chunk ------------------------------


def _timed_post(acc: TestAccount, path: str, body: dict[str, Any], out: list[float]) -> None:
    started = time.monotonic()
    resp = httpx2.post(str(acc.client.base_url) + path, json=body, headers=acc.headers, timeout=120)
    assert resp.status_code in (201, 202), resp.text
    out.append(time.monotonic() - started)


def test_a_replay_since_a_time_answers_at_once_and_holds_up_no_other_writer(
    runtime: Runtime, account: TestAccount, other_account: TestAccount, receiver: Receiver
) -> None:
    """5,000 old events. Before, the replay queued them all in its request's one transaction,
    several queries each (one of them reading every queued job): many seconds, with every other
    write of every account (SQLite) waiting for it. Now it answers at once and a background job
    queues them 500 per transaction; all are delivered, once each."""
    total = 5000
    endpoint = _endpoint(account, receiver.url + "/replayed")
    prefix = "".join(random.choices(string.ascii_lowercase, k=8))
    with runtime.db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO events (public_id, account_id, type, campaign, session, data, created_at) "
                "VALUES (:p, :a, 'coupon_opened', '', '', '{}', '2026-01-01 00:00:00')"
            ),
            [{"p": f"evt_{prefix}{i:012d}", "a": account.id} for i in range(total)],
        )
    replay_took: list[float] = []
    other_took: list[float] = []
    replaying = threading.Thread(
        target=_timed_post,
        args=(account, f"/v4/webhooks/{endpoint['id']}/replay", {"since": "2020-01-01"}, replay_took),
    )
    replaying.start()
    time.sleep(0.2)
    _timed_post(other_account, "/v4/webhooks", {"url": receiver.url + "/o", "events": ["*"]}, other_took)
    replaying.join(120)
    assert replay_took[0] < 2.0, replay_took
    assert other_took[0] < 2.0, other_took
    answer = account.client.post(
        f"/v4/webhooks/{endpoint['id']}/replay", json={"since": "2030-01-01"}, headers=account.headers
    ).json()
    assert answer == {"endpoint": endpoint["id"], "since": "2030-01-01 00:00:00", "queued": 0}

    draining = threading.Thread(target=drain, args=(runtime,))
    draining.start()
    while draining.is_alive() and len(other_took) < 6:
        _timed_post(other_account, "/v4/webhooks", {"url": receiver.url + "/o", "events": ["*"]}, other_took)
        time.sleep(0.3)
    draining.join(300)
    assert max(other_took) < 2.0, other_took  # at most one chunk's transaction to wait for
    got = [r.event_id for r in receiver.requests() if r.path == "/replayed"]
    assert len(got) == total
    assert {g.removeprefix("evt_")[:8] for g in got} == {prefix}
    assert len(set(got)) == total
