"""The dashboard's directory pages on a 390px phone in a real browser (headless Chromium): nothing
wider than the screen, and each campaign's controls (category, status, Featured, Save) inside its
card, usable where they are."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from conftest import LiveServer, TestAccount
from dashboard_fixtures import PASSWORD
from directories_fixtures import create_category, create_directory, create_user, make_campaign
from opencoupon.runtime import Runtime

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PHONE = {"width": 390, "height": 844}
SHOT = os.environ.get("OPENCOUPON_DIRECTORY_SHOT", "")

# Boxes of each campaign form's controls and of the card holding them.
_CONTROL_BOXES_JS = """() => [...document.querySelectorAll('#campaigns form.dash-item-form')].map(form => {
  const card = form.closest('.card').getBoundingClientRect();
  return [...form.querySelectorAll('select, button, label.inline')].map(control => {
    const box = control.getBoundingClientRect();
    return {name: control.name || control.textContent.trim(), left: box.left, right: box.right,
            width: box.width, cardLeft: card.left, cardRight: card.right};
  });
}).flat()"""


@pytest.fixture
def phone(live_server: LiveServer, account: TestAccount) -> Iterator[Any]:
    """A signed-in dashboard page on a phone-sized screen."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=PHONE)
        page = context.new_page()
        try:
            page.goto(live_server.url + "/dashboard/login")
            page.get_by_label("Email").fill(account.email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_load_state()
            yield page
        finally:
            context.close()
            browser.close()


def test_the_directory_pages_fit_a_phone(
    live_server: LiveServer, account: TestAccount, runtime: Runtime, phone: Any
) -> None:
    food = create_category(account, "Food and drink")
    pizza = create_category(account, "Pizza and pasta", food["id"])
    napoletana = create_category(account, "Napoletana specialities", pizza["id"])
    deals = [make_campaign(runtime, account.id, f"Two pizzas for the price of one, deal {n}") for n in (1, 2)]
    directory = create_directory(
        account,
        name="Demo City Coupon Book",
        access="payment",
        payment_url="https://payments.example.com/opencoupon-demo",
        campaigns=[
            {"id": f"cam_{deals[0].id}", "featured": True, "category": napoletana["id"]},
            f"cam_{deals[1].id}",
        ],
    )
    create_user(account, directory["id"], email="a-rather-long-address@demo.opencoupon.local")
    for path in (
        f"/dashboard/directories/{directory['id']}",
        "/dashboard/directories",
        f"/dashboard/categories/{pizza['id']}/move",
    ):
        phone.goto(live_server.url + path)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)

    phone.goto(f"{live_server.url}/dashboard/directories/{directory['id']}")
    controls = phone.evaluate(_CONTROL_BOXES_JS)
    assert len(controls) == 2 * 4, controls
    for control in controls:
        assert control["cardLeft"] <= control["left"], control
        assert control["right"] <= control["cardRight"], control
        if control["name"] in ("category", "status"):
            # A dropdown shows its choice, not just its arrow.
            assert control["width"] >= 120, control
    # Still usable: a campaign's settings save from the phone.
    form = phone.locator(f'form[action$="/campaigns/cam_{deals[1].id}"]')
    form.locator('select[name="category"]').select_option(food["id"])
    form.get_by_role("button", name="Save").click()
    assert phone.get_by_role("status").inner_text() == "Campaign saved."
    if SHOT:
        phone.locator("#campaigns").screenshot(path=SHOT)
