"""Security of the dashboard's pages as a whole: no other site may frame them (clickjacking), the
campaign preview may be framed by the dashboard itself only; sessions end on the server at sign-out."""

from __future__ import annotations

import httpx2

from conftest import LiveServer, TestAccount
from dashboard_fixtures import signed_in
from foundation_fixtures import browser, csrf_from


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


def test_logout_ends_the_session_on_the_server_too(live_server: LiveServer, account: TestAccount) -> None:
    """Signing out deletes the cookie, and a copy of it (another browser, a stolen cookie) stops
    working as well; the account's other sessions go on."""
    with signed_in(live_server.url, account.email) as web, signed_in(live_server.url, account.email) as other:
        copied = web.cookies["oc_session"]
        home = web.get("/dashboard/")
        assert home.status_code == 200
        out = web.post("/dashboard/logout", data={"csrf_token": csrf_from(home.text)})
        assert out.status_code == 303
        with browser(live_server.url) as thief:
            thief.cookies.set("oc_session", copied)
            refused = thief.get("/dashboard/")
            assert refused.status_code == 303
            assert refused.headers["location"].startswith("/dashboard/login")
        assert other.get("/dashboard/").status_code == 200


def test_each_sign_in_gets_its_own_session(live_server: LiveServer, account: TestAccount) -> None:
    """A new session value at every sign-in (no session fixation): two sign-ins, two cookies."""
    with (
        signed_in(live_server.url, account.email) as first,
        signed_in(live_server.url, account.email) as second,
    ):
        assert first.cookies["oc_session"] != second.cookies["oc_session"]
