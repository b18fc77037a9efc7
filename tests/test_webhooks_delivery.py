# ruff: noqa: F811  (the `receiver` fixture is imported, then requested by name)
"""Deliveries to a real receiver on loopback: Standard Webhooks signatures, rotation, the retry
schedule (moving the service clock), redirects, 410, 429, timeouts, auto-disable, replay, and the
subaccount `webhook_endpoint` field."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from standardwebhooks import Webhook

from helpers import assert_ok
from opencoupon.kit.clock import utcnow
from opencoupon.models import Event, Job, WebhookMessage
from opencoupon.runtime import Runtime
from opencoupon.worker.queue import encode
from webhooks_fixtures import Receiver, Reply, drain, emit, receiver  # noqa: F401

if TYPE_CHECKING:
    from conftest import TestAccount

SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000]


def _endpoint(acc: TestAccount, url: str, events: list[str] | None = None) -> dict[str, Any]:
    resp = acc.client.post("/v4/webhooks", json={"url": url, "events": events or ["*"]}, headers=acc.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _message(runtime: Runtime, event_public_id: str) -> tuple[WebhookMessage, Job | None]:
    with runtime.db.read() as session:
        message = session.execute(
            select(WebhookMessage)
            .join(Event, Event.id == WebhookMessage.event_id)
            .where(Event.public_id == event_public_id)
        ).scalar_one()
        job = session.scalars(
            select(Job).where(
                Job.kind == "webhook.deliver", Job.payload == json.dumps({"message_id": message.id})
            )
        ).first()
        return message, job


def _verify(secret: str, got: Any) -> dict[str, Any]:
    return dict(Webhook(secret).verify(got.body, got.headers))


def test_every_delivery_verifies_with_standardwebhooks(
    account: TestAccount, receiver: Receiver, runtime: Runtime
) -> None:
    created = _endpoint(account, receiver.url + "/in", ["coupon_validated", "coupon_claimed"])
    sent = [emit(runtime, account.id, "coupon_validated", amount=i) for i in range(10)]
    sent += [emit(runtime, account.id, "coupon_claimed", n=i) for i in range(5)]
    emit(runtime, account.id, "coupon_opened")  # not subscribed
    drain(runtime)
    got = receiver.wait_for(15)
    assert sorted(r.event_id for r in got) == sorted(sent)
    for request in got:
        payload = _verify(str(created["secret"]), request)
        assert request.headers["webhook-id"] == payload["id"]
        assert set(payload) == {"id", "type", "date", "campaign", "session", "data"}
        assert payload["campaign"] == "cam_1"
        assert payload["session"] == "abcdefghijklmnopqrstu"
        assert request.headers["content-type"] == "application/json"
    log = account.client.get(f"/v4/webhooks/{created['id']}/deliveries", headers=account.headers).json()
    assert len(log) == 15
    assert all(entry["success"] and entry["status_code"] == 204 for entry in log)
    assert {entry["event"] for entry in log} == set(sent)
    # The verification call confirms every delivered event.
    for event_id in sent[:3]:
        assert assert_ok(account.call("/v3/webhook/verification", webhook=event_id))["result"] == "valid"


def test_rotation_signs_with_old_and_new_secret_during_grace(
    account: TestAccount, receiver: Receiver, runtime: Runtime, clock_offset: Callable[[dt.timedelta], None]
) -> None:
    created = _endpoint(account, receiver.url)
    old = str(created["secret"])
    rotated = account.client.post(
        f"/v4/webhooks/{created['id']}/rotate", json={"grace_hours": 24}, headers=account.headers
    )
    assert rotated.status_code == 200, rotated.text
    new = str(rotated.json()["secret"])
    assert new != old
    assert rotated.json()["previous_secret_expires_at"]
    emit(runtime, account.id)
    drain(runtime)
    during = receiver.wait_for(1)[0]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    _verify(old, during)
    _verify(new, during)

    clock_offset(dt.timedelta(hours=25))
    emit(runtime, account.id)
    drain(runtime)
    after = receiver.wait_for(2)[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    # The moved service clock is outside the receiver's ±5 min window, so compare signatures.
    stamp = dt.datetime.fromtimestamp(int(after.headers["webhook-timestamp"]), tz=dt.UTC)
    expected = Webhook(new).sign(after.headers["webhook-id"], stamp, after.body)
    assert after.headers["webhook-signature"] == expected
    assert Webhook(old).sign(after.headers["webhook-id"], stamp, after.body) != expected


def test_retry_schedule_follows_the_policy(
    account: TestAccount, receiver: Receiver, runtime: Runtime, clock_offset: Callable[[dt.timedelta], None]
) -> None:
    receiver.behaviour = lambda *_: Reply(status=500, body="boom")
    _endpoint(account, receiver.url)
    event_id = emit(runtime, account.id)
    drain(runtime)
    receiver.wait_for(1)
    offset = dt.timedelta(0)
    for number, delay in enumerate(SCHEDULE, start=1):
        message, job = _message(runtime, event_id)
        assert message.attempts == number
        assert message.status == "pending"
        assert job is not None
        assert job.status == "queued"
        waited = (job.run_at - utcnow()).total_seconds()
        assert 0.85 * delay <= waited <= 1.1 * delay, (number, delay, waited)
        # Not before its time...
        offset += dt.timedelta(seconds=waited * 0.5)
        clock_offset(offset)
        drain(runtime)
        assert len(receiver.requests()) == number
        # ...and at its time.
        offset += dt.timedelta(seconds=waited * 0.5 + 1)
        clock_offset(offset)
        drain(runtime)
        receiver.wait_for(number + 1)
    message, job = _message(runtime, event_id)
    assert message.attempts == 8
    assert message.status == "failed"
    assert message.last_status_code == 500
    assert job is not None
    assert job.status == "done"
    clock_offset(offset + dt.timedelta(days=2))
    drain(runtime)
    assert len(receiver.requests()) == 8
    assert {r.headers["webhook-id"] for r in receiver.requests()} == {event_id}


def test_redirects_are_failures_and_never_followed(
    account: TestAccount, runtime: Runtime, receiver: Receiver
) -> None:
    target = Receiver().start()
    try:
        receiver.behaviour = lambda *_: Reply(status=302, headers={"Location": target.url + "/internal"})
        created = _endpoint(account, receiver.url)
        event_id = emit(runtime, account.id)
        drain(runtime)
        receiver.wait_for(1)
        message, job = _message(runtime, event_id)
        assert message.status == "pending"
        assert message.last_status_code == 302
        assert "redirect" in message.last_error
        assert job is not None
        assert job.status == "queued"
        log = account.client.get(f"/v4/webhooks/{created['id']}/deliveries", headers=account.headers).json()
        assert log[0]["status_code"] == 302
        assert log[0]["success"] is False
        assert target.requests() == []
    finally:
        target.stop()


def test_410_disables_the_endpoint(
    account: TestAccount, runtime: Runtime, receiver: Receiver, clock_offset: Callable[[dt.timedelta], None]
) -> None:
    receiver.behaviour = lambda *_: Reply(status=410)
    created = _endpoint(account, receiver.url)
    first = emit(runtime, account.id)
    drain(runtime)
    receiver.wait_for(1)
    message, _ = _message(runtime, first)
    assert message.status == "failed"
    info = account.client.get(f"/v4/webhooks/{created['id']}", headers=account.headers).json()
    assert info["enabled"] is False
    assert "410" in info["disabled_reason"]
    emit(runtime, account.id)
    clock_offset(dt.timedelta(hours=1))
    drain(runtime)
    assert len(receiver.requests()) == 1


def test_429_honours_retry_after(account: TestAccount, runtime: Runtime, receiver: Receiver) -> None:
    receiver.behaviour = lambda *_: Reply(status=429, headers={"Retry-After": "120"})
    _endpoint(account, receiver.url)
    event_id = emit(runtime, account.id)
    drain(runtime)
    receiver.wait_for(1)
    message, job = _message(runtime, event_id)
    assert message.status == "pending"
    assert message.last_status_code == 429
    assert job is not None
    waited = (job.run_at - utcnow()).total_seconds()
    assert 115 <= waited <= 121, waited


def test_a_retry_after_that_is_no_number_is_ignored(
    account: TestAccount, runtime: Runtime, receiver: Receiver
) -> None:
    """ "²" passes str.isdigit but is no number: the 429 counts as a failure on the schedule."""
    receiver.behaviour = lambda *_: Reply(status=429, headers={"Retry-After": "²"})
    _endpoint(account, receiver.url)
    event_id = emit(runtime, account.id)
    drain(runtime)
    receiver.wait_for(1)
    message, job = _message(runtime, event_id)
    assert (message.status, message.last_status_code, message.attempts) == ("pending", 429, 1)
    assert job is not None


def test_timeout_counts_as_failure_and_the_log_keeps_a_truncated_response(
    account: TestAccount, runtime: Runtime, receiver: Receiver
) -> None:
    created = _endpoint(account, receiver.url)
    receiver.behaviour = lambda *_: Reply(status=500, body="x" * 10_000)
    emit(runtime, account.id)
    drain(runtime)
    receiver.wait_for(1)
    previous = runtime.settings.webhook_timeout_seconds
    runtime.settings.webhook_timeout_seconds = 0.3
    try:
        receiver.behaviour = lambda *_: Reply(status=204, delay=1.5)
        emit(runtime, account.id)
        drain(runtime)
    finally:
        runtime.settings.webhook_timeout_seconds = previous
    log = account.client.get(f"/v4/webhooks/{created['id']}/deliveries", headers=account.headers).json()
    assert log[0]["status_code"] == 0
    assert "timeout" in log[0]["error"]
    assert log[0]["duration_ms"] >= 250
    assert log[1]["status_code"] == 500
    assert 0 < len(log[1]["response"]) <= 2048


def test_endpoint_failing_for_five_days_is_disabled_and_says_so(
    account: TestAccount, runtime: Runtime, receiver: Receiver, clock_offset: Callable[[dt.timedelta], None]
) -> None:
    receiver.behaviour = lambda *_: Reply(status=503)
    created = _endpoint(account, receiver.url)
    path = f"/v4/webhooks/{created['id']}"
    emit(runtime, account.id)
    drain(runtime)
    assert account.client.get(path, headers=account.headers).json()["failing_since"]
    clock_offset(dt.timedelta(days=3))
    emit(runtime, account.id)
    drain(runtime)
    assert account.client.get(path, headers=account.headers).json()["enabled"] is True
    clock_offset(dt.timedelta(days=5, minutes=1))
    emit(runtime, account.id)
    drain(runtime)
    info = account.client.get(path, headers=account.headers).json()
    assert info["enabled"] is False
    assert "5 days" in info["disabled_reason"]
    assert info["disabled_at"]
    # Enabling again clears the failure clock.
    again = account.client.patch(path, json={"enabled": True}, headers=account.headers).json()
    assert again["enabled"] is True
    assert again["failing_since"] == ""
    assert again["disabled_reason"] == ""


def test_success_resets_the_failure_clock(
    account: TestAccount, runtime: Runtime, receiver: Receiver, clock_offset: Callable[[dt.timedelta], None]
) -> None:
    receiver.behaviour = lambda *_: Reply(status=500)
    created = _endpoint(account, receiver.url)
    path = f"/v4/webhooks/{created['id']}"
    emit(runtime, account.id)
    drain(runtime)
    receiver.behaviour = lambda *_: Reply(status=200)
    clock_offset(dt.timedelta(days=4))
    drain(runtime)
    info = account.client.get(path, headers=account.headers).json()
    assert info["failing_since"] == ""
    assert info["last_success_at"]


def test_replay_one_event_and_everything_since(
    account: TestAccount, runtime: Runtime, receiver: Receiver
) -> None:
    created = _endpoint(account, receiver.url)
    path = f"/v4/webhooks/{created['id']}/replay"
    start = utcnow() - dt.timedelta(seconds=1)
    ids = [emit(runtime, account.id, n=i) for i in range(3)]
    drain(runtime)
    first_round = receiver.wait_for(3)
    one = account.client.post(path, json={"event": ids[1]}, headers=account.headers)
    assert one.status_code == 202
    assert one.json()["queued"] == 1
    drain(runtime)
    again = receiver.wait_for(4)[3]
    original = next(r for r in first_round if r.event_id == ids[1])
    assert again.headers["webhook-id"] == ids[1]
    assert again.body == original.body
    _verify(str(created["secret"]), again)
    since = account.client.post(
        path, json={"since": start.strftime("%Y-%m-%d %H:%M:%S")}, headers=account.headers
    )
    assert since.status_code == 202
    assert since.json()["queued"] == 3
    drain(runtime)
    got = receiver.wait_for(7)
    assert sorted(r.event_id for r in got[4:]) == sorted(ids)
    assert all(r.headers["webhook-id"] == r.event_id for r in got)
    bad = account.client.post(path, json={"since": "yesterday"}, headers=account.headers)
    assert bad.status_code == 422
    assert bad.json()["status"]["errors"]["error_code"] == [303]


def test_subaccount_webhook_endpoint_field_receives_its_events(
    account: TestAccount, subaccount: TestAccount, runtime: Runtime, receiver: Receiver
) -> None:
    updated = account.call(
        "/v3/subaccount/update", subaccount=f"sub_{subaccount.id}", webhook_endpoint=receiver.url + "/field"
    )
    assert_ok(updated)
    event_id = emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    got = receiver.wait_for(1)[0]
    assert got.path == "/field"
    assert got.event_id == event_id
    listed = subaccount.client.get("/v4/webhooks", headers=subaccount.headers).json()
    field = next(e for e in listed if e["source"] == "account_field")
    assert field["url"] == receiver.url + "/field"
    # Its secret is obtained by rotating (grace 0: only the new one signs from now on).
    secret = subaccount.client.post(
        f"/v4/webhooks/{field['id']}/rotate", json={"grace_hours": 0}, headers=subaccount.headers
    ).json()["secret"]
    emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    _verify(secret, receiver.wait_for(2)[1])
    # The master's own endpoints do not receive the subaccount's events.
    assert all(r.path == "/field" for r in receiver.requests())


def test_recover_events_from_before_the_endpoint_existed(
    account: TestAccount, runtime: Runtime, receiver: Receiver
) -> None:
    start = utcnow() - dt.timedelta(seconds=1)
    earlier = emit(runtime, account.id, n=1)
    drain(runtime)
    created = _endpoint(account, receiver.url)
    resp = account.client.post(
        f"/v4/webhooks/{created['id']}/replay",
        json={"since": start.strftime("%Y-%m-%d %H:%M:%S")},
        headers=account.headers,
    )
    assert resp.json()["queued"] == 1
    drain(runtime)
    got = receiver.wait_for(1)[0]
    assert got.event_id == earlier
    _verify(str(created["secret"]), got)


def test_events_before_any_endpoint_are_kept_and_can_be_replayed_to_a_new_one(
    account: TestAccount, runtime: Runtime, receiver: Receiver
) -> None:
    """An account with no webhook target stores its events without queuing deliveries (nothing
    to send them to); an endpoint created later receives them by a replay since a time."""
    start = utcnow() - dt.timedelta(seconds=1)
    early = [emit(runtime, account.id, n=i) for i in range(2)]
    with runtime.db.read() as session:
        stored = session.scalars(select(Event.id).where(Event.public_id.in_(early))).all()
        payloads = session.scalars(select(Job.payload).where(Job.kind == "event.dispatch")).all()
    assert len(stored) == 2
    assert not {json.dumps({"event_id": pk}) for pk in stored} & set(payloads)
    created = _endpoint(account, receiver.url)
    later = emit(runtime, account.id, n=2)
    drain(runtime)
    assert [r.event_id for r in receiver.wait_for(1)] == [later]  # only what came after it
    replay = account.client.post(
        f"/v4/webhooks/{created['id']}/replay",
        json={"since": start.strftime("%Y-%m-%d %H:%M:%S")},
        headers=account.headers,
    )
    assert replay.status_code == 202
    drain(runtime)
    got = receiver.wait_for(4)
    assert sorted(r.event_id for r in got[1:]) == sorted([*early, later])


def test_a_message_whose_delivery_job_died_can_be_replayed(
    account: TestAccount, runtime: Runtime, receiver: Receiver
) -> None:
    """A message left pending by a delivery job that ran out of attempts (say, a worker killed
    during each one) is not stuck: a replay queues it again. A message that still has its job is
    not queued twice."""
    created = _endpoint(account, receiver.url)
    path = f"/v4/webhooks/{created['id']}/replay"
    event_id = emit(runtime, account.id, n=1)
    drain(runtime)
    receiver.wait_for(1)
    mine = (
        select(WebhookMessage)
        .join(Event, Event.id == WebhookMessage.event_id)
        .where(Event.public_id == event_id)
    )
    with runtime.db.transaction() as session:
        message = session.scalars(mine).one()
        message.status = "pending"  # as the dead job left it
        its_jobs = select(Job).where(
            Job.kind == "webhook.deliver", Job.payload == encode({"message_id": message.id})
        )
        for job in session.scalars(its_jobs):
            job.status = "dead"
    replayed = account.client.post(path, json={"event": event_id}, headers=account.headers)
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["queued"] == 1
    # Its new job is pending now: asking again queues nothing more.
    again = account.client.post(path, json={"event": event_id}, headers=account.headers)
    assert again.json()["queued"] == 0
    drain(runtime)
    assert [r.event_id for r in receiver.wait_for(2)] == [event_id, event_id]
    with runtime.db.read() as session:
        assert session.scalars(mine).one().status == "succeeded"
