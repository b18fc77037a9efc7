"""A customer in a real (headless Chromium) phone-sized browser without JavaScript: joins a stamp
card, gets stamps from staff on the phone with the PIN and on the staff page by code, and finds
the reward coupon on the card page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from loyalty_fixtures import create_card, reward_campaign
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
def phone() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=False)
        try:
            yield context
        finally:
            context.close()
            browser.close()


@pytest.mark.browser
def test_join_collect_and_win_in_a_phone_browser(
    account: Any, runtime: Runtime, live_server: Any, phone: Any
) -> None:
    cam = reward_campaign(runtime, account.id, "Free espresso")
    card = create_card(
        account,
        name="Espresso club",
        type="stamp",
        stamps_per_reward=3,
        rewards=[{"threshold": 3, "campaign": cam, "name": "Free espresso"}],
        pin="8080",
    )
    page = phone.new_page()
    page.goto(f"{live_server.url}/l/{card['code']}")
    page.get_by_label("First name").fill("Robin")
    page.get_by_label("Email").fill("robin@example.com")
    page.get_by_role("button", name="Join").click()
    assert page.get_by_role("heading", name="Espresso club").is_visible()
    assert "0 stamps of 3" in page.locator(".loyalty-balance").inner_text()
    code = page.locator(".loyalty-code").first.inner_text()

    # Staff stamp on the customer's phone with the PIN.
    page.get_by_label("Stamps to add").fill("2")
    page.get_by_label("Staff PIN").fill("8080")
    page.get_by_role("button", name="Add").click()
    assert page.get_by_role("status").inner_text() == "Added 2 stamps."
    assert "2 stamps of 3" in page.locator(".loyalty-balance").inner_text()
    card_url = page.url.split("?")[0]

    # Another stamp on the counter's own device, by the customer's code.
    counter = phone.new_page()
    counter.goto(f"{live_server.url}/l/{card['code']}/staff")
    counter.get_by_label("Customer's 6-character code").fill(code)
    counter.get_by_label("Staff PIN").fill("8080")
    counter.get_by_role("button", name="Add").click()
    told = counter.locator(".notice").first.inner_text()
    assert "the card is complete. A new card has started with 0 stamps." in told
    assert "Reward reached: Free espresso." in counter.content()

    page.goto(card_url)
    reward = page.get_by_role("link", name="Free espresso")
    assert reward.is_visible()
    assert "/p/" in (reward.get_attribute("href") or "")
