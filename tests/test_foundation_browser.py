"""In a real browser (Debian's Chromium, headless): Swagger UI renders from the vendored files with
no request leaving the server, and a person signs in and out through the forms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

from conftest import LiveServer, TestAccount

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_swagger_ui_renders_without_any_outside_request(chromium: Any, live_server: LiveServer) -> None:
    context = chromium.new_context()
    page = context.new_page()
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    page.goto(live_server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    # Swagger UI renders a long spec lazily as the reader scrolls: scroll until more show up.
    for _ in range(20):
        if page.locator(".opblock").count() >= 12:
            break
        page.mouse.wheel(0, 4000)
        page.wait_for_timeout(300)
    assert page.locator(".opblock").count() >= 12
    assert page.locator("button.authorize").count() == 1
    assert hosts == {urlsplit(live_server.url).netloc}
    context.close()


def test_sign_in_and_out_in_a_browser(chromium: Any, live_server: LiveServer, account: TestAccount) -> None:
    context = chromium.new_context()
    page = context.new_page()
    page.goto(live_server.url + "/dashboard/")
    assert page.url.endswith("/dashboard/login?next=/dashboard/")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live_server.url + "/dashboard/")
    assert account.email in page.content()
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["oc_session"]["httpOnly"]
    assert cookies["oc_session"]["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(live_server.url + "/dashboard/login")
    page.goto(live_server.url + "/dashboard/")
    assert "/dashboard/login" in page.url
    context.close()
