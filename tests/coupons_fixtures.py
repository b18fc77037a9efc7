"""Helpers for the coupon tests: campaigns through the API, sessions through the consumer pages."""

from __future__ import annotations

import re
from typing import Any

import httpx2

from conftest import LiveServer, TestAccount
from opencoupon.coupons.sessions import new_session
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime

# Re-exported under a name pytest does not try to collect as a test class.
Acct = TestAccount
PIN = "4321"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def create_campaign(account: TestAccount, **fields: Any) -> dict[str, Any]:
    body = {"name": "Coffee", "pin": PIN, **fields}
    response = account.client.post("/v4/campaigns", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def open_session(live_server: LiveServer, code: str) -> str:
    """Open the coupon in a fresh browser and return the new session's 21-character code."""
    with httpx2.Client(base_url=live_server.url, timeout=30) as browser:
        response = browser.get(f"/p/{code}")
        assert response.status_code == 303, response.text
        location = response.headers["location"]
    assert location.startswith(f"/p/{code}/")
    return location.rsplit("/", 1)[1]


def csrf_token(browser: httpx2.Client, path: str) -> str:
    """Load a page (which sets the CSRF cookie) and read the token of its form."""
    page = browser.get(path)
    match = _CSRF.search(page.text)
    assert match, page.text
    return match.group(1)


def bulk_sessions(runtime: Runtime, campaign_id: str, count: int, **kwargs: Any) -> list[str]:
    """Sessions made directly with the shared session factory (as single-use links would be)."""
    pk = int(campaign_id.removeprefix("cam_"))
    with runtime.db.transaction() as session:
        campaign = session.get(Campaign, pk)
        assert campaign is not None
        return [new_session(session, campaign, **kwargs).code for _ in range(count)]


def session_status(account: TestAccount, code: str) -> dict[str, Any]:
    response = account.call("/v3/couponsession/data", couponsession=code)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"]["status"])
