"""Behind https (OPENCOUPON_BASE_URL starting with https://), every cookie a page sets carries the
Secure flag, so a plain-http request never sends it: the coupon page's device cookie (it leads to
the device's coupon), the CSRF cookie, the dashboard's session."""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie

import httpx2
import pytest

from conftest import LiveServer, TestAccount, served_with
from coupons_fixtures import create_campaign
from foundation_fixtures import csrf_from
from loyalty_fixtures import create_card
from opencoupon.config import Settings


@pytest.fixture(scope="module")
def https_server(settings: Settings) -> Iterator[LiveServer]:
    """The same database, served as if behind an https proxy."""
    with served_with(settings, base_url="https://coupons.example") as (server, _runtime):
        yield server


def _cookies(response: httpx2.Response) -> dict[str, str]:
    """Each cookie the answer sets, with its attributes as sent."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        found[header.split("=", 1)[0]] = header
    return found


def _all_secure(response: httpx2.Response, *names: str) -> dict[str, str]:
    cookies = _cookies(response)
    for name in names:
        assert name in cookies, cookies
        attributes = [part.strip().lower() for part in cookies[name].split(";")]
        assert "secure" in attributes, cookies[name]
        assert "httponly" in attributes, cookies[name]
    return {name: SimpleCookie(cookies[name])[name].value for name in names}


def test_page_cookies_are_secure_behind_https(https_server: LiveServer, account: TestAccount) -> None:
    campaign = create_campaign(account)
    card = create_card(account)
    with httpx2.Client(base_url=https_server.url, timeout=30, headers={"Accept": "text/html"}) as web:
        opened = web.get(f"/p/{campaign['code']}")
        assert opened.status_code == 303
        _all_secure(opened, "oc_device")
        coupon = web.get(opened.headers["location"])
        _all_secure(coupon, "oc_csrf")
        _all_secure(web.get(f"/l/{card['code']}"), "oc_csrf")
        login = web.get("/dashboard/login")
        csrf = _all_secure(login, "oc_csrf")["oc_csrf"]
        signed_in = web.post(
            "/dashboard/login",
            data={
                "email": account.email,
                "password": "correct horse battery",
                "csrf_token": csrf_from(login.text),
            },
            headers={"Cookie": f"oc_csrf={csrf}"},
        )
        assert signed_in.status_code == 303, signed_in.text
        _all_secure(signed_in, "oc_session")
