"""Sign-in for people: login, logout, CSRF, the password-reset page, the SSO landing, home."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Match

from conftest import LiveServer, TestAccount
from foundation_fixtures import browser, csrf_from, path_of, sign_in
from helpers import assert_ok
from opencoupon.app import create_app
from opencoupon.config import Settings
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account, Campaign
from opencoupon.runtime import Runtime

PASSWORD = "correct horse battery"


@pytest.fixture
def web(live_server: LiveServer) -> Iterator[httpx2.Client]:
    with browser(live_server.url) as client:
        yield client


def _sso_path(account: TestAccount, subaccount: TestAccount, **params: str) -> str:
    body = assert_ok(account.call("/v3/subaccount/sso", subaccount=f"sub_{subaccount.id}", **params))
    return path_of(body["subaccount"]["url"])


def _reset_path(account: TestAccount, subaccount: TestAccount) -> str:
    body = assert_ok(account.call("/v3/subaccount/reset/url", subaccount=f"sub_{subaccount.id}"))
    return path_of(body["url"])


def _cookie_header(response: httpx2.Response, name: str) -> str:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith(name + "="):
            return value
    raise AssertionError(f"no {name} cookie in {response.headers}")


# --- login / logout / home ---------------------------------------------------------------------


def test_login_sets_a_safe_session_cookie_and_home_lists_subaccounts(
    web: httpx2.Client, account: TestAccount, subaccount: TestAccount
) -> None:
    response = sign_in(web, account.email, PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/"
    cookie = _cookie_header(response, "oc_session").lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    home = web.get("/dashboard/")
    assert home.status_code == 200
    assert account.email in home.text
    assert f"sub_{subaccount.id}" in home.text
    assert subaccount.email in home.text
    assert home.headers["cache-control"] == "no-store"


def test_home_needs_a_session(web: httpx2.Client) -> None:
    response = web.get("/dashboard/")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?next=/dashboard/"


def test_a_dashboard_404_keeps_the_navigation_and_sign_out_when_signed_in(
    web: httpx2.Client, account: TestAccount
) -> None:
    """A missing object (a PageError) or an unknown address under /dashboard/ answers 404 inside the
    dashboard's layout for a signed-in person: navigation and sign-out, not a dead end. Signed out,
    and on the consumer pages, the plain page stays (nothing of the dashboard shown)."""
    with browser(str(web.base_url)) as stranger:
        plain = stranger.get("/dashboard/no-such-page")
        assert plain.status_code == 404
        assert "Sign out" not in plain.text
        assert 'aria-label="Dashboard"' not in plain.text
    assert sign_in(web, account.email, PASSWORD).status_code == 303
    for path in ("/dashboard/campaigns/cam_999999", "/dashboard/no-such-page"):
        missing = web.get(path)
        assert missing.status_code == 404, path
        assert 'aria-label="Dashboard"' in missing.text, path
        assert 'href="/dashboard/campaigns"' in missing.text, path
        assert 'action="/dashboard/logout"' in missing.text, path
        assert account.email in missing.text, path
        assert missing.text.count("<h1>") == 1, path  # the message once, inside the layout
    consumer = web.get("/p/zzzzzz")
    assert consumer.status_code == 404
    assert 'action="/dashboard/logout"' not in consumer.text


def test_wrong_password_is_refused(web: httpx2.Client, account: TestAccount) -> None:
    response = sign_in(web, account.email, "not the password")
    assert response.status_code == 401
    assert "Wrong email or password." in response.text
    assert "oc_session=" not in response.headers.get("set-cookie", "")
    unknown = sign_in(web, "nobody@example.com", "whatever-password")
    assert unknown.status_code == 401
    assert "Wrong email or password." in unknown.text


def test_blocked_account_cannot_sign_in(web: httpx2.Client, runtime: Runtime, account: TestAccount) -> None:
    with runtime.db.transaction() as session:
        acc = session.get(Account, account.id)
        assert acc is not None
        acc.blocked = True
    response = sign_in(web, account.email, PASSWORD)
    assert response.status_code == 401
    assert "Account is blocked." in response.text


def test_logout_ends_the_session(web: httpx2.Client, account: TestAccount) -> None:
    assert sign_in(web, account.email, PASSWORD).status_code == 303
    home = web.get("/dashboard/")
    response = web.post("/dashboard/logout", data={"csrf_token": csrf_from(home.text)})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"
    assert web.get("/dashboard/").status_code == 303


def test_login_never_redirects_to_another_site(live_server: LiveServer, account: TestAccount) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        with browser(live_server.url) as client:
            page = client.get("/dashboard/login")
            response = client.post(
                "/dashboard/login",
                data={
                    "email": account.email,
                    "password": PASSWORD,
                    "csrf_token": csrf_from(page.text),
                    "next": target,
                },
            )
        assert response.headers["location"] == "/dashboard/"


def test_login_follows_next_within_the_site(web: httpx2.Client, account: TestAccount) -> None:
    page = web.get("/dashboard/login?next=/dashboard/")
    response = web.post(
        "/dashboard/login",
        data={
            "email": account.email,
            "password": PASSWORD,
            "csrf_token": csrf_from(page.text),
            "next": "/dashboard",
        },
    )
    assert response.headers["location"] == "/dashboard"


# --- CSRF --------------------------------------------------------------------------------------


def test_forged_login_post_is_refused(
    web: httpx2.Client, live_server: LiveServer, account: TestAccount
) -> None:
    web.get("/dashboard/login")
    for data in (
        {"email": account.email, "password": PASSWORD},
        {"email": account.email, "password": PASSWORD, "csrf_token": "forged"},
    ):
        response = web.post("/dashboard/login", data=data)
        assert response.status_code == 403
        assert "could not be accepted" in response.text
    # A token taken from another browser does not match this browser's cookie.
    with browser(live_server.url) as attacker:
        token = csrf_from(attacker.get("/dashboard/login").text)
    response = web.post(
        "/dashboard/login", data={"email": account.email, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 403


def test_forged_logout_and_reset_posts_are_refused(
    web: httpx2.Client, live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    assert sign_in(web, account.email, PASSWORD).status_code == 303
    assert web.post("/dashboard/logout", data={}).status_code == 403
    assert web.get("/dashboard/").status_code == 200  # still signed in
    reset = _reset_path(account, subaccount)
    response = web.post(reset, data={"password": "new-password-1", "password_confirm": "new-password-1"})
    assert response.status_code == 403
    # The token was not used up by the forged post.
    with browser(live_server.url) as owner:
        assert owner.get(reset).status_code == 200


def test_csrf_token_is_bound_to_the_signed_in_account(web: httpx2.Client, account: TestAccount) -> None:
    anonymous_token = csrf_from(web.get("/dashboard/login").text)
    assert sign_in(web, account.email, PASSWORD).status_code == 303
    assert web.post("/dashboard/logout", data={"csrf_token": anonymous_token}).status_code == 403


# --- password reset ----------------------------------------------------------------------------


def _post_reset(
    client: httpx2.Client, path: str, password: str, confirm: str | None = None
) -> httpx2.Response:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(
        path,
        data={
            "password": password,
            "password_confirm": confirm or password,
            "csrf_token": csrf_from(page.text),
        },
    )


def test_reset_link_sets_a_new_password_once(
    web: httpx2.Client, live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    path = _reset_path(account, subaccount)
    page = web.get(path)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert web.get(path).status_code == 200  # opening it twice does not use it up
    mismatch = _post_reset(web, path, "brand-new-password", "something-else")
    assert mismatch.status_code == 422
    assert "The two passwords differ." in mismatch.text
    short = _post_reset(web, path, "short")
    assert short.status_code == 422
    done = _post_reset(web, path, "brand-new-password")
    assert done.status_code == 200
    assert "Password changed" in done.text
    # Used: the page and the form are gone.
    gone = web.get(path)
    assert gone.status_code == 410
    assert "already been used or has expired" in gone.text
    with browser(live_server.url) as other:
        assert sign_in(other, subaccount.email, "brand-new-password").status_code == 303
    with browser(live_server.url) as other:
        assert sign_in(other, subaccount.email, PASSWORD).status_code == 401


def test_used_reset_token_is_refused_on_post_too(
    web: httpx2.Client, account: TestAccount, subaccount: TestAccount
) -> None:
    path = _reset_path(account, subaccount)
    token = csrf_from(web.get(path).text)
    first = web.post(
        path, data={"password": "first-new-pass", "password_confirm": "first-new-pass", "csrf_token": token}
    )
    assert first.status_code == 200
    second = web.post(
        path, data={"password": "second-new-pass", "password_confirm": "second-new-pass", "csrf_token": token}
    )
    assert second.status_code == 410


def test_expired_reset_token_is_refused(
    web: httpx2.Client,
    account: TestAccount,
    subaccount: TestAccount,
    clock_offset: Callable[[dt.timedelta], None],
) -> None:
    path = _reset_path(account, subaccount)
    token = csrf_from(web.get(path).text)
    clock_offset(dt.timedelta(hours=1, seconds=1))
    assert web.get(path).status_code == 410
    response = web.post(
        path, data={"password": "late-password", "password_confirm": "late-password", "csrf_token": token}
    )
    assert response.status_code == 410


def test_sixteen_concurrent_uses_of_one_reset_link_set_one_password(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    """R4 for reset links: 16 people (each with the form open, so each with a valid CSRF token)
    submit different passwords at the same moment; the token is used once."""
    path = _reset_path(account, subaccount)
    clients = [browser(live_server.url) for _ in range(16)]
    forms = []
    for i, client in enumerate(clients):
        page = client.get(path)
        assert page.status_code == 200, page.text
        password = f"racing-password-{i:02d}"
        forms.append({"password": password, "password_confirm": password, "csrf_token": csrf_from(page.text)})
    barrier = threading.Barrier(16)
    answers: list[httpx2.Response | None] = [None] * 16

    def submit(i: int) -> None:
        barrier.wait()
        answers[i] = clients[i].post(path, data=forms[i])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        statuses = sorted(a.status_code for a in answers if a is not None)
        assert statuses == [200] + [410] * 15, statuses
        (winner,) = (i for i, a in enumerate(answers) if a is not None and a.status_code == 200)
        # A later use, from a form opened before the race, is refused too.
        late = clients[(winner + 1) % 16].post(path, data=forms[(winner + 1) % 16])
        assert late.status_code == 410
    finally:
        for client in clients:
            client.close()
    # Only the winner's password signs in (a few losers: sign-in attempts per email are limited).
    with browser(live_server.url) as other:
        assert sign_in(other, subaccount.email, forms[winner]["password"]).status_code == 303
    losers = [forms[i]["password"] for i in range(16) if i != winner][:3]
    for password in [*losers, PASSWORD]:
        with browser(live_server.url) as other:
            assert sign_in(other, subaccount.email, password).status_code == 401


def test_password_change_ends_older_sessions(
    web: httpx2.Client, live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    assert sign_in(web, subaccount.email, PASSWORD).status_code == 303
    assert web.get("/dashboard/").status_code == 200
    with browser(live_server.url) as other:
        assert _post_reset(other, _reset_path(account, subaccount), "rotated-password").status_code == 200
    assert web.get("/dashboard/").status_code == 303


def test_unknown_reset_token_is_410(web: httpx2.Client) -> None:
    assert web.get("/dashboard/reset/" + "a" * 49).status_code == 410
    assert web.get("/dashboard/reset/not-a-token!").status_code == 410


# --- SSO landing -------------------------------------------------------------------------------


def test_sso_link_signs_in_once(web: httpx2.Client, account: TestAccount, subaccount: TestAccount) -> None:
    path = _sso_path(account, subaccount, page="campaigns")
    response = web.get(path)
    assert response.status_code == 303
    # Later dashboard sections may not be installed: the landing falls back to home.
    assert response.headers["location"] in ("/dashboard/campaigns", "/dashboard/")
    assert "httponly" in _cookie_header(response, "oc_session").lower()
    home = web.get("/dashboard/")
    assert home.status_code == 200
    assert subaccount.email in home.text
    again = web.get(path)
    assert again.status_code == 410
    assert "already been used or has expired" in again.text


def test_account_sso_link_signs_in_the_master(web: httpx2.Client, account: TestAccount) -> None:
    body = assert_ok(account.call("/v3/account/sso"))
    response = web.get(path_of(body["subaccount"]["url"]))
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/"
    assert account.email in web.get("/dashboard/").text


def test_sso_link_expires_after_60_seconds(
    web: httpx2.Client,
    account: TestAccount,
    subaccount: TestAccount,
    clock_offset: Callable[[dt.timedelta], None],
) -> None:
    fresh = _sso_path(account, subaccount)
    stale = _sso_path(account, subaccount)
    clock_offset(dt.timedelta(seconds=50))
    assert web.get(fresh).status_code == 303
    clock_offset(dt.timedelta(seconds=61))
    response = web.get(stale)
    assert response.status_code == 410
    assert "already been used or has expired" in response.text


def test_sso_into_an_account_blocked_after_issue_is_refused(
    web: httpx2.Client, account: TestAccount, subaccount: TestAccount
) -> None:
    path = _sso_path(account, subaccount)
    assert_ok(account.call("/v4/subaccount/update", subaccount=f"sub_{subaccount.id}", block=True))
    assert web.get(path).status_code == 410


def test_unknown_sso_token_is_410(web: httpx2.Client) -> None:
    assert web.get("/sso/" + "b" * 49).status_code == 410


def test_sixteen_concurrent_uses_of_one_sso_token_sign_in_once(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    path = _sso_path(account, subaccount)
    barrier = threading.Barrier(16)
    answers: list[httpx2.Response] = []
    lock = threading.Lock()

    def open_link() -> None:
        with httpx2.Client(base_url=live_server.url, timeout=60) as client:
            barrier.wait()
            response = client.get(path)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=open_link) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 16
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [303] + [410] * 15, statuses
    signed_in = [a for a in answers if a.status_code == 303]
    assert "oc_session=" in _cookie_header(signed_in[0], "oc_session")
    assert all("oc_session=" not in a.headers.get("set-cookie", "") for a in answers if a.status_code == 410)


def _has_route(app: Any, path: str) -> bool:
    scope = {"type": "http", "path": path, "root_path": "", "method": "GET"}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


def test_sso_lands_on_the_requested_page_when_the_server_has_it(
    settings: Settings, runtime: Runtime, account: TestAccount, subaccount: TestAccount
) -> None:
    app = create_app(settings, runtime=runtime)

    def section(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.url.path)

    for path in ("/dashboard/campaigns", "/dashboard/campaigns/{campaign}/edit", "/dashboard/statistics"):
        app.add_api_route(path, section, methods=["GET"])
    with runtime.db.transaction() as session:
        now = utcnow()
        campaign = Campaign(
            account_id=subaccount.id,
            code=f"l{subaccount.id:05d}"[-6:],
            name="C",
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
    server = LiveServer(app)
    server.start()
    try:
        expected = {
            "campaigns": ({}, "/dashboard/campaigns"),
            "statistics": ({}, "/dashboard/statistics"),
            "update_campaign": (
                {"campaign": f"cam_{campaign_id}"},
                f"/dashboard/campaigns/{campaign_id}/edit",
            ),
            # A section this server may not have lands on home.
            "distribution": (
                {},
                "/dashboard/distribution" if _has_route(app, "/dashboard/distribution") else "/dashboard/",
            ),
        }
        for page, (extra, location) in expected.items():
            link = _sso_path(account, subaccount, page=page, **extra)
            with browser(server.url) as web:
                response = web.get(link)
                assert response.status_code == 303
                assert response.headers["location"] == location
    finally:
        server.stop()


def test_a_password_set_voids_the_other_open_reset_links(
    web: httpx2.Client, account: TestAccount, subaccount: TestAccount
) -> None:
    """Through a link, or by the master through the API: the links still open stop working."""
    used, other = _reset_path(account, subaccount), _reset_path(account, subaccount)
    assert web.get(other).status_code == 200
    assert _post_reset(web, used, "brand-new-password").status_code == 200
    assert web.get(other).status_code == 410
    pending = _reset_path(account, subaccount)
    assert web.get(pending).status_code == 200
    assert_ok(
        account.call("/v3/subaccount/update", subaccount=f"sub_{subaccount.id}", password="set-by-master")
    )
    assert web.get(pending).status_code == 410
