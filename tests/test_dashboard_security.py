"""Security of the dashboard's pages as a whole: no other site may frame them (clickjacking), the
campaign preview may be framed by the dashboard itself only; sessions end on the server at sign-out."""

from __future__ import annotations

import httpx2

from conftest import LiveServer, TestAccount, served_with
from dashboard_fixtures import PASSWORD, post_form, signed_in
from foundation_fixtures import browser, csrf_from, sign_in
from opencoupon.config import Settings


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


def test_sign_in_attempts_are_limited_per_email_and_per_address(settings: Settings) -> None:
    """login_attempts_per_minute per email; six times that per client address, so one address
    cannot try a password on many emails. Past either, the sign-in answers 429."""
    with (
        served_with(settings, login_attempts_per_minute=2.0) as (server, _runtime),
        browser(server.url) as web,
    ):
        same_email = [sign_in(web, "someone@example.com", "wrong-password").status_code for _ in range(3)]
        # 12 per address (2 x 6): 3 used above, 9 more on other emails pass, the next does not.
        sprayed = [sign_in(web, f"user{i}@example.com", "wrong-password").status_code for i in range(10)]
    assert same_email == [401, 401, 429]
    assert sprayed == [401] * 9 + [429]


def test_notices_on_dashboard_pages_are_only_the_dashboards_own(
    live_server: LiveServer, account: TestAccount
) -> None:
    """A `?done=` / `?problem=` notice shows only when the dashboard's own form post wrote it (its
    redirect is signed): a link made by someone else cannot put its words on a dashboard page."""
    page = "/dashboard/account"
    lure = "Your account is suspended: call +1 555 0100"
    with signed_in(live_server.url, account.email) as web:
        forged = web.get(page, params={"done": lure, "problem": lure})
        assert forged.status_code == 200
        assert "suspended" not in forged.text
        fields = {"timezone": "Europe/Brussels", "primary_color": "#112233"}
        saved = post_form(web, page, f"{page}/settings", fields)
        assert saved.status_code == 303
        location = saved.headers["location"]
        assert "&n=" in location
        assert "Saved." in web.get(location).text
        tampered = web.get(location.replace("done=Saved.", "done=Call+us+now"))
        assert "Call us now" not in tampered.text
    # Sign-in's `next` comes from whoever wrote the link: its notice is dropped, not signed.
    with browser(live_server.url) as person:
        form = person.get("/dashboard/login")
        signed = person.post(
            "/dashboard/login",
            data={
                "email": account.email,
                "password": PASSWORD,
                "csrf_token": csrf_from(form.text),
                "next": f"/dashboard/account?done={lure}",
            },
        )
        assert signed.status_code == 303
        assert signed.headers["location"].startswith("/dashboard/account")
        assert "suspended" not in person.get(signed.headers["location"]).text


def test_dashboard_error_pages_refuse_frames(live_server: LiveServer, account: TestAccount) -> None:
    """They keep the navigation and the sign-out form, as every dashboard page does."""
    with signed_in(live_server.url, account.email) as web:
        for path in ("/dashboard/subaccounts/sub_99999", "/dashboard/campaigns/cam_999999"):
            missing = web.get(path)
            assert missing.status_code == 404, path
            assert missing.headers["x-frame-options"] == "DENY", path
            assert "frame-ancestors 'none'" in missing.headers["content-security-policy"], path


def test_a_signed_notice_shows_only_on_its_page_to_its_account(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount
) -> None:
    """A notice signed for one account's page (here the name of a new category, which its creator
    chose) is not shown to another account handed the link, nor on another page."""
    lure = "Your account is suspended: call +1 555 0100"
    with signed_in(live_server.url, account.email) as web:
        made = post_form(web, "/dashboard/directories", "/dashboard/categories", {"name": lure, "parent": ""})
        assert made.status_code == 303, made.text
        location = made.headers["location"]
        assert "&n=" in location
        assert "suspended" in web.get(location).text
        query = location.split("?", 1)[1].split("#", 1)[0]
        elsewhere = web.get(f"/dashboard/privacy?{query}")
        assert elsewhere.status_code == 200
        assert "suspended" not in elsewhere.text
    with signed_in(live_server.url, other_account.email) as victim:
        shown = victim.get(location)
        assert shown.status_code == 200
        assert "suspended" not in shown.text
