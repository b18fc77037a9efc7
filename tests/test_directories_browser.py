"""A consumer in a real (headless Chromium) phone-sized browser: registers in a paid directory,
lands on the payment page with the right parameters, and finds the coupon unlocked once the
payment page has reported back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from directories_fixtures import PASSWORD, create_directory, make_campaign
from helpers import assert_ok
from opencoupon.runtime import Runtime

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=False)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


@pytest.mark.browser
def test_register_pay_and_open_in_a_phone_browser(
    account: Any, runtime: Runtime, live_server: Any, page: Any
) -> None:
    campaign = make_campaign(runtime, account.id, "Phone pizza", description="Two for one")
    # The "payment page" is a page of the same loopback server, so the browser really lands there.
    directory = create_directory(
        account,
        name="Phone book",
        access="payment",
        payment_url=f"{live_server.url}/healthz?shop=1",
        campaigns=[{"id": f"cam_{campaign.id}", "featured": True}],
    )
    base = f"{live_server.url}/d/{directory['code']}"
    page.goto(base)
    assert page.get_by_role("heading", name="Phone book").is_visible()
    page.get_by_role("link", name="Register").click()
    page.get_by_label("Email").fill("phone@example.com")
    page.get_by_label("Password (at least 8 characters)").fill(PASSWORD)
    page.get_by_label("First name").fill("Pat")
    page.get_by_role("button", name="Register").click()
    landed = urlsplit(page.url)
    assert landed.path == "/healthz"
    query = dict(parse_qsl(landed.query))
    assert (query["shop"], query["directory"]) == ("1", directory["id"])
    user = query["user"]

    page.goto(base)
    assert page.get_by_text("payment has not been confirmed").is_visible()
    assert page.get_by_role("link", name="Locked: unlock").is_visible()

    assert_ok(
        account.call("/v3/directoryusers/update", directory=directory["id"], user=user, status="completed")
    )
    page.goto(base)
    page.get_by_role("link", name="Open coupon").click()
    assert urlsplit(page.url).path.startswith(f"/p/{campaign.code}/")
