"""Faults found by a second review of the directories capability, each pinned by a test over real
HTTP and the real database. The races (categories moved at once, a directory's campaigns patched at
once) only show on PostgreSQL (OPENCOUPON_TEST_DATABASE_URL); they pass on SQLite too."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import httpx2
from sqlalchemy import select

from conftest import LiveServer, TestAccount
from directories_fixtures import (
    Browser,
    create_directory,
    create_user,
    make_campaign,
    v4,
)
from opencoupon.coupons.sessions import new_session
from opencoupon.models import Campaign, CouponSession
from opencoupon.runtime import Runtime

PIN = "4321"
_SCAN_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{32}$")

Send = Callable[[httpx2.Client], httpx2.Response]


def _together(live_server: LiveServer, sends: list[Send]) -> list[httpx2.Response]:
    """Each of `sends` from its own thread and connection, released at the same moment."""
    start = threading.Barrier(len(sends))
    answers: list[httpx2.Response | None] = [None] * len(sends)

    def worker(index: int) -> None:
        with httpx2.Client(base_url=live_server.url, timeout=60) as client:
            start.wait()
            answers[index] = sends[index](client)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(sends))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def _session_code(location: str) -> str:
    return location.rsplit("/", 1)[1]


def _csrf(client: httpx2.Client, path: str) -> str:
    found = _SCAN_CSRF.search(client.get(path).text)
    assert found, path
    return found.group(1)


# ---- 1. a device cookie the server did not issue ---------------------------------------------


def test_a_made_up_device_cookie_plants_no_session_that_a_member_is_then_given(
    account: TestAccount, runtime: Runtime, browser: Browser, second_browser: Browser
) -> None:
    """The coupon page stored any `oc_device` cookie as the new session's device ID, and the
    directory found a member's session by device ID `reg_<id>` alone (the newest one): a visitor
    sending `oc_device=reg_<id>` made a session that member <id> was then sent to."""
    campaign = make_campaign(runtime, account.id, "Deal")
    directory = create_directory(account, access="login", campaigns=[f"cam_{campaign.id}"])
    victim = create_user(account, directory["id"], email="victim@example.com", password="victim password 1")
    assert second_browser.register(directory["code"], "attacker@example.com").status_code == 303
    assert browser.login(directory["code"], "victim@example.com", "victim password 1").status_code == 303
    first = browser.get(f"/d/{directory['code']}/c/cam_{campaign.id}")
    assert first.status_code == 303
    victim_session = first.headers["location"]

    # The attacker's browser, signed in to the directory, with a made-up device cookie.
    signed_in_cookies = "; ".join(f"{c.name}={c.value}" for c in second_browser.client.cookies.jar)
    planted = second_browser.get(
        f"/p/{campaign.code}", headers={"Cookie": f"{signed_in_cookies}; oc_device={victim['id']}"}
    )
    assert planted.status_code == 303, planted.text
    assert planted.headers["location"].startswith(f"/p/{campaign.code}/")
    assert planted.headers["location"] != victim_session
    # The member is still sent to their own session, not to the one just made.
    again = browser.get(f"/d/{directory['code']}/c/cam_{campaign.id}")
    assert again.headers["location"] == victim_session
    # The made-up cookie was replaced by one the server issued.
    issued = planted.cookies.get("oc_device")
    assert issued
    assert _TOKEN_SHAPE.match(issued), issued
    with runtime.db.read() as session:
        row = session.scalar(
            select(CouponSession).where(CouponSession.code == _session_code(planted.headers["location"]))
        )
        assert row is not None
        assert row.device_id == issued

    # The browser that had its cookie issued gets its own session back, as any returning browser.
    assert second_browser.get(f"/p/{campaign.code}").headers["location"] == planted.headers["location"]


def test_a_device_cookie_not_of_the_servers_shape_is_replaced_and_a_real_one_kept(
    account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    campaign = make_campaign(runtime, account.id, "Deal")
    for made_up in ("reg_1", "x", "a" * 64, "a" * 31 + "!"):
        http.cookies.clear()  # only the cookie sent by hand
        opened = http.get(
            f"/p/{campaign.code}", headers={"Cookie": f"oc_device={made_up}"}, follow_redirects=False
        )
        assert opened.status_code == 303, opened.text
        issued = opened.cookies.get("oc_device")
        assert issued
        assert issued != made_up
        assert _TOKEN_SHAPE.match(issued), (made_up, issued)
        with runtime.db.read() as session:
            row = session.scalar(
                select(CouponSession).where(CouponSession.code == _session_code(opened.headers["location"]))
            )
            assert row is not None
            assert row.device_id == issued
        http.cookies.clear()
        back = http.get(
            f"/p/{campaign.code}", headers={"Cookie": f"oc_device={issued}"}, follow_redirects=False
        )
        assert back.headers["location"] == opened.headers["location"]
        assert "oc_device" not in back.cookies


def test_a_web_session_under_a_members_device_id_is_not_the_members(
    account: TestAccount, runtime: Runtime, browser: Browser
) -> None:
    """A session that is not the directory's (one planted before the coupon page checked its
    cookie) is never a member's, even under the device ID `reg_<id>` and newer than theirs."""
    campaign = make_campaign(runtime, account.id, "Deal")
    directory = create_directory(account, access="login", campaigns=[f"cam_{campaign.id}"])
    assert browser.register(directory["code"], "member@example.com").status_code == 303
    own = browser.get(f"/d/{directory['code']}/c/cam_{campaign.id}").headers["location"]
    member = v4(account, "GET", f"/v4/directory/{directory['id']}/users").json()[0]
    with runtime.db.transaction() as session:
        found = session.get(Campaign, campaign.id)
        assert found is not None
        planted = new_session(session, found, source="web", device_id=f"reg_{member['id'][4:]}").code
    assert browser.get(f"/d/{directory['code']}/c/cam_{campaign.id}").headers["location"] == own
    assert _session_code(own) != planted
