"""Push faults found in review: a subscription whose key is not a P-256 point, non-ASCII messages,
fan-outs whose job dies, and unlimited anonymous subscriptions. Real app, database, runner and a
loopback push service stand-in that decrypts with the subscriber's key."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from helpers import assert_error, assert_ok
from opencoupon import models
from opencoupon.config import Settings
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, CouponSession, Job, PushFanout, PushSubscription
from opencoupon.push import router as push_router
from opencoupon.push import service as push_service
from opencoupon.push import targets, tasks
from opencoupon.push.vapid import b64url
from opencoupon.runtime import Runtime
from opencoupon.worker.queue import encode
from test_foundation_cli import _run
from test_push import Browser, _campaign, _subscribe
from test_push_loyalty import _card_with_holder
from webhooks_fixtures import Receiver, drain

if TYPE_CHECKING:
    from conftest import TestAccount

# 65 bytes starting with 0x04, as a P-256 point is, but not on the curve.
NOT_A_POINT = b64url(b"\x04" + b"\x01" * 64)
AUTH = b64url(b"0123456789abcdef")


def _progress(acc: TestAccount, runtime: Runtime, fanout: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        drain(runtime)
        body = dict(acc.client.get(f"/v4/push/fanouts/{fanout}", headers=acc.headers).json())
        if body["status"] == "done" or time.monotonic() > deadline:
            return body


def _count(runtime: Runtime, key: str) -> int:
    with runtime.db.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(PushSubscription).where(PushSubscription.target_key == key)
            )
            or 0
        )


def test_subscribe_refuses_a_key_that_is_not_a_p256_point(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    _, (code,) = _campaign(runtime, account.id)
    bad = {"endpoint": "https://push.example/1", "keys": {"p256dh": NOT_A_POINT, "auth": AUTH}}
    assert_error(_subscribe(http, code, bad), 422, 300)
    _, _, token = _card_with_holder(runtime, account.id)
    loyalty = http.post(
        "/push/subscriptions",
        json={"target": {"kind": "loyalty_holder", "code": token}, "subscription": bad},
    )
    assert_error(loyalty, 422, 300)
    assert _count(runtime, code) == 0


def test_a_subscription_that_cannot_be_encrypted_fails_alone_and_is_removed(
    account: TestAccount, runtime: Runtime
) -> None:
    """A bad key stored before the route checked keys: the others of the campaign (and of a loyalty
    card) get the push, the fan-out ends with it counted as failed, and the row is gone."""
    standin = Receiver().start()
    try:
        campaign, codes = _campaign(runtime, account.id, sessions=3)
        card_id, _, token = _card_with_holder(runtime, account.id)
        good, other = Browser(), Browser()
        with runtime.db.transaction() as session:
            subs = [targets.coupon_subscriber(session, code) for code in codes]
            holder = targets.loyalty_subscriber(session, token)
            assert holder is not None
            assert all(s is not None for s in subs)
            items: list[tuple[targets.Subscriber, str, str, str]] = [
                (subs[0], standin.url + "/push/1", good.p256dh, good.auth),  # type: ignore[list-item]
                (subs[1], standin.url + "/push/2", NOT_A_POINT, AUTH),  # type: ignore[list-item]
                (subs[2], standin.url + "/push/3", other.p256dh, other.auth),  # type: ignore[list-item]
                (holder, standin.url + "/push/4", NOT_A_POINT, AUTH),
                (holder, standin.url + "/push/5", good.p256dh, good.auth),
            ]
            push_service.subscribe_many(session, items, utcnow())
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        progress = _progress(account, runtime, answer["notification"])
        assert progress["status"] == "done", progress
        assert (progress["sent"], progress["failed"], progress["removed"]) == (2, 1, 0)
        loyal = assert_ok(
            account.call("/v3/loyalty/pushnotification/all", loyaltycard=str(card_id), message="Stamp")
        )
        progress = _progress(account, runtime, loyal["notification"])
        assert (progress["status"], progress["sent"], progress["failed"]) == ("done", 1, 1), progress
        got = standin.wait_for(3)
        assert sorted(r.path for r in got) == ["/push/1", "/push/3", "/push/5"]
        assert good.decrypt(next(r for r in got if r.path == "/push/1").raw)["body"] == "Sale"
        assert _count(runtime, codes[1]) == 0  # unusable key: removed
        assert _count(runtime, codes[0]) == 1
        # A later push does not meet it again.
        again = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="2"))
        assert again["queued"] == "2"
    finally:
        standin.stop()


class _Broken:
    def send_all(self, requests: Any) -> Any:
        raise RuntimeError("push sender broken")


def test_a_fanout_ends_when_its_job_fails_for_good(
    account: TestAccount, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign, codes = _campaign(runtime, account.id, sessions=2)
    browser = Browser()
    with runtime.db.transaction() as session:
        items = []
        for n, code in enumerate(codes):
            target = targets.coupon_subscriber(session, code)
            assert target is not None
            items.append((target, f"https://push.example/{n}", browser.p256dh, browser.auth))
        push_service.subscribe_many(session, items, utcnow())
    monkeypatch.setattr(tasks, "push_outbound_for", lambda _settings: _Broken())
    answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
    fanout_id = int(answer["notification"].removeprefix(push_service.PREFIX))
    this_job = (Job.kind == push_service.FANOUT) & (Job.payload == encode({"fanout_id": fanout_id}))
    with runtime.db.transaction() as session:
        session.execute(update(Job).where(this_job).values(max_attempts=2))
    for _ in range(3):
        with runtime.db.transaction() as session:
            session.execute(update(Job).where(this_job, Job.status == "queued").values(run_at=utcnow()))
        drain(runtime)
    with runtime.db.read() as session:
        job = session.scalars(select(Job).where(this_job)).one()
        assert (job.status, job.attempts) == ("dead", 2)
    progress = account.client.get(
        f"/v4/push/fanouts/{answer['notification']}", headers=account.headers
    ).json()
    assert progress["status"] == "done", progress
    assert (progress["sent"], progress["failed"]) == (0, 2)
    assert progress["finished_at"]


def test_non_ascii_messages_are_delivered_and_what_cannot_fit_is_refused(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    standin = Receiver().start()
    try:
        campaign, (code,) = _campaign(runtime, account.id)
        browser = Browser()
        assert _subscribe(http, code, browser.subscription(standin.url + "/push/1")).status_code == 201
        text = "é" * 700 + " Grüße 🎉"
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message=text))
        progress = _progress(account, runtime, answer["notification"])
        assert (progress["status"], progress["sent"], progress["failed"]) == ("done", 1, 0), progress
        (got,) = standin.wait_for(1)
        assert browser.decrypt(got.raw)["body"] == text
        # 1,000 characters, but 4,000 bytes: refused at the API with the reason, nothing queued.
        for path, extra in (
            ("/v3/coupon/pushnotification/all", {}),
            ("/v3/coupon/pushnotification/single", {"couponsession": code}),
        ):
            refused = assert_error(
                account.call(path, campaign=campaign, message="🎉" * 1000, **extra), 422, 300
            )
            description = refused["status"]["errors"]["error_message_description"][0]
            assert "bytes" in description
            assert "message" in description
        with runtime.db.read() as session:
            count = select(func.count()).select_from(PushFanout).where(PushFanout.account_id == account.id)
            assert session.scalar(count) == 1
    finally:
        standin.stop()


def test_subscriptions_per_target_are_capped_and_per_address_limited(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    _, (code,) = _campaign(runtime, account.id)
    browser = Browser()
    cap = push_service.MAX_PER_TARGET
    for n in range(cap + 2):
        r = _subscribe(http, code, browser.subscription(f"https://push.example/{n}"))
        assert r.status_code == 201, r.text
    with runtime.db.read() as session:
        kept = set(
            session.scalars(select(PushSubscription.endpoint).where(PushSubscription.target_key == code))
        )
    # The newest ones; the two subscribed first were replaced.
    assert kept == {f"https://push.example/{n}" for n in range(2, cap + 2)}
    # Subscribing again makes a subscription the most recent: it outlives newer ones.
    assert _subscribe(http, code, browser.subscription("https://push.example/2")).status_code == 201
    assert _subscribe(http, code, browser.subscription("https://push.example/new")).status_code == 201
    with runtime.db.read() as session:
        kept = set(
            session.scalars(select(PushSubscription.endpoint).where(PushSubscription.target_key == code))
        )
    assert "https://push.example/2" in kept
    assert "https://push.example/3" not in kept
    assert len(kept) == cap

    used = cap + 4
    limit = push_router.subscribe_limit.limit
    statuses = [
        _subscribe(http, code, browser.subscription(f"https://push.example/x{n}")).status_code
        for n in range(limit - used + 3)
    ]
    assert statuses[: limit - used] == [201] * (limit - used)
    refused = _subscribe(http, code, browser.subscription("https://push.example/late"))
    assert_error(refused, 429, 429)
    assert int(refused.headers["retry-after"]) > 0
    assert _count(runtime, code) == cap


def test_no_subscriptions_for_removed_sessions_deleted_campaigns_or_cards(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    _, (removed, kept) = _campaign(runtime, account.id, sessions=2)
    other, (deleted_code,) = _campaign(runtime, account.id)
    card_id, _, token = _card_with_holder(runtime, account.id)
    browser = Browser()
    sub = browser.subscription("https://push.example/1")
    assert _subscribe(http, kept, sub).status_code == 201
    assert _subscribe(http, removed, sub).status_code == 201
    with runtime.db.transaction() as session:
        session.execute(
            update(CouponSession).where(CouponSession.code == removed).values(removed_at=utcnow())
        )
        session.execute(
            update(Campaign).where(Campaign.id == int(other.removeprefix("cam_"))).values(deleted_at=utcnow())
        )
        card_model: Any = models.LoyaltyCard  # type: ignore[attr-defined]
        session.execute(update(card_model).where(card_model.id == card_id).values(deleted_at=utcnow()))
    assert_error(_subscribe(http, removed, sub), 404, 404)
    assert_error(_subscribe(http, deleted_code, sub), 404, 404)
    loyalty = http.post(
        "/push/subscriptions", json={"target": {"kind": "loyalty_holder", "code": token}, "subscription": sub}
    )
    assert_error(loyalty, 404, 404)
    assert _subscribe(http, kept, sub).status_code == 201
    # Unsubscribing still works for a removed session.
    gone = http.request(
        "DELETE",
        "/push/subscriptions",
        json={"target": {"kind": "coupon_session", "code": removed}, "subscription": sub},
    )
    assert gone.json()["removed"] == 1


def test_a_large_subscription_body_is_refused_before_it_is_read(
    http: httpx2.Client, live_server: Any
) -> None:
    # A declared size over the limit is answered at once, without waiting for (or reading) the body.
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /push/subscriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n{"
        )
        assert conn.recv(64).startswith(b"HTTP/1.1 413")
    big = b"{" + b" " * (push_router.MAX_SUBSCRIPTION_BYTES + 10) + b"}"
    assert_error(http.post("/push/subscriptions", content=big), 413, 413)

    def stream() -> Any:
        for _ in range(64):
            yield b" " * 1024

    # Without a Content-Length (chunked): refused while it streams in.
    assert_error(http.post("/push/subscriptions", content=stream()), 413, 413)


def test_a_vapid_subject_push_services_would_refuse_stops_the_server_at_start(tmp_path: Path) -> None:
    """A subject without mailto: (an operator writing just the address) cannot sign any token, so
    every push would fail: the server, the worker and `vapid show` refuse it in one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCOUPON_")}
    env["OPENCOUPON_DATABASE_URL"] = f"sqlite:///{tmp_path / 'opencoupon.db'}"
    env["OPENCOUPON_VAR_DIR"] = str(tmp_path)
    env["OPENCOUPON_VAPID_SUBJECT"] = "admin@shop.example.com"
    for args in (("serve", "--no-migrate"), ("worker", "--once"), ("vapid", "show")):
        result = _run(env, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr[-600:])
        assert result.stderr.startswith("error: OPENCOUPON_VAPID_SUBJECT: "), result.stderr[-600:]
        assert "mailto:" in result.stderr
        assert "Traceback" not in result.stderr
    for good in ("mailto:admin@shop.example.com", "https://shop.example.com"):
        assert Settings(vapid_subject=good).vapid_subject == good
    for bad in ("admin@shop.example.com", "http://shop.example.com", "mailto:admin", ""):
        with pytest.raises(ValueError, match="mailto:"):
            Settings(vapid_subject=bad)


def _subscriber(session: Session, code: str) -> targets.Subscriber:
    found = targets.coupon_subscriber(session, code)
    assert found is not None
    return found
