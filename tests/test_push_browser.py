"""The push opt-in script in headless Chromium, from a review: one browser following two coupons,
and a subscription the browser renewed. The push service cannot be reached from here, so
PushManager is replaced by a stand-in that behaves as the Push API specifies: one subscription per
service worker registration (kept across page loads), `subscribe()` answers it when it exists,
`unsubscribe()` ends it for every page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from opencoupon.models import Campaign, PushSubscription
from opencoupon.runtime import Runtime
from test_loyalty_browser import CHROMIUM_ARGS
from test_push import Browser, _campaign, _subscribe

FAKE_PUSH = """
(() => {
  const KEY = "fake-push-subscription";
  const make = (data) => data && {
    endpoint: data.endpoint,
    options: {userVisibleOnly: true},
    toJSON: () => data,
    unsubscribe: () => { localStorage.removeItem(KEY); return Promise.resolve(true); },
  };
  PushManager.prototype.getSubscription = function () {
    return Promise.resolve(make(JSON.parse(localStorage.getItem(KEY) || "null")));
  };
  PushManager.prototype.subscribe = function () {
    let data = JSON.parse(localStorage.getItem(KEY) || "null");
    if (!data) {
      data = {endpoint: "https://push.example/device-1", keys: {p256dh: "%P256DH%", auth: "%AUTH%"}};
      localStorage.setItem(KEY, JSON.stringify(data));
    }
    return Promise.resolve(make(data));
  };
})();
"""
ON, OFF = "Turn off notifications", "Turn on notifications"


@pytest.fixture
def keys() -> Browser:
    """The browser's subscription keys (the stand-in PushManager hands them out)."""
    return Browser()


@pytest.fixture
def chromium(keys: Browser) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context()
        context.add_init_script(FAKE_PUSH.replace("%P256DH%", keys.p256dh).replace("%AUTH%", keys.auth))
        try:
            yield context
        finally:
            context.close()
            browser.close()


def _rows(runtime: Runtime, codes: list[str]) -> dict[str, str]:
    """Target key -> endpoint of the subscriptions of these sessions."""
    with runtime.db.read() as session:
        found = session.execute(
            select(PushSubscription.target_key, PushSubscription.endpoint).where(
                PushSubscription.target_key.in_(codes)
            )
        )
        return {str(key): str(endpoint) for key, endpoint in found}


def _coupon(runtime: Runtime, account_id: int, sessions: int) -> tuple[str, list[str]]:
    campaign, codes = _campaign(runtime, account_id, sessions=sessions)
    with runtime.db.read() as session:
        found = session.get(Campaign, int(campaign.removeprefix("cam_")))
        assert found is not None
        return found.code, codes


def _open(page: Any, url: str) -> Any:
    """The page with its opt-in button, once the script has decided what it shows."""
    page.goto(url)
    button = page.locator(
        '.push-optin__button[aria-pressed="true"], .push-optin__button[aria-pressed="false"]'
    )
    button.wait_for(state="visible")
    return button


def _subscription_kept(page: Any) -> bool:
    return bool(page.evaluate("localStorage.getItem('fake-push-subscription') !== null"))


@pytest.mark.browser
def test_one_browser_follows_two_coupons_and_turns_them_off_one_at_a_time(
    account: Any, runtime: Runtime, live_server: Any, chromium: Any
) -> None:
    code, (a, b) = _coupon(runtime, account.id, sessions=2)
    page = chromium.new_page()
    button = _open(page, f"{live_server.url}/p/{code}/{a}")
    assert button.inner_text() == OFF
    button.click()
    page.get_by_text("Notifications are on.").wait_for()
    assert _rows(runtime, [a, b]) == {a: "https://push.example/device-1"}

    # The same person opens their other coupon: not subscribed there yet, though the browser
    # has a subscription (for coupon A).
    button = _open(page, f"{live_server.url}/p/{code}/{b}")
    assert button.inner_text() == OFF
    button.click()
    page.get_by_text("Notifications are on.").wait_for()
    assert _rows(runtime, [a, b]) == {a: "https://push.example/device-1", b: "https://push.example/device-1"}

    # Off on B: B's subscription only; A's goes on, so the browser keeps its subscription.
    button = _open(page, f"{live_server.url}/p/{code}/{b}")
    assert button.inner_text() == ON
    button.click()
    page.get_by_text("Notifications are off.").wait_for()
    assert _rows(runtime, [a, b]) == {a: "https://push.example/device-1"}
    assert _subscription_kept(page)

    # Back on A it is still on; off there, nothing uses the subscription any more: ended.
    button = _open(page, f"{live_server.url}/p/{code}/{a}")
    assert button.inner_text() == ON
    button.click()
    page.get_by_text("Notifications are off.").wait_for()
    assert _rows(runtime, [a, b]) == {}
    assert not _subscription_kept(page)


@pytest.mark.browser
def test_a_renewed_subscription_reaches_the_server_on_the_next_visit(
    account: Any, runtime: Runtime, live_server: Any, chromium: Any, keys: Browser, http: httpx2.Client
) -> None:
    """The push service rotated the browser's subscription (a new endpoint): the next visit of any
    page moves every coupon it followed to the new one."""
    code, (a, b) = _coupon(runtime, account.id, sessions=2)
    page = chromium.new_page()
    button = _open(page, f"{live_server.url}/p/{code}/{a}")
    button.click()
    page.get_by_text("Notifications are on.").wait_for()
    # The same browser follows coupon B too (subscribed on its page before).
    assert _subscribe(http, b, keys.subscription("https://push.example/device-1")).status_code == 201
    assert set(_rows(runtime, [a, b]).values()) == {"https://push.example/device-1"}
    page.evaluate(
        "(() => { const d = JSON.parse(localStorage.getItem('fake-push-subscription'));"
        " d.endpoint = 'https://push.example/device-2';"
        " localStorage.setItem('fake-push-subscription', JSON.stringify(d)); })()"
    )
    button = _open(page, f"{live_server.url}/p/{code}/{a}")
    assert button.inner_text() == ON
    assert _rows(runtime, [a, b]) == {a: "https://push.example/device-2", b: "https://push.example/device-2"}


@pytest.mark.browser
@pytest.mark.parametrize("failure", ["429", "503", "network"])
def test_a_renew_that_failed_is_sent_again_on_the_next_visit(
    account: Any,
    runtime: Runtime,
    live_server: Any,
    chromium: Any,
    keys: Browser,
    http: httpx2.Client,
    failure: str,
) -> None:
    """The renew of a rotated subscription fails once (the shared per-address limit, a busy server,
    no network): the next visit sends it again, so the other coupon keeps getting pushes."""
    code, (a, b) = _coupon(runtime, account.id, sessions=2)
    page = chromium.new_page()
    button = _open(page, f"{live_server.url}/p/{code}/{a}")
    button.click()
    page.get_by_text("Notifications are on.").wait_for()
    assert _subscribe(http, b, keys.subscription("https://push.example/device-1")).status_code == 201
    page.evaluate(
        "(() => { const d = JSON.parse(localStorage.getItem('fake-push-subscription'));"
        " d.endpoint = 'https://push.example/device-2';"
        " localStorage.setItem('fake-push-subscription', JSON.stringify(d)); })()"
    )
    renews: list[str] = []

    def first_fails(route: Any) -> None:
        renews.append(route.request.url)
        if len(renews) > 1:
            route.continue_()
        elif failure == "network":
            route.abort()
        else:
            route.fulfill(status=int(failure), headers={"Retry-After": "1"}, body="{}")

    page.route("**/push/subscriptions/renew", first_fails)
    old = {a: "https://push.example/device-1", b: "https://push.example/device-1"}
    new = {a: "https://push.example/device-2", b: "https://push.example/device-2"}

    # The renew fails: nothing moved; the page shows A as off (its row is still the old endpoint).
    assert _open(page, f"{live_server.url}/p/{code}/{a}").inner_text() == OFF
    assert len(renews) == 1
    assert _rows(runtime, [a, b]) == old
    # The next visit (of either coupon) sends it again, and both move.
    assert _open(page, f"{live_server.url}/p/{code}/{b}").inner_text() == ON
    assert len(renews) == 2
    assert _rows(runtime, [a, b]) == new
    # Done: later visits send no renew.
    assert _open(page, f"{live_server.url}/p/{code}/{a}").inner_text() == ON
    assert len(renews) == 2


@pytest.mark.browser
def test_turning_on_after_a_failed_renew_still_renews_the_other_coupons(
    account: Any, runtime: Runtime, live_server: Any, chromium: Any, keys: Browser, http: httpx2.Client
) -> None:
    """The renew failed, so coupon A shows "Turn on"; turning it on subscribes the new endpoint for
    A, and the renew still owed for B goes out on the next visit."""
    code, (a, b) = _coupon(runtime, account.id, sessions=2)
    page = chromium.new_page()
    _open(page, f"{live_server.url}/p/{code}/{a}").click()
    page.get_by_text("Notifications are on.").wait_for()
    assert _subscribe(http, b, keys.subscription("https://push.example/device-1")).status_code == 201
    page.evaluate(
        "(() => { const d = JSON.parse(localStorage.getItem('fake-push-subscription'));"
        " d.endpoint = 'https://push.example/device-2';"
        " localStorage.setItem('fake-push-subscription', JSON.stringify(d)); })()"
    )
    renews: list[str] = []

    def first_fails(route: Any) -> None:
        renews.append(route.request.url)
        if len(renews) == 1:
            route.fulfill(status=429, headers={"Retry-After": "60"}, body="{}")
        else:
            route.continue_()

    page.route("**/push/subscriptions/renew", first_fails)
    button = _open(page, f"{live_server.url}/p/{code}/{a}")
    assert button.inner_text() == OFF
    button.click()
    page.get_by_text("Notifications are on.").wait_for()
    assert _open(page, f"{live_server.url}/p/{code}/{b}").inner_text() == ON
    assert len(renews) == 2
    with runtime.db.read() as session:
        rows = session.execute(
            select(PushSubscription.target_key, PushSubscription.endpoint).where(
                PushSubscription.target_key.in_([a, b])
            )
        ).all()
    assert sorted(rows) == sorted(
        [(a, "https://push.example/device-2"), (b, "https://push.example/device-2")]
    )
