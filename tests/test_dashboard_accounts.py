"""Dashboard subaccount and account pages over real HTTP: create/edit/block/expiry and "open as"
(SSO) for masters, usage figures, API secret rotation with a grace period, time zone and branding,
server-side validation and CSRF."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx2

from conftest import LiveServer, TestAccount
from dashboard_fixtures import PASSWORD, YES, post_form, signed_in
from foundation_fixtures import browser, csrf_from, path_of, sign_in
from helpers import assert_error, assert_ok

SUBS = "/dashboard/subaccounts"


def test_master_manages_and_opens_subaccounts(live_server: LiveServer, account: TestAccount) -> None:
    with signed_in(live_server.url, account.email) as web:
        bad = post_form(web, SUBS, SUBS, {"email": ""})
        assert bad.status_code == 422
        assert "Email: enter" in bad.text
        bad = post_form(web, SUBS, SUBS, {"email": "x@example.com", "expiry_date": "31/12/2027"})
        assert bad.status_code == 422
        assert "expiry_date" in bad.text
        created = post_form(
            web,
            SUBS,
            SUBS,
            {
                "email": "shop@example.com",
                "company_name": "Shop One",
                "password": PASSWORD,
                "status": "customer",
            },
        )
        assert created.status_code == 303
        sub_path = created.headers["location"].split("?")[0]
        sub_id = sub_path.rsplit("/", 1)[1]
        made_page = web.get(created.headers["location"]).text
        assert "Subaccount created." in made_page
        # max_campaigns 0 (the default) means no limit, and says so.
        assert "<dt>Campaigns</dt><dd>0 (no limit)</dd>" in made_page
        assert "Shop One" in web.get(SUBS).text

        saved = post_form(
            web,
            sub_path,
            f"{sub_path}/edit",
            {"company_name": "Shop Uno", "expiry_date": "2099-01-31", "status": "trial"},
        )
        assert saved.status_code == 303
        page = web.get(sub_path).text
        assert 'value="Shop Uno"' in page
        assert 'value="2099-01-31"' in page
        limited = post_form(web, sub_path, f"{sub_path}/edit", {"max_campaigns": "5"})
        assert limited.status_code == 303
        assert "<dt>Campaigns</dt><dd>0 (at most 5)</dd>" in web.get(sub_path).text
        bad_tz = post_form(web, sub_path, f"{sub_path}/edit", {"timezone": "Mars/Olympus"})
        assert bad_tz.status_code == 422
        assert "timezone" in bad_tz.text

        # The subaccount's own campaign shows in the master's usage figures.
        info = assert_ok(account.call("/v3/subaccount/info", subaccount=sub_id))
        sub_client = {
            "X-Client-Id": info["subaccount"]["api_key"],
            "X-Client-Secret": info["subaccount"]["api_secret"],
        }
        made = web.post("/v4/campaigns", json={"name": "Sub's campaign"}, headers=sub_client)
        assert made.status_code == 201, made.text
        assert re.search(r"<dt>Campaigns</dt><dd>1 ", web.get(sub_path).text)

        blocked = post_form(web, sub_path, f"{sub_path}/block", YES)
        assert "Blocked" in web.get(blocked.headers["location"]).text
        with browser(live_server.url) as other:
            assert sign_in(other, "shop@example.com", PASSWORD).status_code == 401
        post_form(web, sub_path, f"{sub_path}/unblock", {})

        opened = post_form(web, sub_path, f"{sub_path}/open", {})
        assert opened.status_code == 303
        assert opened.headers["location"].startswith("/sso/")
        landed = web.get(opened.headers["location"])
        assert landed.status_code == 303
        home = web.get(landed.headers["location"])
        assert "shop@example.com" in home.text
        # Now signed in as the subaccount: its campaign only, no subaccounts section.
        assert "Sub&#39;s campaign" in web.get("/dashboard/campaigns").text
        assert web.get(SUBS).status_code == 403
        assert web.post(f"{sub_path}/open", data={}).status_code in (403,)


def test_forged_and_foreign_subaccount_actions(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount, other_account: TestAccount
) -> None:
    path = f"{SUBS}/sub_{subaccount.id}"
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(path).status_code == 404
        assert post_form(stranger, SUBS, f"{path}/open", {}).status_code == 404
        assert post_form(stranger, SUBS, f"{path}/block", YES).status_code == 404
    with signed_in(live_server.url, account.email) as web:
        assert web.post(f"{path}/block", data={"csrf_token": "forged"}).status_code == 403
        assert web.post(f"{path}/open", data={}).status_code == 403
        assert "blocked" not in web.get(path).text.split("<h1>")[1].split("</h1>")[0]


def test_a_subaccount_password_needs_the_reset_pages_minimum(
    live_server: LiveServer, account: TestAccount
) -> None:
    """Creating a subaccount with a password shorter than the reset page allows shows the form
    again with the reason and the typed values; nothing is made, so nobody signs in with it."""
    with signed_in(live_server.url, account.email) as web:
        assert 'minlength="8"' in web.get(SUBS).text
        fields = {"email": "tiny-pw@example.com", "company_name": "Tiny", "password": "abc"}
        refused = post_form(web, SUBS, SUBS, fields)
        assert refused.status_code == 422
        assert "Invalid value in parameter: password. Use at least 8 characters." in refused.text
        assert 'value="tiny-pw@example.com"' in refused.text
        assert "tiny-pw@example.com" not in web.get(SUBS).text
    with browser(live_server.url) as person:
        assert sign_in(person, "tiny-pw@example.com", "abc").status_code == 401


def test_master_gives_a_subaccount_a_password_reset_link(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount, other_account: TestAccount
) -> None:
    """The login page tells a subaccount to ask its account owner for a reset link: the master's
    subaccount page makes one (a CSRF-checked post, as /v3/subaccount/reset/url makes it), and the
    subaccount chooses a new password with it and signs in."""
    path = f"{SUBS}/sub_{subaccount.id}"
    with signed_in(live_server.url, other_account.email) as stranger:
        assert post_form(stranger, SUBS, f"{path}/reset", {}).status_code == 404
    with signed_in(live_server.url, account.email) as web:
        assert f'action="{path}/reset"' in web.get(path).text
        assert web.post(f"{path}/reset", data={"csrf_token": "forged"}).status_code == 403
        shown = post_form(web, path, f"{path}/reset", {})
        assert shown.status_code == 200, shown.text
        assert shown.headers["cache-control"] == "no-store"
        found = re.search(r'id="reset-url" class="dash-secret" readonly value="([^"]+)"', shown.text)
        assert found is not None, shown.text
        assert re.fullmatch(r"http://testserver\.local/dashboard/reset/[A-Za-z0-9]{49}", found.group(1))
    link = path_of(found.group(1))
    with browser(live_server.url) as person:
        form = person.get(link)
        assert form.status_code == 200
        fields = {"password": "chosen-again-1", "password_confirm": "chosen-again-1"}
        done = person.post(link, data={**fields, "csrf_token": csrf_from(form.text)})
        assert done.status_code == 200, done.text
        assert person.get(link).status_code == 410  # one use
    with browser(live_server.url) as person:
        assert sign_in(person, subaccount.email, "chosen-again-1").status_code == 303


def test_account_secret_rotation_timezone_and_branding(live_server: LiveServer, account: TestAccount) -> None:
    page = "/dashboard/account"
    with signed_in(live_server.url, account.email) as web:
        assert account.client_id in web.get(page).text
        rotated = post_form(web, page, f"{page}/rotate", {"grace_hours": "1", **YES})
        assert rotated.status_code == 200
        secret = re.search(r'id="secret" class="dash-secret" readonly value="([^"]+)"', rotated.text).group(1)  # type: ignore[union-attr]
        # New and old secrets both work during the grace period.
        assert_ok(account.call("/v3/subaccount/list"))
        with browser(live_server.url) as api:
            answer = api.post(
                "/v3/subaccount/list", headers={"X-Client-Id": account.client_id, "X-Client-Secret": secret}
            )
            assert_ok(answer)
        bad = post_form(web, page, f"{page}/rotate", {"grace_hours": "-3", **YES})
        assert bad.status_code == 422
        assert "Grace period" in bad.text
        # Refused before the question is asked, not after the yes.
        unasked = post_form(web, page, f"{page}/rotate", {"grace_hours": "200"})
        assert unasked.status_code == 422
        assert "Grace period (hours): use a number from 0 to 168." in unasked.text
        assert "<h1>Make a new API secret?</h1>" not in unasked.text

        bad = post_form(
            web,
            page,
            f"{page}/settings",
            {"timezone": "Nowhere/City", "primary_color": "red", "logo_url": "ftp://x"},
        )
        assert bad.status_code == 422
        assert "#1f6feb" in bad.text
        assert "Logo URL" in bad.text
        bad = post_form(web, page, f"{page}/settings", {"timezone": "Nowhere/City"})
        assert bad.status_code == 422
        assert "timezone" in bad.text
        ok = post_form(
            web,
            page,
            f"{page}/settings",
            {
                "timezone": "Europe/Brussels",
                "logo_url": "https://example.com/logo.png",
                "primary_color": "#112233",
            },
        )
        assert ok.status_code == 303
        shown = web.get(page).text
        assert 'value="Europe/Brussels"' in shown
        assert 'value="#112233"' in shown
        assert "logo.png" in shown
        assert web.post(f"{page}/settings", data={"timezone": "UTC"}).status_code == 403


def _shown_secret(response: httpx2.Response) -> str:
    """The new API secret on the page a confirmed rotation answers."""
    assert response.status_code == 200, response.text
    match = re.search(r'id="secret" class="dash-secret" readonly value="([^"]+)"', response.text)
    assert match, response.text
    return match.group(1)


def test_rotation_without_grace_hands_the_api_over_to_the_shown_secret(
    live_server: LiveServer, account: TestAccount, remember_secret: Callable[[str], None]
) -> None:
    """A browser without JavaScript posts the rotate form, confirmed, with no grace period: the
    secret shown (on that page only) works on the v3 API at once and the old one gets the vendor's
    auth error, even though it was just used. Rotating again that way revokes the secret shown
    the first time. A confirmed post without the CSRF token, or from a signed-out browser,
    rotates nothing."""
    page = "/dashboard/account"

    def v3(api: httpx2.Client, secret: str) -> httpx2.Response:
        headers = {"X-Client-Id": account.client_id, "X-Client-Secret": secret}
        return api.post("/v3/subaccount/list", json={}, headers=headers)

    old = account.client_secret
    with signed_in(live_server.url, account.email) as web, browser(live_server.url) as api:
        assert_ok(v3(api, old))
        forged = web.post(f"{page}/rotate", data={"grace_hours": "0", **YES})
        assert forged.status_code == 403
        assert 'id="secret"' not in forged.text
        with browser(live_server.url) as stranger:
            signed_out = stranger.post(f"{page}/rotate", data={"grace_hours": "0", **YES})
            assert signed_out.status_code == 303
            assert signed_out.headers["location"].startswith("/dashboard/login")
        assert_ok(v3(api, old))

        first = _shown_secret(post_form(web, page, f"{page}/rotate", {"grace_hours": "0", **YES}))
        remember_secret(first)
        assert first != old
        assert_ok(v3(api, first))
        assert_error(v3(api, old), 401, 1000)
        assert first not in web.get(page).text  # shown once

        second = _shown_secret(post_form(web, page, f"{page}/rotate", {"grace_hours": "0", **YES}))
        remember_secret(second)
        assert second not in (first, old)
        assert_ok(v3(api, second))
        assert_error(v3(api, first), 401, 1000)
        assert_error(v3(api, old), 401, 1000)
