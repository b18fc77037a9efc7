"""Push delivery faults found in review: removed single-use links still pushed to, push service
hosts not resolved at subscribe time, busy push services (429, 5xx) losing the message, fan-out
counts that did not add up to `queued`, push endpoints that never answer holding up webhooks and
the other subscribers. Real app, database, runner and a loopback push service stand-in that
decrypts with the subscriber's key."""

from __future__ import annotations

import datetime as dt
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from sqlalchemy import select, update

from helpers import assert_error, assert_ok
from opencoupon.config import Settings
from opencoupon.kit.clock import utcnow
from opencoupon.models import CouponSession, PushSubscription
from opencoupon.push import service as push_service
from opencoupon.push import targets, tasks
from opencoupon.runtime import Runtime
from opencoupon.webhooks import ssrf
from test_push import Browser, _campaign, _subscribe
from test_push_review import _progress, _subscriber
from webhooks_fixtures import Receiver, Reply, drain, emit

if TYPE_CHECKING:
    from conftest import TestAccount


@contextmanager
def _runner_with(settings: Settings, **changes: Any) -> Iterator[Runtime]:
    """A runtime on the suite's database with these settings changed, to run the jobs with."""
    runtime = Runtime.from_settings(settings.model_copy(update=changes))
    try:
        yield runtime
    finally:
        runtime.db.dispose()


def _fanout(acc: TestAccount, notification: str) -> dict[str, Any]:
    answer = acc.client.get(f"/v4/push/fanouts/{notification}", headers=acc.headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _until_done(acc: TestAccount, runner: Runtime, notification: str, timeout: float = 30) -> dict[str, Any]:
    """Run the jobs (again as their retries come due) until the fan-out is done."""
    deadline = time.monotonic() + timeout
    while True:
        drain(runner)
        progress = _fanout(acc, notification)
        if progress["status"] == "done" or time.monotonic() > deadline:
            return progress
        time.sleep(0.1)


def _add_up(progress: dict[str, Any]) -> None:
    assert progress["status"] == "done", progress
    assert progress["sent"] + progress["failed"] + progress["removed"] == progress["queued"], progress


def _endpoints(runtime: Runtime) -> set[str]:
    with runtime.db.read() as session:
        return set(session.scalars(select(PushSubscription.endpoint)))


# ---- removed single-use links -----------------------------------------------------------------------


def test_a_removed_single_use_link_gets_no_push(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    standin = Receiver().start()
    standin.behaviour = lambda _p, _h, _b: Reply(status=201)
    try:
        made = account.client.post("/v4/campaigns", json={"name": "Links"}, headers=account.headers)
        assert made.status_code == 201, made.text
        campaign = made.json()["id"]
        codes = [
            assert_ok(account.call("/v3/singleuse/create", campaign=campaign, email=f"p{n}@example.com"))[
                "single_use_code"
            ]
            for n in range(2)
        ]
        browser = Browser()
        for code in codes:
            subscribed = _subscribe(http, code, browser.subscription(f"{standin.url}/push/{code}"))
            assert subscribed.status_code == 201, subscribed.text
        assert_ok(account.call("/v3/singleuse/remove", single_use_code=codes[1]))

        # Like subscribing (404), pushing to the removed link is refused: session not found.
        single = account.call(
            "/v3/coupon/pushnotification/single", campaign=campaign, couponsession=codes[1], message="Yours"
        )
        assert_error(single, 404, 505)
        # Push to all: only the live link is queued and sent to.
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        assert answer["queued"] == "1"
        progress = _progress(account, runtime, answer["notification"])
        assert (progress["status"], progress["sent"], progress["failed"]) == ("done", 1, 0), progress
        assert [r.path for r in standin.requests()] == [f"/push/{codes[0]}"]
    finally:
        standin.stop()


# ---- push service hosts under the webhook SSRF rules --------------------------------------------------


@contextmanager
def _public_only(runtime: Runtime, names: dict[str, list[str]]) -> Iterator[None]:
    """Private targets refused (the suite allows them) and these simulated DNS answers; any other
    name does not resolve."""

    def lookup(host: str, _port: int) -> list[str]:
        if host not in names:
            raise OSError(f"{host}: name does not resolve")
        return names[host]

    ssrf.set_lookup(lookup)
    runtime.settings.allow_private_webhooks = False
    try:
        yield
    finally:
        runtime.settings.allow_private_webhooks = True
        ssrf.set_lookup(None)


def test_subscribe_refuses_push_service_hosts_that_resolve_to_private_addresses_or_not_at_all(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    _, (code,) = _campaign(runtime, account.id)
    browser = Browser()
    names = {"push.internal.example": ["127.0.0.1"], "push.mixed.example": ["93.184.216.34", "10.1.2.3"]}
    urls = {
        "https://push.internal.example/x",
        "https://push.mixed.example/x",
        "https://push.nowhere.example/x",
    }
    with _public_only(runtime, names):
        for url in sorted(urls):
            # The webhook registration refuses each of them: so does the subscribe route.
            hook = account.client.post(
                "/v4/webhooks", json={"url": url, "events": ["coupon_opened"]}, headers=account.headers
            )
            assert hook.status_code == 422, hook.text
            assert_error(_subscribe(http, code, browser.subscription(url)), 422, 300)
    assert not _endpoints(runtime) & urls


def test_a_subscription_the_ssrf_guard_refuses_at_delivery_is_deleted_as_gone(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    """Stored before subscribing resolved hosts (or the host's DNS changed since): each delivery
    is refused; the subscription is removed as a 404/410 one is, not counted failed for ever."""
    campaign, (code,) = _campaign(runtime, account.id)
    browser = Browser()
    url = "https://push.rebound.example/x"
    with runtime.db.transaction() as session:
        target = targets.coupon_subscriber(session, code)
        assert target is not None
        push_service.subscribe_many(session, [(target, url, browser.p256dh, browser.auth)], utcnow())
    with _public_only(runtime, {"push.rebound.example": ["127.0.0.1"]}):
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="m"))
        assert answer["queued"] == "1"
        progress = _progress(account, runtime, answer["notification"])
        assert (progress["status"], progress["sent"], progress["failed"], progress["removed"]) == (
            "done",
            0,
            0,
            1,
        ), progress
        assert url not in _endpoints(runtime)
        again = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="m"))
        assert again["queued"] == "0"


# ---- busy push services: tried again -----------------------------------------------------------------


def test_a_busy_push_service_gets_the_message_again(
    account: TestAccount, runtime: Runtime, settings: Settings, http: httpx2.Client
) -> None:
    """RFC 8030: 429 (with Retry-After) and 5xx are temporary. The fan-out keeps those
    subscriptions, tries them again (Retry-After honoured) and ends when they are delivered."""
    standin = Receiver().start()
    seen: dict[str, list[float]] = {}
    lock = threading.Lock()

    def busy_once(path: str, _h: Any, _b: Any) -> Reply:
        with lock:
            seen.setdefault(path, []).append(time.monotonic())
            if len(seen[path]) > 1:
                return Reply(status=201)
        if path.endswith("/a"):
            return Reply(status=429, headers={"Retry-After": "2"})
        return Reply(status=503)

    standin.behaviour = busy_once
    try:
        campaign, (a, b) = _campaign(runtime, account.id, sessions=2)
        browser = Browser()
        assert _subscribe(http, a, browser.subscription(standin.url + "/push/a")).status_code == 201
        assert _subscribe(http, b, browser.subscription(standin.url + "/push/b")).status_code == 201
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        with _runner_with(settings, push_retry_delays="0.5") as runner:
            drain(runner)
            # Not lost, not failed: waiting for its next try.
            first = _fanout(account, answer["notification"])
            assert (first["status"], first["sent"], first["failed"]) == ("running", 0, 0), first
            progress = _until_done(account, runner, answer["notification"])
        _add_up(progress)
        assert (progress["sent"], progress["failed"], progress["removed"]) == (2, 0, 0), progress
        assert {path: len(times) for path, times in seen.items()} == {"/push/a": 2, "/push/b": 2}
        # The 429's Retry-After (2 s) is honoured; the 503 without one waits the configured delay.
        assert seen["/push/a"][1] - seen["/push/a"][0] >= 1.9
        assert seen["/push/b"][1] - seen["/push/b"][0] >= 0.4
        for request in standin.requests():
            assert browser.decrypt(request.raw)["body"] == "Sale"
    finally:
        standin.stop()


def test_a_push_service_busy_on_every_try_counts_failed_after_the_last(
    account: TestAccount, runtime: Runtime, settings: Settings, http: httpx2.Client
) -> None:
    standin = Receiver().start()
    standin.behaviour = lambda path, _h, _b: (
        Reply(status=500) if path.endswith("/down") else Reply(status=429, headers={"Retry-After": "172800"})
    )
    try:
        campaign, (a, b) = _campaign(runtime, account.id, sessions=2)
        browser = Browser()
        assert _subscribe(http, a, browser.subscription(standin.url + "/push/down")).status_code == 201
        # Asked to wait two days: past the message's TTL (24 h), failed at once.
        assert _subscribe(http, b, browser.subscription(standin.url + "/push/later")).status_code == 201
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        with _runner_with(settings, push_retry_delays="0.2,0.2") as runner:
            progress = _until_done(account, runner, answer["notification"])
        _add_up(progress)
        assert (progress["sent"], progress["failed"], progress["removed"]) == (0, 2, 0), progress
        paths = [r.path for r in standin.requests()]
        assert (paths.count("/push/down"), paths.count("/push/later")) == (3, 1)
    finally:
        standin.stop()


@pytest.mark.parametrize("wait", ["999999999999", "9" * 400])
def test_a_wait_beyond_any_date_counts_failed_and_the_others_get_it_once(
    account: TestAccount, runtime: Runtime, settings: Settings, http: httpx2.Client, wait: str
) -> None:
    """A push service (anyone's host: subscribing is open to visitors) asking to wait longer than
    dates go: that subscriber is failed at once; the chunk's results are kept. The date overflowed
    after the chunk was sent, so the job failed and sent the whole chunk again, up to five times."""
    standin = Receiver().start()
    standin.behaviour = lambda path, _h, _b: (
        Reply(status=429, headers={"Retry-After": wait}) if path.endswith("/far") else Reply(status=201)
    )
    try:
        campaign, (a, b) = _campaign(runtime, account.id, sessions=2)
        browser = Browser()
        assert _subscribe(http, a, browser.subscription(standin.url + "/push/far")).status_code == 201
        assert _subscribe(http, b, browser.subscription(standin.url + "/push/good")).status_code == 201
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        with _runner_with(settings) as runner:
            progress = _until_done(account, runner, answer["notification"], timeout=20)
        _add_up(progress)
        assert (progress["status"], progress["sent"], progress["failed"]) == ("done", 1, 1), progress
        paths = [r.path for r in standin.requests()]
        assert (paths.count("/push/good"), paths.count("/push/far")) == (1, 1)
    finally:
        standin.stop()


# ---- counts add up to queued ------------------------------------------------------------------------


def test_a_subscription_made_after_the_call_is_not_sent_to_nor_counted(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    standin = Receiver().start()
    standin.behaviour = lambda _p, _h, _b: Reply(status=201)
    try:
        campaign, (a, b) = _campaign(runtime, account.id, sessions=2)
        browser = Browser()
        assert _subscribe(http, a, browser.subscription(standin.url + "/push/a")).status_code == 201
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        assert answer["queued"] == "1"
        # Someone subscribes after the call, before the job runs: not part of this push.
        assert _subscribe(http, b, browser.subscription(standin.url + "/push/b")).status_code == 201
        progress = _progress(account, runtime, answer["notification"])
        _add_up(progress)
        assert (progress["sent"], progress["failed"], progress["removed"]) == (1, 0, 0), progress
        assert [r.path for r in standin.requests()] == ["/push/a"]
    finally:
        standin.stop()


def test_a_subscriber_who_opts_out_before_the_send_is_counted_removed(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    standin = Receiver().start()
    standin.behaviour = lambda _p, _h, _b: Reply(status=201)
    try:
        campaign, (a, b) = _campaign(runtime, account.id, sessions=2)
        browser = Browser()
        for code in (a, b):
            subscribed = _subscribe(http, code, browser.subscription(f"{standin.url}/push/{code}"))
            assert subscribed.status_code == 201
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        assert answer["queued"] == "2"
        gone = http.request(
            "DELETE",
            "/push/subscriptions",
            json={
                "target": {"kind": "coupon_session", "code": b},
                "subscription": browser.subscription(f"{standin.url}/push/{b}"),
            },
        )
        assert gone.json()["removed"] == 1
        progress = _progress(account, runtime, answer["notification"])
        _add_up(progress)
        assert (progress["sent"], progress["failed"], progress["removed"]) == (1, 0, 1), progress
    finally:
        standin.stop()


# ---- push endpoints that never answer -----------------------------------------------------------------


class Tarpit:
    """A server that takes connections (the kernel completes them) and never reads nor answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def stop(self) -> None:
        self.sock.close()


def _hanging_subscriptions(runtime: Runtime, codes: list[str], url: str, count: int) -> None:
    """`count` subscriptions (spread over the sessions) whose endpoints are under `url`: made as
    anyone could through the subscribe route, without its per-address limit."""
    browser = Browser()
    with runtime.db.transaction() as session:
        items = []
        for n in range(count):
            target = targets.coupon_subscriber(session, codes[n % len(codes)])
            assert target is not None
            items.append((target, f"{url}/push/{n}", browser.p256dh, browser.auth))
        push_service.subscribe_many(session, items, utcnow())


def test_push_endpoints_that_never_answer_do_not_hold_up_another_accounts_webhooks(
    account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    """Account A's campaign has 128 subscriptions pointing at a server that accepts and never
    answers. Account B's webhook goes out at once all the same (budget: commit to first attempt
    p99 1 s): push deliveries have their own connections and a short timeout."""
    tarpit = Tarpit()
    hooks = Receiver().start()
    fanout_id = 0
    try:
        made = other_account.client.post(
            "/v4/webhooks", json={"url": hooks.url + "/hook", "events": ["*"]}, headers=other_account.headers
        )
        assert made.status_code == 201, made.text
        campaign, codes = _campaign(runtime, account.id, sessions=13)
        _hanging_subscriptions(runtime, codes, tarpit.url, 128)
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        fanout_id = int(answer["notification"].removeprefix("psh_"))
        pushing = threading.Thread(target=drain, args=(runtime,), daemon=True)
        pushing.start()
        time.sleep(2)  # the fan-out's requests hang meanwhile
        sent_at = time.monotonic()
        emit(runtime, other_account.id, "coupon_validated")
        hooking = threading.Thread(target=drain, args=(runtime,), daemon=True)
        hooking.start()
        hooks.wait_for(1, timeout=60)
        waited = time.monotonic() - sent_at
        assert waited < 3, f"B's webhook waited {waited:.1f} s behind A's push endpoints"
        hooking.join(30)
        # The fan-out's first pass waits about one push timeout (5 s), not one per 64 requests.
        pushing.join(30)
        assert not pushing.is_alive()
        progress = _fanout(account, answer["notification"])
        assert (progress["status"], progress["sent"], progress["failed"]) == ("running", 0, 0), progress
    finally:
        tarpit.stop()
        hooks.stop()
        if fanout_id:
            tasks._close(runtime, fanout_id)  # its next tries would be 15 s away


def test_the_other_subscribers_of_a_chunk_do_not_wait_for_a_push_service_that_never_answers(
    account: TestAccount, runtime: Runtime, settings: Settings
) -> None:
    tarpit = Tarpit()
    standin = Receiver().start()
    standin.behaviour = lambda _p, _h, _b: Reply(status=201)
    try:
        campaign, codes = _campaign(runtime, account.id, sessions=16)
        # The hanging ones first: the chunk walks in ID order.
        _hanging_subscriptions(runtime, codes, tarpit.url, 128)
        _hanging_subscriptions(runtime, codes, standin.url, 16)
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        assert answer["queued"] == "144"
        with _runner_with(settings, push_timeout_seconds=1.0, push_retry_delays="0.2") as runner:
            started = time.monotonic()
            pushing = threading.Thread(target=drain, args=(runner,), daemon=True)
            pushing.start()
            standin.wait_for(16, timeout=4)
            # Not behind the hanging requests: those hold at most the per-origin share of the pool.
            assert time.monotonic() - started < 1.5
            pushing.join(30)
            # One timeout, and the origin's other requests of the chunk are deferred, not sent.
            assert time.monotonic() - started < 3.5
            progress = _until_done(account, runner, answer["notification"])
        _add_up(progress)
        assert (progress["sent"], progress["failed"], progress["removed"]) == (16, 128, 0), progress
    finally:
        tarpit.stop()
        standin.stop()


def test_requests_deferred_behind_a_stalled_origin_do_not_use_up_their_tries(
    account: TestAccount, runtime: Runtime, settings: Settings
) -> None:
    """Once a request to an origin times out, the chunk's other requests to it are not sent
    (deferred). They counted as a failed try all the same: with one retry allowed, an origin that
    stalled once on each of two rounds failed every subscriber, though only two requests ever
    reached it. Deferred requests keep their tries."""
    standin = Receiver().start()
    answered = 0
    count_lock = threading.Lock()

    def first_two_hang(_path: str, _headers: dict[str, str], _body: str) -> Reply:
        nonlocal answered
        with count_lock:
            answered += 1
            n = answered
        return Reply(status=201, delay=3.0 if n <= 2 else 0.0)

    standin.behaviour = first_two_hang
    try:
        campaign, codes = _campaign(runtime, account.id, sessions=5)
        _hanging_subscriptions(runtime, codes, standin.url, 5)
        answer = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale"))
        with _runner_with(
            settings, push_timeout_seconds=1.0, push_retry_delays="0.2", push_origin_concurrency=1
        ) as runner:
            progress = _until_done(account, runner, answer["notification"])
        _add_up(progress)
        # Two requests ever hung, one per round. Only a subscriber whose both tries hung may fail
        # (which one was first in each round varies with load: all five can end sent); before,
        # every deferred request lost its try and all five failed.
        assert progress["sent"] + progress["failed"] == 5, progress
        assert progress["failed"] <= 1, progress
    finally:
        standin.stop()


# ---- one browser subscription, several pages ------------------------------------------------------------


def test_one_browser_subscription_serves_several_pages_and_moves_when_renewed(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    """The routes the opt-in script and service worker use: whether a page's target holds the
    browser's subscription, opting out one page at a time, and a renewed subscription."""
    _, (a, b, c) = _campaign(runtime, account.id, sessions=3)
    browser, renewed = Browser(), Browser()
    device = f"https://push.example/{secrets.token_hex(8)}"
    old, new = browser.subscription(f"{device}/1"), renewed.subscription(f"{device}/2")

    def status(code: str, subscription: dict[str, Any]) -> bool:
        answer = http.post(
            "/push/subscriptions/status",
            json={"target": {"kind": "coupon_session", "code": code}, "subscription": subscription},
        )
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["subscribed"])

    for code in (a, b):
        assert _subscribe(http, code, old).status_code == 201
    # C follows the new endpoint already (subscribed on its page after the renewal).
    assert _subscribe(http, c, new).status_code == 201
    assert (status(a, old), status(b, old), status(c, old)) == (True, True, False)

    moved = http.post("/push/subscriptions/renew", json={"previous": old["endpoint"], "subscription": new})
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"moved": 2}
    assert (status(a, new), status(b, new), status(c, new)) == (True, True, True)
    assert not status(a, old)
    with runtime.db.read() as session:
        rows = session.execute(
            select(PushSubscription.target_key, PushSubscription.endpoint, PushSubscription.p256dh).where(
                PushSubscription.target_key.in_([a, b, c])
            )
        ).all()
    assert sorted(rows) == sorted((code, new["endpoint"], renewed.p256dh) for code in (a, b, c))

    # Opting out on one page leaves the others: the script ends the browser's subscription only
    # when nothing is left.
    target = {"kind": "coupon_session", "code": b}
    off = http.request("DELETE", "/push/subscriptions", json={"target": target, "subscription": new})
    assert off.json() == {"removed": 1, "remaining": 2}

    # A renewal is checked as a subscription is.
    bad = {"endpoint": "ftp://push.example/x", "keys": new["keys"]}
    refused = http.post("/push/subscriptions/renew", json={"previous": new["endpoint"], "subscription": bad})
    assert_error(refused, 422, 300)
    assert_error(http.post("/push/subscriptions/renew", json={"previous": 5, "subscription": new}), 422, 300)


def test_the_privacy_export_shows_when_a_device_last_got_a_push_and_the_page_it_opened(
    account: TestAccount, runtime: Runtime
) -> None:
    standin = Receiver().start()
    try:
        campaign, (code, other) = _campaign(runtime, account.id, sessions=2)
        browser = Browser()
        with runtime.db.transaction() as session:
            session.execute(
                update(CouponSession).where(CouponSession.code == code).values(email="ada@example.com")
            )
            session.execute(
                update(CouponSession).where(CouponSession.code == other).values(email="bob@example.com")
            )
            items = [_subscriber(session, c) for c in (code, other)]
            push_service.subscribe_many(
                session,
                [
                    (sub, f"{standin.url}/push/{n}", browser.p256dh, browser.auth)
                    for n, sub in enumerate(items)
                ],
                utcnow(),
            )
        before = utcnow().replace(microsecond=0)
        answer = assert_ok(
            account.call(
                "/v3/coupon/pushnotification/single", campaign=campaign, couponsession=code, message="Hi Ada"
            )
        )
        assert _progress(account, runtime, answer["notification"])["sent"] == 1
        opened = browser.decrypt(standin.wait_for(1)[0].raw)["url"]

        def export(email: str) -> dict[str, Any]:
            found = account.client.post("/v4/privacy/export", json={"email": email}, headers=account.headers)
            assert found.status_code == 200, found.text
            return dict(found.json())

        ada = export("ada@example.com")
        (notification,) = ada["push_notifications"]
        assert notification["url"] == opened
        assert opened.endswith(f"/{code}")
        assert opened.startswith(runtime.settings.public_base_url + "/p/")
        (device,) = ada["push_subscriptions"]
        assert device["last_sent_at"] is not None
        assert dt.datetime.strptime(device["last_sent_at"], "%Y-%m-%d %H:%M:%S") >= before
        # Bob's device was never pushed to.
        assert [d["last_sent_at"] for d in export("bob@example.com")["push_subscriptions"]] == [None]
        # A push to the whole campaign reaches his device too: now it shows.
        everyone = assert_ok(
            account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Sale")
        )
        assert _progress(account, runtime, everyone["notification"])["sent"] == 2
        assert export("bob@example.com")["push_subscriptions"][0]["last_sent_at"] is not None
    finally:
        standin.stop()
