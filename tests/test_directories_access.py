"""Paid and login access to a directory's coupons, over real HTTP: registration, the redirect to
the business's payment page, the payment report through /v3/directoryusers/update, expiry, and
the gate the coupon pages ask (called directly too, since the coupon pages are another branch)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import select
from starlette.requests import Request

from directories_fixtures import PAY_URL, Browser, create_directory, create_user, make_campaign, v4
from helpers import assert_ok
from loyalty_fixtures import create_card, create_holder
from opencoupon.coupons import gates
from opencoupon.directories.pages import directory_gate
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, CouponSession, Event
from opencoupon.runtime import Runtime


def _paid_directory(
    account: Any, runtime: Runtime, name: str = "Gold book"
) -> tuple[dict[str, Any], Campaign]:
    campaign = make_campaign(runtime, account.id, f"{name} pizza")
    directory = create_directory(
        account, name=name, access="payment", payment_url=PAY_URL, campaigns=[f"cam_{campaign.id}"]
    )
    return directory, campaign


def _events(runtime: Runtime, account_id: int, type_: str) -> list[dict[str, Any]]:
    with runtime.db.read() as session:
        rows = session.scalars(
            select(Event).where(Event.account_id == account_id, Event.type == type_).order_by(Event.id)
        ).all()
        return [json.loads(e.data) for e in rows]


def _update(
    account: Any, directory: str, user: str, status: str, expiry: str | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"directory": directory, "user": user, "status": status}
    if expiry is not None:
        params["expiry_date"] = expiry
    return assert_ok(account.call("/v3/directoryusers/update", **params))


def test_paid_flow_end_to_end(account: Any, runtime: Runtime, browser: Browser, clock_offset: Any) -> None:
    directory, campaign = _paid_directory(account, runtime)
    code, coupon = directory["code"], f"/d/{directory['code']}/c/cam_{campaign.id}"

    # Not signed in: the coupon sends the consumer to the directory's sign-in page.
    first = browser.get(coupon)
    assert first.status_code == 303
    assert first.headers["location"] == f"/d/{code}/login?next={coupon}"

    # Registration redirects to the business's payment page with the directory and the user.
    registered = browser.register(code, "ann@example.com", first_name="Ann")
    assert registered.status_code == 303
    target = urlsplit(registered.headers["location"])
    assert (target.scheme, target.netloc, target.path) == ("https", "pay.example.com", "/checkout")
    query = dict(parse_qsl(target.query))
    assert query["plan"] == "gold"
    assert query["directory"] == directory["id"]
    user = query["user"]
    assert user.startswith("reg_")
    listed = assert_ok(account.call("/v3/directoryusers/list", directory=directory["id"]))
    assert [(u["ID"], u["email"], u["payment_status"]) for u in listed["users"]] == [
        (user, "ann@example.com", "pending")
    ]
    registered_events = _events(runtime, account.id, "directory_user_registered")
    assert [(e["directory"], e["user"]) for e in registered_events] == [(directory["id"], user)]

    # Pending: locked, and the page says why and links to the payment page.
    locked = browser.get(coupon)
    assert locked.status_code == 403
    assert "payment has not been confirmed" in locked.text
    assert f"user={user}" in locked.text

    # The payment page reports completed, with an expiry two days ahead: the coupon opens.
    expiry = (utcnow() + dt.timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
    body = _update(account, directory["id"], user, "completed", expiry)
    assert body == {
        "status": {"status": "OK"},
        "directory": directory["id"],
        "user": user,
        "payment_status": "completed",
    }
    opened = browser.get(coupon)
    assert opened.status_code == 303, opened.text
    session_url = opened.headers["location"]
    assert session_url.startswith(f"/p/{campaign.code}/")
    session_code = session_url.rsplit("/", 1)[1]
    assert len(session_code) == 21
    with runtime.db.read() as session:
        row = session.scalar(select(CouponSession).where(CouponSession.code == session_code))
        assert row is not None
        assert (row.campaign_id, row.source, row.email) == (campaign.id, "directory", "ann@example.com")
    # The member gets the same coupon session on every visit.
    assert browser.get(coupon).headers["location"] == session_url
    changed = _events(runtime, account.id, "directory_payment_status_changed")
    assert [(e["user"], e["payment_status"], e["expiry_date"]) for e in changed] == [
        (user, "completed", expiry + ":00")
    ]

    # The clock passes the expiry: locked again, and the page says since when.
    clock_offset(dt.timedelta(days=2, minutes=5))
    expired = browser.get(coupon)
    assert expired.status_code == 403
    assert f"ended on {expiry}:00 UTC" in expired.text

    # Renewed without an expiry date: no end.
    _update(account, directory["id"], user, "completed")
    assert browser.get(coupon).status_code == 303
    clock_offset(dt.timedelta(days=4000))
    assert browser.get(coupon).status_code == 303

    # Cancelled locks, and says so.
    _update(account, directory["id"], user, "cancelled")
    cancelled = browser.get(coupon)
    assert cancelled.status_code == 403
    assert "payment was cancelled" in cancelled.text
    statuses = [e["payment_status"] for e in _events(runtime, account.id, "directory_payment_status_changed")]
    assert statuses == ["completed", "completed", "cancelled"]


def test_a_repeated_report_changes_nothing_and_emits_no_event(account: Any, runtime: Runtime) -> None:
    directory, _campaign = _paid_directory(account, runtime)
    user = create_user(account, directory["id"], email="repeat@example.com")["id"]
    for _ in range(3):
        _update(account, directory["id"], user, "completed", "2030-01-01 10:00")
    assert len(_events(runtime, account.id, "directory_payment_status_changed")) == 1


def test_the_directory_page_shows_the_lock_and_how_to_pay(
    account: Any, runtime: Runtime, browser: Browser
) -> None:
    directory, _campaign = _paid_directory(account, runtime)
    browser.register(directory["code"], "page@example.com")
    page = browser.get(f"/d/{directory['code']}")
    assert page.status_code == 200
    assert "payment has not been confirmed" in page.text
    assert "Complete payment" in page.text
    as_json = browser.get(f"/d/{directory['code']}", headers={"Accept": "application/json"}).json()
    assert as_json["locked"] is True
    assert as_json["reason"] == "pending"
    assert as_json["payment_url"].startswith("https://pay.example.com/checkout?plan=gold&directory=")


def test_a_user_of_one_directory_has_no_access_to_another_directorys_coupons(
    account: Any, runtime: Runtime, browser: Browser
) -> None:
    first, _first_campaign = _paid_directory(account, runtime, "First")
    second, second_campaign = _paid_directory(account, runtime, "Second")
    registered = browser.register(first["code"], "member@example.com")
    user = dict(parse_qsl(urlsplit(registered.headers["location"]).query))["user"]
    _update(account, first["id"], user, "completed")
    # Paid in the first directory; the second one's coupon still asks to sign in there.
    answer = browser.get(f"/d/{second['code']}/c/cam_{second_campaign.id}")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"/d/{second['code']}/login")
    # The first directory's cookie renamed to the second's is refused: it names its directory.
    cookie = browser.client.cookies.get(f"ocd_{first['code']}")
    assert cookie
    browser.client.cookies.set(f"ocd_{second['code']}", cookie)
    assert browser.get(f"/d/{second['code']}/c/cam_{second_campaign.id}").status_code == 303
    # And the first directory's user ID means nothing in the second.
    refused = account.call("/v3/directoryusers/update", directory=second["id"], user=user, status="completed")
    assert refused.status_code == 404
    assert refused.json()["status"]["errors"]["error_code"] == [511]


def _request(runtime: Runtime, app: Any, browser: Browser | None, path: str = "/p/abc/xyz") -> Request:
    cookies = "; ".join(f"{k}={v}" for k, v in (browser.client.cookies.items() if browser else []))
    headers = [(b"accept", b"text/html")]
    if cookies:
        headers.append((b"cookie", cookies.encode()))
    return Request(
        {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": headers, "app": app}
    )


def test_the_registered_gate_decides_for_the_coupon_pages(
    account: Any, runtime: Runtime, app: Any, browser: Browser
) -> None:
    assert directory_gate in gates._gates
    directory, campaign = _paid_directory(account, runtime)
    outside = make_campaign(runtime, account.id, "Not in any directory")
    with runtime.db.read() as session:
        held = session.get(Campaign, campaign.id)
        free = session.get(Campaign, outside.id)
        assert held is not None
        assert free is not None
        assert gates.check(session, _request(runtime, app, None), free) is None
        anonymous = gates.check(session, _request(runtime, app, None, "/p/abc/xyz"), held)
        assert anonymous is not None
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == f"/d/{directory['code']}/login?next=/p/abc/xyz"
    registered = browser.register(directory["code"], "gate@example.com")
    user = dict(parse_qsl(urlsplit(registered.headers["location"]).query))["user"]
    with runtime.db.read() as session:
        held = session.get(Campaign, campaign.id)
        assert held is not None
        pending = gates.check(session, _request(runtime, app, browser), held)
        assert pending is not None
        assert pending.status_code == 403
        assert b"payment has not been confirmed" in bytes(pending.body)
    _update(account, directory["id"], user, "completed", "2099-12-31 23:59")
    with runtime.db.read() as session:
        held = session.get(Campaign, campaign.id)
        assert held is not None
        assert gates.check(session, _request(runtime, app, browser), held) is None


def test_a_campaign_is_as_open_as_the_most_open_directory_holding_it(
    account: Any, runtime: Runtime, browser: Browser
) -> None:
    directory, campaign = _paid_directory(account, runtime)
    assert browser.get(f"/d/{directory['code']}/c/cam_{campaign.id}").status_code == 303
    public = create_directory(account, name="Open book", access="public", campaigns=[f"cam_{campaign.id}"])
    # Anonymous visitors of a public directory go to the coupon's own page.
    answer = browser.get(f"/d/{public['code']}/c/cam_{campaign.id}")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/p/{campaign.code}"
    # And the paid directory's link no longer locks it either.
    assert (
        browser.get(f"/d/{directory['code']}/c/cam_{campaign.id}").headers["location"]
        == f"/p/{campaign.code}"
    )


def test_login_directories_open_for_signed_in_users_until_blocked(
    account: Any, runtime: Runtime, browser: Browser, second_browser: Browser
) -> None:
    campaign = make_campaign(runtime, account.id, "Members only")
    directory = create_directory(account, name="Members", access="login", campaigns=[f"cam_{campaign.id}"])
    code, coupon = directory["code"], f"/d/{directory['code']}/c/cam_{campaign.id}"
    registered = browser.register(code, "login@example.com")
    assert registered.status_code == 303
    assert registered.headers["location"] == f"/d/{code}"
    assert browser.get(coupon).headers["location"].startswith(f"/p/{campaign.code}/")

    # Another browser signs in with the password, and lands where it was going.
    wrong = second_browser.login(code, "login@example.com", "not the password")
    assert wrong.status_code == 401
    assert "not correct" in wrong.text
    signed_in = second_browser.login(code, "LOGIN@example.com", next_path=coupon)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == coupon
    assert second_browser.get(coupon).headers["location"].startswith(f"/p/{campaign.code}/")
    # The next page must be on this site.
    offsite = second_browser.login(code, "login@example.com", next_path="//evil.example.com/")
    assert offsite.headers["location"] == f"/d/{code}"

    users = v4(account, "GET", f"/v4/directory/{directory['id']}/users").json()
    blocked = v4(account, "POST", f"/v4/directory/{directory['id']}/users/{users[0]['id']}", block=True)
    assert blocked.json()["blocked"] is True
    answer = browser.get(coupon)
    assert answer.status_code == 403
    assert "blocked" in answer.text
    as_json = browser.get(coupon, headers={"Accept": "application/json"})
    assert as_json.status_code == 403
    assert as_json.json()["reason"] == "blocked"


def test_forms_refuse_a_missing_csrf_token_and_duplicate_emails(
    account: Any, runtime: Runtime, browser: Browser
) -> None:
    directory = create_directory(account, name="Forms", access="login")
    code = directory["code"]
    forged = browser.client.post(
        f"/d/{code}/register", data={"email": "x@example.com", "password": "longenough"}
    )
    assert forged.status_code == 400
    assert v4(account, "GET", f"/v4/directory/{directory['id']}/users").json() == []
    assert browser.register(code, "dup@example.com").status_code == 303
    again = browser.register(code, "dup@example.com")
    assert again.status_code == 422
    assert "already registered" in again.text
    short = browser.register(code, "short@example.com", password="short")
    assert short.status_code == 422


def test_v4_access_calls_lock_and_unlock(
    account: Any, runtime: Runtime, browser: Browser, clock_offset: Any
) -> None:
    directory, campaign = _paid_directory(account, runtime)
    registered = browser.register(directory["code"], "v4@example.com")
    user = dict(parse_qsl(urlsplit(registered.headers["location"]).query))["user"]
    coupon = f"/d/{directory['code']}/c/cam_{campaign.id}"
    path = f"/v4/directory/{directory['id']}/users/{user}/access"
    granted = v4(account, "POST", path, expires_at="2099-01-01 00:00:00").json()
    assert (granted["payment_status"], granted["expires_at"], granted["has_access"]) == (
        "completed",
        "2099-01-01 00:00:00",
        True,
    )
    assert browser.get(coupon).status_code == 303
    revoked = v4(account, "DELETE", path).json()
    assert (revoked["payment_status"], revoked["has_access"]) == ("cancelled", False)
    assert browser.get(coupon).status_code == 403
    # Without expires_at, the directory's default membership length applies.
    v4(account, "PATCH", f"/v4/directory/{directory['id']}", membership_days=30)
    regranted = v4(account, "POST", path).json()
    expected = (utcnow() + dt.timedelta(days=30)).strftime("%Y-%m-%d")
    assert regranted["expires_at"].startswith(expected)
    clock_offset(dt.timedelta(days=31))
    assert browser.get(coupon).status_code == 403


def test_single_sign_on_signs_the_user_in_once(account: Any, runtime: Runtime, browser: Browser) -> None:
    campaign = make_campaign(runtime, account.id, "SSO coupon")
    directory = create_directory(account, name="SSO", access="login", campaigns=[f"cam_{campaign.id}"])
    user = create_user(account, directory["id"], email="sso@example.com")
    sso = v4(account, "POST", f"/v4/directory/{directory['id']}/users/{user['id']}/sso").json()
    assert sso["url"].endswith(f"/d/{directory['code']}/sso/{sso['token']}")
    path = urlsplit(sso["url"]).path
    first = browser.get(path)
    assert first.status_code == 303
    assert browser.get(f"/d/{directory['code']}/c/cam_{campaign.id}").headers["location"].startswith("/p/")
    browser.client.cookies.clear()
    again = browser.get(path)
    assert again.status_code == 403


def test_a_loyalty_card_in_a_members_directory_is_for_its_members(
    account: Any, runtime: Runtime, browser: Browser, second_browser: Browser
) -> None:
    """The loyalty card pages ask the same gate as the coupon pages: joining a card of a login
    directory, or opening a holder's card, needs a signed-in member; a blocked member is refused."""
    card = create_card(account, name="Members coffee card")
    directory = create_directory(account, name="Card club", access="login", loyalty_cards=[str(card["id"])])
    code, join = directory["code"], f"/l/{card['code']}"

    # A stranger is sent to the directory's sign-in page, and cannot join by posting the form.
    first = browser.get(join)
    assert first.status_code == 303
    assert first.headers["location"] == f"/d/{code}/login?next={join}"
    assert browser.get(join, headers={"Accept": "application/json"}).status_code == 401
    posted = browser.client.post(f"{join}/join", data={"first_name": "Eve", "email": "eve@example.com"})
    assert posted.status_code == 303
    # After signing in, the browser comes back to the card page (the form's address has no page).
    assert posted.headers["location"] == f"/d/{code}/login?next={join}"
    holder = create_holder(account, card["id"])
    card_page = urlsplit(holder["url"]).path
    assert second_browser.get(card_page).status_code == 303

    # A member gets the join page and the card.
    assert browser.register(code, "member@example.com").status_code == 303
    joined = browser.get(join)
    assert joined.status_code == 200
    assert "Members coffee card" in joined.text
    assert browser.get(card_page).status_code == 200

    # Blocked: the card says why, like a coupon would.
    users = v4(account, "GET", f"/v4/directory/{directory['id']}/users").json()
    v4(account, "POST", f"/v4/directory/{directory['id']}/users/{users[0]['id']}", block=True)
    refused = browser.get(card_page)
    assert refused.status_code == 403
    assert "Members coffee card: locked" in refused.text
    assert browser.get(join, headers={"Accept": "application/json"}).json()["reason"] == "blocked"

    # A card in no directory, or in a public one, stays open to everyone.
    open_card = create_card(account, name="Open card")
    assert second_browser.get(f"/l/{open_card['code']}").status_code == 200


def test_a_member_gets_no_new_coupon_of_a_campaign_that_opens_none(
    account: Any, runtime: Runtime, browser: Browser
) -> None:
    """An inactive (or not yet started, or ended) campaign opens no session for a member either,
    as on its own page; a member who already has one keeps it."""
    held = make_campaign(runtime, account.id, "Held")
    paused = make_campaign(runtime, account.id, "Paused")
    directory = create_directory(
        account, name="Members", access="login", campaigns=[f"cam_{held.id}", f"cam_{paused.id}"]
    )
    code = directory["code"]
    assert browser.register(code, "member@example.com").status_code == 303
    assert browser.get(f"/d/{code}/c/cam_{held.id}").status_code == 303
    with runtime.db.transaction() as session:
        for campaign_id in (held.id, paused.id):
            row = session.get(Campaign, campaign_id)
            assert row is not None
            row.start_at = utcnow() + dt.timedelta(days=2)
    assert browser.get(f"/d/{code}/c/cam_{held.id}").status_code == 303
    refused = browser.get(f"/d/{code}/c/cam_{paused.id}")
    assert refused.status_code == 410
    assert "This campaign has not started yet." in refused.text
    with runtime.db.read() as session:
        made = session.scalars(select(CouponSession).where(CouponSession.campaign_id == paused.id)).all()
    assert made == []
