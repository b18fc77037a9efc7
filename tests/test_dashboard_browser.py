"""The dashboard in a real browser (Debian's Chromium, headless, one browser for the module):
sign in, create a campaign, claim and validate it with the PIN as a consumer in a second browser
context, see the validation on the campaign page and its chart; a single-use batch with its CSV;
rotate a webhook secret and replay a delivery; "open as" a subaccount.

With OPENCOUPON_SCREENSHOTS=1 the test also writes the PNGs of docs/screenshots/."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

from conftest import LiveServer, TestAccount
from dashboard_fixtures import PASSWORD
from opencoupon.runtime import Runtime
from webhooks_fixtures import Receiver, Reply, drain, emit, receiver  # noqa: F401 - fixture

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _shot(page: Any, name: str) -> None:
    if os.environ.get("OPENCOUPON_SCREENSHOTS") == "1":
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def _sign_in(chromium: Any, live_server: LiveServer, email: str, **options: Any) -> tuple[Any, Any]:
    context = chromium.new_context(viewport={"width": 1100, "height": 760}, accept_downloads=True, **options)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "are you sure?" prompts
    page.goto(live_server.url + "/dashboard/campaigns")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live_server.url + "/dashboard/campaigns")
    return context, page


def test_campaign_claim_validate_with_pin_and_see_it_counted(
    chromium: Any, live_server: LiveServer, account: TestAccount
) -> None:
    context, page = _sign_in(chromium, live_server, account.email)
    page.get_by_role("link", name="New campaign").click()
    page.get_by_label("Name (for you)").fill("Coffee for a euro")
    page.get_by_label("Title (shown to consumers)").fill("Coffee: 1 euro")
    page.get_by_label("Tags (comma separated)").fill("coffee,spring")
    page.get_by_role("textbox", name=re.compile("^Staff PIN")).fill("2468")
    page.get_by_label("Consumers must claim before validating").check()
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_url(re.compile(r".*/dashboard/campaigns/cam_\d+\?created=1"))
    assert page.get_by_role("status").inner_text() == "Campaign created."
    campaign_url = page.url.split("?")[0]
    consumer_path = urlsplit(page.get_by_label("Consumer link").input_value()).path

    consumer = chromium.new_context(viewport={"width": 390, "height": 800}, is_mobile=True)
    phone = consumer.new_page()
    phone.goto(live_server.url + consumer_path)
    phone.get_by_label("First name").fill("Ann")
    phone.get_by_label("Email").fill("ann@example.com")
    phone.get_by_role("button", name="Claim").click()
    phone.get_by_label("Staff PIN").fill("2468")
    phone.get_by_role("button", name="Validate").click()
    phone.wait_for_load_state()
    assert "validated" in phone.content().lower()
    consumer.close()

    page.goto(campaign_url)
    assert page.locator('[data-funnel="validations"]').inner_text() == "1"
    assert page.locator('[data-funnel="claims"]').inner_text() == "1"
    assert page.locator('[data-chart-total="validations"]').inner_text() == "1"
    bars = page.locator("svg.dash-chart rect title").all_text_contents()
    assert any(t.endswith("validations: 1") for t in bars)
    assert page.locator("tr[data-session] td:nth-child(2)").all_inner_texts() == ["validated"]
    _shot(page, "campaign")
    page.goto(live_server.url + "/dashboard/campaigns")
    assert "Coffee for a euro" in page.content()
    _shot(page, "campaigns")
    page.goto(live_server.url + "/dashboard/campaigns/new")
    _shot(page, "campaign-form")
    mobile = chromium.new_context(
        viewport={"width": 390, "height": 800}, is_mobile=True, storage_state=context.storage_state()
    )
    small = mobile.new_page()
    small.goto(campaign_url)
    _shot(small, "campaign-phone")
    mobile.close()
    context.close()


def test_single_use_batch_with_progress_and_csv(
    chromium: Any, live_server: LiveServer, account: TestAccount
) -> None:
    made = account.call("/v4/campaigns", name="Personal links")
    assert made.status_code == 201
    context, page = _sign_in(chromium, live_server, account.email)
    page.get_by_role("link", name="Single-use").click()
    page.get_by_label("Number of links", exact=False).fill("3000")
    page.get_by_label("Give every link its own validation code").check()
    page.get_by_label("Code length (10 to 25)").fill("12")
    page.get_by_role("button", name="Create links").click()
    page.wait_for_url(re.compile(r".*/dashboard/singleuse/jobs/.+"))
    # htmx swaps in the finished state without reloading the page.
    page.get_by_text("3000 links ready").wait_for(timeout=30_000)
    _shot(page, "singleuse-batch")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the links (CSV)").click()
    body = Path(info.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == 3000
    assert len({r["custom_validation_code"] for r in rows}) == 3000
    context.close()


def test_rotate_webhook_secret_and_replay_a_delivery(
    chromium: Any,
    live_server: LiveServer,
    account: TestAccount,
    runtime: Runtime,
    receiver: Receiver,  # noqa: F811
) -> None:
    receiver.behaviour = lambda _p, _h, _b: Reply(status=200, body="ok")
    context, page = _sign_in(chromium, live_server, account.email)
    page.get_by_role("link", name="Webhooks").click()
    page.get_by_label("URL (https://…)").fill(receiver.url + "/in")
    page.get_by_label("All events").check()
    page.get_by_role("button", name="Add endpoint").click()
    first = page.get_by_label(re.compile("Signing secret of")).input_value()
    assert first.startswith("whsec_") or len(first) >= 20
    page.get_by_role("link", name="Continue").click()
    event_id = emit(runtime, account.id)
    drain(runtime)
    receiver.wait_for(1)
    page.reload()
    row = page.locator(f'tr[data-delivery="{event_id}"]')
    assert "200" in row.inner_text()

    page.get_by_label("Keep the old secret valid for", exact=False).fill("2")
    page.get_by_role("button", name="Rotate secret").click()
    second = page.get_by_label(re.compile("Signing secret of")).input_value()
    assert second
    assert second != first
    page.get_by_role("link", name="Continue").click()
    page.locator(f'tr[data-delivery="{event_id}"]').get_by_role("button", name="Replay").click()
    assert "1 deliveries queued." in page.get_by_role("status").inner_text()
    drain(runtime)
    replayed = receiver.wait_for(2)
    assert [r.event_id for r in replayed] == [event_id, event_id]
    page.reload()
    assert page.locator(f'tr[data-delivery="{event_id}"]').count() == 2
    _shot(page, "webhook")
    context.close()


def test_open_as_a_subaccount(
    chromium: Any, live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    made = subaccount.call("/v4/campaigns", name="Only the subaccount's")
    assert made.status_code == 201
    context, page = _sign_in(chromium, live_server, account.email)
    page.get_by_role("link", name="Subaccounts").click()
    _shot(page, "subaccounts")
    page.locator(f'tr[data-sub="sub_{subaccount.id}"]').get_by_role("button", name="Open as").click()
    page.wait_for_url(live_server.url + "/dashboard/")
    assert subaccount.email in page.locator(".dash-logout").inner_text()
    assert page.get_by_role("link", name="Subaccounts").count() == 0
    page.get_by_role("link", name="Campaigns").click()
    assert "Only the subaccount" in page.content()
    context.close()


def test_branding_set_on_the_account_page_shows_on_the_consumer_page(
    chromium: Any, live_server: LiveServer, account: TestAccount
) -> None:
    """The owner sets a logo and colours on the account page; the consumer's phone shows the
    coupon with that logo and main colour."""
    context, page = _sign_in(chromium, live_server, account.email)
    page.goto(live_server.url + "/dashboard/account")
    page.get_by_label(re.compile("^Logo URL")).fill(live_server.url + "/static/demo-logo.svg")
    page.get_by_label(re.compile("^Main colour")).fill("#7a3e1d")
    page.get_by_label(re.compile("^Background colour")).fill("#f6efe6")
    page.get_by_role("button", name="Save").click()
    page.wait_for_load_state()
    assert page.locator("#a-primary_color").input_value() == "#7a3e1d"
    page.evaluate("() => document.getElementById('settings-h').scrollIntoView()")
    _shot(page, "account-branding")

    page.get_by_role("link", name="Campaigns").first.click()
    page.get_by_role("link", name="New campaign").click()
    page.get_by_label("Name (for you)").fill("Corner coffee")
    page.get_by_label("Title (shown to consumers)").fill("A free cookie with your coffee")
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_url(re.compile(r".*/dashboard/campaigns/cam_\d+\?created=1"))
    consumer_path = urlsplit(page.get_by_label("Consumer link").input_value()).path

    consumer = chromium.new_context(viewport={"width": 390, "height": 800}, is_mobile=True)
    phone = consumer.new_page()
    phone.goto(live_server.url + consumer_path)
    logo = phone.locator("img.brand-logo")
    logo.wait_for()
    assert logo.evaluate("img => img.complete && img.naturalWidth > 0")  # the logo really loaded
    button = phone.get_by_role("button", name="Claim")
    colour = button.evaluate("b => getComputedStyle(b).backgroundColor")
    assert colour == "rgb(122, 62, 29)"
    background = phone.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(246, 239, 230)"
    _shot(phone, "coupon-branded-phone")
    consumer.close()
    context.close()


def test_saving_the_campaign_form_unchanged_in_a_browser_keeps_the_campaign(
    chromium: Any, live_server: LiveServer, account: TestAccount
) -> None:
    """Chromium saves the edit form as shown: the folder set through the API stays, and the line
    breaks of the consent text, description and terms survive (a browser drops them from a
    one-line input and sends a textarea's as CRLF)."""
    made = account.client.post(
        "/v4/campaigns",
        headers=account.headers,
        json={
            "name": "Newsletter deal",
            "folder": "Promo",
            "description": "Line one.\nLine two.",
            "terms": "One per person.\nWhile stocks last.",
            "claim_fields": ["email"],
            "consent_text": "I agree to emails.\nRead our privacy policy.",
        },
    )
    assert made.status_code == 201, made.text
    cid = made.json()["id"]
    before = account.client.get(f"/v4/campaigns/{cid}", headers=account.headers).json()
    context, page = _sign_in(chromium, live_server, account.email)
    page.goto(f"{live_server.url}/dashboard/campaigns/{cid}/edit")
    page.get_by_role("button", name="Save campaign").click()
    page.wait_for_url(re.compile(r".*saved=1.*"))
    after = account.client.get(f"/v4/campaigns/{cid}", headers=account.headers).json()
    assert after["folder"] == "Promo"
    assert after["consent_text"] == "I agree to emails.\nRead our privacy policy."
    assert {**after, "updated_at": ""} == {**before, "updated_at": ""}
    context.close()
