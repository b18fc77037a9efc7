"""Push delivery faults found in review: removed single-use links still pushed to, push service
hosts not resolved at subscribe time. Real app, database, runner and a loopback push service
stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import httpx2
from sqlalchemy import select

from helpers import assert_error, assert_ok
from opencoupon.kit.clock import utcnow
from opencoupon.models import PushSubscription
from opencoupon.push import service as push_service
from opencoupon.push import targets
from opencoupon.runtime import Runtime
from opencoupon.webhooks import ssrf
from test_push import Browser, _campaign, _subscribe
from test_push_review import _progress
from webhooks_fixtures import Receiver, Reply

if TYPE_CHECKING:
    from conftest import TestAccount


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
