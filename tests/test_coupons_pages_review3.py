"""Consumer pages, third review: one session per device when it opens a coupon several times at
once, HEAD on every page and QR image (opening nothing), Retry-After on the wrong-PIN limit,
no-store and nosniff on pages with a session, holder or form token, what a refused form says to
a browser without cookies, and a claim racing a validation."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx2
from sqlalchemy import func, select
from sqlalchemy.orm.attributes import set_committed_value

from conftest import LiveServer
from coupons_fixtures import PIN, Acct, bulk_sessions, create_campaign, csrf_token
from directories_fixtures import create_directory
from helpers import race
from loyalty_fixtures import create_card
from opencoupon.coupons import service
from opencoupon.errors import ApiError
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, CouponSession, Event
from opencoupon.runtime import Runtime

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
NO_COOKIES = "Your browser did not send cookies: allow cookies for this site and try again."


def _pk(campaign: dict[str, Any]) -> int:
    return int(campaign["id"].removeprefix("cam_"))


def _error(answer: httpx2.Response) -> tuple[int, str]:
    """The code and text of a page's JSON refusal."""
    errors = answer.json()["status"]["errors"]
    return errors["error_code"][0], errors["error_message_description"][0]


def _opens_and_sessions(runtime: Runtime, campaign: dict[str, Any]) -> tuple[int, int]:
    with runtime.db.read() as s:
        opens = s.scalar(select(Campaign.opens_count).where(Campaign.id == _pk(campaign)))
        sessions = s.scalar(
            select(func.count()).select_from(CouponSession).where(CouponSession.campaign_id == _pk(campaign))
        )
    return int(opens or 0), int(sessions or 0)


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Each call in its own thread, all released together; the answers in the calls' order."""
    return race(len(calls), lambda index: calls[index]())


def _post_status(
    url: str, cookies: dict[str, str], path: str, data: dict[str, str], headers: dict[str, str]
) -> int:
    with httpx2.Client(base_url=url, timeout=30, cookies=cookies) as tab:
        return tab.post(path, data=data, headers=headers).status_code


def _opened_at(url: str, device: str, code: str) -> str:
    """Where GET /p/{code} sends a browser holding this device cookie."""
    with httpx2.Client(base_url=url, timeout=30, cookies={"oc_device": device}) as tab:
        answer = tab.get(f"/p/{code}")
        assert answer.status_code == 303, answer.text
        return str(answer.headers["location"])


# ---------------------------------------------------------------- one device, one session


def test_one_device_opening_a_coupon_several_times_at_once_gets_one_session(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        assert phone.get(f"/p/{create_campaign(account)['code']}").status_code == 303
        device = phone.cookies["oc_device"]
    # A few rounds: eight requests at once do not always meet inside the opening transaction.
    for _ in range(4):
        campaign = create_campaign(account)
        locations = _at_once([partial(_opened_at, live_server.url, device, campaign["code"])] * 8)
        assert len(set(locations)) == 1, locations
        assert _opens_and_sessions(runtime, campaign) == (1, 1)


# ---------------------------------------------------------------- HEAD


def test_head_of_the_coupon_address_opens_nothing(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account)
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        peek = phone.head(f"/p/{campaign['code']}")
        assert peek.status_code == 200
        assert peek.content == b""
        assert "oc_device" not in peek.headers.get("set-cookie", "")
        assert phone.head(f"/p/{campaign['code']}", headers=JSON).status_code == 200
        assert _opens_and_sessions(runtime, campaign) == (0, 0)
        opened = phone.get(f"/p/{campaign['code']}")
        assert opened.status_code == 303
        # A device that has its session: HEAD points at it, as GET does, and opens no other.
        again = phone.head(f"/p/{campaign['code']}")
        assert again.status_code == 303
        assert again.headers["location"] == opened.headers["location"]
        assert phone.head("/p/nosuchcode").status_code == 404
    assert _opens_and_sessions(runtime, campaign) == (1, 1)
    closed = create_campaign(account, status="inactive")
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        assert phone.head(f"/p/{closed['code']}").status_code == phone.get(f"/p/{closed['code']}").status_code


def test_head_answers_every_coupon_page_and_qr_image_without_a_body(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, validation_methods="pin,qr,widget")
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    path = f"/p/{campaign['code']}/{code}"
    with httpx2.Client(base_url=live_server.url, timeout=30) as client:
        # First: a HEAD is no visit, the session stays unopened (a GET would count the open).
        for page in (path, f"{path}/scan", f"/p/{campaign['code']}/staff"):
            for accept in (HTML, JSON):
                head = client.head(page, headers=accept)
                assert head.status_code == 200, page
                assert head.content == b""
                assert head.headers["content-type"].startswith(
                    "application/json" if accept is JSON else "text/html"
                )
                assert head.headers["cache-control"] == "no-store"
        with runtime.db.read() as s:
            row = s.scalar(select(CouponSession).where(CouponSession.code == code))
            assert row is not None
            assert row.opened_at is None
        assert _opens_and_sessions(runtime, campaign)[0] == 0
        for image in (f"/qr/p/{campaign['code']}", f"/qr{path}", f"/qr{path}/scan"):
            for fmt, media in (("svg", "image/svg+xml"), ("png", "image/png")):
                got, head = client.get(f"{image}.{fmt}"), client.head(f"{image}.{fmt}")
                assert head.status_code == 200, image
                assert head.content == b""
                assert head.headers["content-type"] == media
                assert head.headers["content-length"] == str(len(got.content))
        assert client.head(f"/qr/p/{campaign['code']}/{'a' * 21}.svg").status_code == 404
        assert client.head(f"/p/{campaign['code']}/{'a' * 21}").status_code == 404


# ---------------------------------------------------------------- Retry-After on wrong PINs


def test_too_many_wrong_pins_says_how_long_to_wait(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account, validation_methods="pin,qr,widget")
    staff = f"/p/{campaign['code']}/staff"
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        path = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, staff)
        for _ in range(10):
            wrong = phone.post(staff, data={"csrf": token, "pin": "0000", "code": "abcdef"}, headers=JSON)
            assert wrong.status_code == 403
        answers = {
            "staff json": phone.post(
                staff, data={"csrf": token, "pin": "0000", "code": "abcdef"}, headers=JSON
            ),
            "staff html": phone.post(
                staff, data={"csrf": token, "pin": "0000", "code": "abcdef"}, follow_redirects=True
            ),
            "phone json": phone.post(f"{path}/validate", data={"csrf": token, "pin": "0000"}, headers=JSON),
            "phone html": phone.post(
                f"{path}/validate", data={"csrf": token, "pin": "0000"}, follow_redirects=True
            ),
            "scan json": phone.post(f"{path}/scan", data={"csrf": token, "pin": "0000"}, headers=JSON),
            "scan html": phone.post(
                f"{path}/scan", data={"csrf": token, "pin": "0000"}, follow_redirects=True
            ),
        }
    for name, answer in answers.items():
        assert answer.status_code == 429, name
        assert 1 <= int(answer.headers["retry-after"]) <= 15 * 60, name
        # The window began with the first wrong PIN, moments ago: a quarter of an hour to go.
        said = _error(answer)[1] if "json" in name else answer.text
        assert "Too many wrong PINs. Try again in 15 minutes." in said, name


# ---------------------------------------------------------------- no-store, nosniff


def _form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


def _private(answer: httpx2.Response) -> bool:
    return (
        answer.headers.get("cache-control") == "no-store"
        and answer.headers.get("x-content-type-options") == "nosniff"
    )


def test_pages_with_a_session_holder_or_form_are_not_cached(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, claim_fields="firstname", validation_methods="pin,qr,widget")
    card = create_card(account)
    directory = create_directory(account)
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        opened = phone.get(f"/p/{campaign['code']}")
        path = opened.headers["location"]
        token = csrf_token(phone, path)
        answers = {
            "open": opened,
            "page": phone.get(path),
            "page json": phone.get(path, headers=JSON),
            "claim": phone.post(f"{path}/claim", data={"csrf": token, "firstname": "Ada"}, headers=JSON),
            "validate": phone.post(f"{path}/validate", data={"csrf": token, "pin": PIN}, headers=JSON),
            "scan": phone.get(f"{path}/scan"),
            "staff": phone.get(f"/p/{campaign['code']}/staff"),
            "directory sign-in": phone.get(f"/d/{directory['code']}/login"),
        }
        join_page = phone.get(f"/l/{card['code']}").text
        joined = phone.post(
            f"/l/{card['code']}/join",
            data={"form_token": _form_token(join_page), "first_name": "Ada", "email": "ada@example.com"},
        )
        assert joined.status_code == 303, joined.text
        answers["loyalty card"] = phone.get(joined.headers["location"])
        answers["loyalty card json"] = phone.get(joined.headers["location"], headers=JSON)
        session_qr = phone.get(f"/qr{path}/scan.svg")
        campaign_qr = phone.get(f"/qr/p/{campaign['code']}.svg")
    for name, answer in answers.items():
        assert answer.status_code in (200, 303), (name, answer.text)
        assert _private(answer), (name, dict(answer.headers))
    # A session's QR code holds its address: nosniff, and kept by the browser only.
    assert session_qr.headers["x-content-type-options"] == "nosniff"
    assert session_qr.headers["cache-control"] == "private, max-age=86400"
    assert campaign_qr.headers["cache-control"] == "public, max-age=86400"


# ---------------------------------------------------------------- a browser without cookies


def test_a_browser_without_cookies_is_told_to_allow_them(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account, claim_fields="firstname", validation_methods="pin,qr,widget")
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        path = phone.get(f"/p/{campaign['code']}").headers["location"]
        token = csrf_token(phone, path)
        cookies = dict(phone.cookies)
    forms = {
        "claim": (f"{path}/claim", {"csrf": token, "firstname": "Ada"}),
        "validate": (f"{path}/validate", {"csrf": token, "pin": PIN}),
        "scan": (f"{path}/scan", {"csrf": token, "pin": PIN}),
        "staff": (f"/p/{campaign['code']}/staff", {"csrf": token, "pin": PIN, "code": "abcdef"}),
    }
    with httpx2.Client(base_url=live_server.url, timeout=30) as cookieless:
        for name, (url, data) in forms.items():
            answer = cookieless.post(url, data=data, headers=JSON)
            assert answer.status_code == 403, (name, answer.text)
            assert _error(answer) == (300, NO_COOKIES), name
            cookieless.cookies.clear()
            assert NO_COOKIES in cookieless.post(url, data=data, follow_redirects=True).text, name
            cookieless.cookies.clear()
    # With its cookie but a token of another browser: the form expired, 403 on the claim too.
    with httpx2.Client(base_url=live_server.url, timeout=30, cookies=cookies) as other:
        other.cookies.set("oc_csrf", "x" * 32)
        answer = other.post(forms["claim"][0], data=forms["claim"][1], headers=JSON)
        assert answer.status_code == 403
        assert _error(answer) == (300, "The form expired. Please try again.")


# ---------------------------------------------------------------- claim racing a validation


def test_a_claim_that_read_the_coupon_before_a_validation_is_refused(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, claim_fields="firstname", validations_per_session=3)
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    path = f"/p/{campaign['code']}/{code}"
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        token = csrf_token(phone, path)
        assert (
            phone.post(f"{path}/validate", data={"csrf": token, "pin": PIN}, headers=JSON).status_code == 200
        )
    refused = None
    with runtime.db.transaction() as s:
        row = s.scalar(select(CouponSession).where(CouponSession.code == code))
        found = s.get(Campaign, _pk(campaign))
        assert row is not None
        assert found is not None
        # The row as a claim read it just before the validation committed.
        set_committed_value(row, "validation_count", 0)
        set_committed_value(row, "validated_at", None)
        try:
            service.claim(s, runtime, found, row, utcnow(), claimtype="form")
        except ApiError as err:
            refused = err
    assert refused is not None
    assert (refused.code, refused.description) == (308, "This coupon has already been validated.")
    with runtime.db.read() as s:
        assert s.scalar(select(CouponSession.claimed_at).where(CouponSession.code == code)) is None


def test_a_claim_and_a_validation_at_once_never_claim_a_used_coupon(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, claim_fields="firstname", validations_per_session=3)
    codes = bulk_sessions(runtime, campaign["id"], 16)
    for round_, code in enumerate(codes):
        path = f"/p/{campaign['code']}/{code}"
        with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
            token = csrf_token(phone, path)
            cookies = dict(phone.cookies)

        claim, validate = (
            partial(
                _post_status,
                live_server.url,
                cookies,
                f"{path}/{action}",
                {"csrf": token, **data},
                # Each its own address: the wrong-PIN limit of one address is no part of this.
                {**JSON, "X-Forwarded-For": f"10.77.{round_}.{index}"},
            )
            for index, (action, data) in enumerate(
                (("claim", {"firstname": "Ada"}), ("validate", {"pin": PIN})), start=1
            )
        )
        claimed, validated = _at_once([claim, validate])
        assert validated == 200
        with runtime.db.read() as s:
            kinds = list(
                s.scalars(
                    select(Event.type)
                    .where(Event.session == code, Event.type.in_(["coupon_claimed", "coupon_validated"]))
                    .order_by(Event.id)
                )
            )
        # Claimed first and then validated is fine; validated and then claimed must not happen.
        assert kinds in (["coupon_claimed", "coupon_validated"], ["coupon_validated"]), (round_, kinds)
        assert claimed == (200 if kinds[0] == "coupon_claimed" else 409), (round_, claimed, kinds)
