# ruff: noqa: F811  (the `receiver` fixture is imported, then requested by name)
"""Faults found in review of the webhook delivery, each with a real receiver on loopback and the
real database: one poisoned request no longer fails the batch, the account_field endpoint is made
once under concurrent fan-outs, waiting for the pool is not the receiver's time, an endpoint
disabled automatically tells its owner, a field endpoint disabled for its old URL starts afresh at
a new one, and a delivery job that gives up leaves its message failed, not pending."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from helpers import assert_ok
from opencoupon.models import Event, WebhookMessage
from opencoupon.runtime import Runtime
from opencoupon.webhooks import outbound
from webhooks_fixtures import Receiver, Reply, drain, emit, receiver  # noqa: F401

if TYPE_CHECKING:
    from conftest import TestAccount


def _endpoint(acc: TestAccount, url: str, events: list[str] | None = None) -> dict[str, Any]:
    resp = acc.client.post("/v4/webhooks", json={"url": url, "events": events or ["*"]}, headers=acc.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _log(acc: TestAccount, endpoint_id: str) -> list[dict[str, Any]]:
    resp = acc.client.get(f"/v4/webhooks/{endpoint_id}/deliveries", headers=acc.headers)
    assert resp.status_code == 200, resp.text
    return list(resp.json())


def _listed(acc: TestAccount) -> list[dict[str, Any]]:
    return list(acc.client.get("/v4/webhooks", headers=acc.headers).json())


def _message(runtime: Runtime, event_public_id: str) -> WebhookMessage:
    with runtime.db.read() as session:
        return session.execute(
            select(WebhookMessage)
            .join(Event, Event.id == WebhookMessage.event_id)
            .where(Event.public_id == event_public_id)
        ).scalar_one()


# ---- 1. one bad request fails on its own ---------------------------------------------------------


@pytest.mark.parametrize("poison", ["empty label", "long label", "NUL in the answer"])
def test_one_poisoned_request_does_not_fail_the_others_of_its_batch(
    runtime: Runtime,
    account: TestAccount,
    subaccount: TestAccount,
    other_account: TestAccount,
    receiver: Receiver,
    clock_offset: Callable[[dt.timedelta], None],
    poison: str,
) -> None:
    """Two accounts' deliveries in one batch, one of them poisoned: a field URL whose host the
    resolver cannot encode (UnicodeError), or a receiver answering a NUL byte (which PostgreSQL
    text cannot hold). The other is delivered once and logged; the poisoned one has its own
    logged attempt. Before, the batch failed as a whole: nothing logged, the job retried and sent
    to the other account's receiver again and again."""
    evil = Receiver().start()
    try:
        victim = _endpoint(other_account, receiver.url + "/victim")
        if poison == "NUL in the answer":
            evil.behaviour = lambda *_: Reply(status=200, body="ok\x00done")
            url = evil.url + "/evil"
        elif poison == "empty label":
            url = "http://a..b.example/x"
        else:
            url = "http://" + "a" * 64 + ".example.com/x"
        assert_ok(
            account.call("/v3/subaccount/update", subaccount=f"sub_{subaccount.id}", webhook_endpoint=url)
        )
        poisoned_event = emit(runtime, subaccount.id, "coupon_claimed")
        victim_event = emit(runtime, other_account.id, "coupon_claimed")
        drain(runtime)
        for hours in (1, 3, 6):  # any retry would be due by now
            clock_offset(dt.timedelta(hours=hours))
            drain(runtime)
        time.sleep(0.2)
        assert [r.event_id for r in receiver.requests()] == [victim_event]
        message = _message(runtime, victim_event)
        assert (message.status, message.attempts) == ("succeeded", 1)
        log = _log(other_account, str(victim["id"]))
        assert [(e["event"], e["success"], e["status_code"]) for e in log] == [(victim_event, True, 204)]

        field = next(e for e in _listed(subaccount) if e["source"] == "account_field")
        poisoned_log = _log(subaccount, str(field["id"]))
        assert poisoned_log
        assert poisoned_log[-1]["event"] == poisoned_event
        if poison == "NUL in the answer":
            assert len(evil.requests()) == 1
            assert (poisoned_log[-1]["status_code"], poisoned_log[-1]["success"]) == (200, True)
            assert poisoned_log[-1]["response"] == "okdone"  # NUL stripped, the rest kept
        else:
            assert all(e["status_code"] == 0 and not e["success"] and e["error"] for e in poisoned_log)
            assert _message(runtime, poisoned_event).attempts == len(poisoned_log)
    finally:
        evil.stop()


# ---- 4. waiting for a connection of the pool is not the receiver's time ---------------------------


@pytest.fixture
def one_connection(runtime: Runtime) -> Iterator[Runtime]:
    """The same database and keys, with a pool of one connection and a 1 s limit."""
    settings = runtime.settings.model_copy(update={"webhook_concurrency": 1, "webhook_timeout_seconds": 1.0})
    narrow = Runtime(settings=settings, db=runtime.db, keyring=runtime.keyring)
    try:
        yield narrow
    finally:
        with outbound._instances_lock:
            sender = outbound._instances.pop(id(settings), None)
        if sender is not None:
            sender.close()


def test_waiting_for_a_free_connection_is_no_timeout(
    one_connection: Runtime, account: TestAccount, receiver: Receiver
) -> None:
    """Five deliveries through one connection to a receiver taking 0.4 s each: 2 s in all, twice
    the limit, but each answer came within it. Before, the limit counted the wait for the pool and
    the later ones were logged as timeouts though never sent."""
    receiver.behaviour = lambda *_: Reply(status=204, delay=0.4)
    created = _endpoint(account, receiver.url + "/slowish")
    sent = [emit(one_connection, account.id, "coupon_claimed", n=i) for i in range(5)]
    started = time.monotonic()
    drain(one_connection)
    assert time.monotonic() - started >= 1.9  # one at a time
    log = _log(account, str(created["id"]))
    assert sorted(e["event"] for e in log) == sorted(sent)
    assert all(e["success"] and e["error"] == "" for e in log), log
    assert len(receiver.requests()) == 5
    # A receiver slower than the limit is still a timeout.
    receiver.behaviour = lambda *_: Reply(status=204, delay=1.5)
    emit(one_connection, account.id, "coupon_claimed")
    drain(one_connection)
    last = _log(account, str(created["id"]))[0]
    assert last["status_code"] == 0
    assert "timeout" in last["error"]
