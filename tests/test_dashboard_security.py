"""Security of the dashboard's pages as a whole: no other site may frame them (clickjacking); the
campaign preview may be framed by the dashboard itself only."""

from __future__ import annotations

import httpx2

from conftest import LiveServer, TestAccount
from dashboard_fixtures import signed_in
from foundation_fixtures import browser


def _unframeable(response: httpx2.Response) -> None:
    assert response.status_code in (200, 422), response.text
    assert response.headers.get("x-frame-options") == "DENY", response.headers
    assert response.headers.get("content-security-policy") == "frame-ancestors 'none'"


def test_dashboard_pages_cannot_be_framed(live_server: LiveServer, account: TestAccount) -> None:
    with browser(live_server.url) as anonymous:
        _unframeable(anonymous.get("/dashboard/login"))
    campaign = account.call("/v4/campaigns", name="Framed", pin="4321").json()["id"]
    with signed_in(live_server.url, account.email) as web:
        for path in (
            "/dashboard/",
            "/dashboard/campaigns",
            f"/dashboard/campaigns/{campaign}",
            "/dashboard/account",
        ):
            _unframeable(web.get(path))
        preview = web.get(f"/dashboard/campaigns/{campaign}/preview")
        assert preview.status_code == 200
        assert preview.headers.get("content-security-policy") == "frame-ancestors 'self'"
        assert preview.headers.get("x-frame-options") == "SAMEORIGIN"
