"""A consumer in a real (headless Chromium) phone-sized browser: registers in a paid directory,
lands on the payment page with the right parameters, and finds the coupon unlocked once the
payment page has reported back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from directories_fixtures import PASSWORD, create_directory, make_campaign, v4
from helpers import assert_ok
from opencoupon import branding
from opencoupon.models import Account
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


# Each text element's colour and the colour it is drawn on: the first non-transparent background
# of it or its ancestors (the page background when none).
_COLOURS_JS = """selector => [...document.querySelectorAll(selector)].map(element => {
  let surface = element, background = "";
  while (surface) {
    background = getComputedStyle(surface).backgroundColor;
    if (background && !/rgba\\(.*, 0\\)$/.test(background) && background !== "transparent") break;
    surface = surface.parentElement;
  }
  return [element.textContent.trim().slice(0, 40), getComputedStyle(element).color, background];
})"""


def _hex(css_colour: str) -> str:
    channels = [int(float(v)) for v in css_colour[css_colour.index("(") + 1 : -1].split(",")[:3]]
    return "#" + "".join(f"{v:02x}" for v in channels)


@pytest.fixture
def scripted_page() -> Iterator[Any]:
    """A phone-sized page with JavaScript on, for measuring what the browser drew."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844})
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


@pytest.mark.browser
def test_a_dark_brand_background_leaves_the_directory_pages_readable(
    account: Any, runtime: Runtime, live_server: Any, scripted_page: Any
) -> None:
    """The account form checks the text colour against the white cards only, so a dark background
    with dark text is accepted: every text of the directory pages must sit on a card."""
    with runtime.db.transaction() as session:
        row = session.get(Account, account.id)
        assert row is not None
        row.branding = json.dumps({"background_color": "#102030", "text_color": "#333333"})
    campaign = make_campaign(runtime, account.id, "Dark pizza", description="Two for one")
    directory = create_directory(
        account,
        name="Dark book",
        description="Coupons of the old town",
        access="login",
        campaigns=[{"id": f"cam_{campaign.id}", "featured": True}],
    )
    base = f"{live_server.url}/d/{directory['code']}"
    texts = "h1, h2, h3, p, label, a:not(.button), span:not(.dir-badge)"
    # Signed in (the header then names the user) and revoked: the coupon shows the locked page.
    scripted_page.goto(f"{base}/register")
    scripted_page.get_by_label("Email").fill("dark@example.com")
    scripted_page.get_by_label("Password (at least 8 characters)").fill(PASSWORD)
    scripted_page.get_by_role("button", name="Register").click()
    user = v4(account, "GET", f"/v4/directory/{directory['id']}/users").json()[0]["id"]
    v4(account, "DELETE", f"/v4/directory/{directory['id']}/users/{user}/access")
    for path in ("", f"/c/cam_{campaign.id}", "/login", "/register"):
        scripted_page.goto(base + path)
        drawn = scripted_page.evaluate(_COLOURS_JS, texts)
        assert drawn, path
        headings = [text for text, _colour, _background in drawn]
        assert any(headings), path
        for text, colour, background in drawn:
            ratio = branding.contrast(_hex(colour), _hex(background))
            assert ratio >= branding.MIN_TEXT_CONTRAST, (path, text, colour, background)
