"""The dashboard's privacy page over real HTTP: "Download export" gives the API's export as a file,
Erase asks first and then blanks the person (the API's export finds nothing afterwards), bad input
answers the form again with the service's message, CSRF is required, and a subaccount reaches
only its own data."""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2

from conftest import LiveServer, TestAccount
from coupons_fixtures import create_campaign, csrf_token
from dashboard_fixtures import YES, post_form, signed_in
from opencoupon.dashboard.common import QUESTIONS
from opencoupon.dashboard.privacy import KIND_LABELS
from opencoupon.privacy.service import KINDS

PAGE = "/dashboard/privacy"
EXPORT = f"{PAGE}/export"
ERASE = f"{PAGE}/erase"
SECTIONS = ("coupon_sessions", "loyalty_users", "directory_users", "sends", "push_subscriptions", "events")


def person_email() -> str:
    return f"Ines.Privacy{time.time_ns()}@Example.org"


def claimed_session(live_server: LiveServer, account: TestAccount, email: str, phone: str = "") -> str:
    """A coupon opened and claimed on its consumer page with the person's details; its code."""
    campaign = create_campaign(account, claim_fields="firstname,lastname,email,phone")
    with httpx2.Client(base_url=live_server.url, timeout=30) as consumer:
        location = consumer.get(f"/p/{campaign['code']}").headers["location"]
        done = consumer.post(
            f"{location}/claim",
            data={
                "csrf": csrf_token(consumer, location),
                "firstname": "Ines",
                "lastname": "Quillfeather",
                "email": email,
                "phone": phone,
            },
        )
        assert done.status_code == 303, done.text
    return location.rsplit("/", 1)[1]


def api_export(account: TestAccount, email: str) -> dict[str, Any]:
    answer = account.client.get("/v4/privacy/export", params={"email": email}, headers=account.headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def notice(web: httpx2.Client, answer: httpx2.Response) -> str:
    """The notice an erasure's redirect leads to, as the page shows it."""
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert urlsplit(location).path == PAGE
    shown = web.get(location).text
    done = parse_qs(urlsplit(location).query)["done"][0]
    assert done in html.unescape(shown)
    return done


def test_download_gives_the_api_export_as_a_file(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    email = person_email()
    own = claimed_session(live_server, account, email, phone="+44 7700 900123")
    subs = claimed_session(live_server, subaccount, email.lower())
    with signed_in(live_server.url, account.email) as web:
        shown = web.get(PAGE)
        assert shown.status_code == 200
        assert f'href="{PAGE}" aria-current="page">Privacy</a>' in shown.text
        assert 'action="/dashboard/privacy/export"' in shown.text
        assert html.escape(QUESTIONS["privacy.erase"].in_full()) in shown.text

        answer = post_form(web, PAGE, EXPORT, {"email": email.upper()})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert re.fullmatch(
            r'attachment; filename="privacy-export-\d{4}-\d{2}-\d{2}\.json"',
            answer.headers["content-disposition"],
        )
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        # The master's covers its subaccount, as the API's does; the same JSON.
        assert {s["couponsession"] for s in body["coupon_sessions"]} == {own, subs}
        assert body == api_export(account, email)
        assert body["events"], "the claim events are listed"

        with_phone = post_form(web, PAGE, EXPORT, {"email": email, "phone": "+44 (7700) 900-123"})
        assert with_phone.json()["phone"] == "447700900123"


def test_erase_asks_first_then_blanks_the_person(live_server: LiveServer, account: TestAccount) -> None:
    email = person_email()
    code = claimed_session(live_server, account, email)
    with signed_in(live_server.url, account.email) as web:
        asked = post_form(web, PAGE, ERASE, {"email": email})
        assert asked.status_code == 200, asked.text
        question = QUESTIONS["privacy.erase"]
        assert f"<h1>{html.escape(question.asked(email.lower()))}</h1>" in asked.text
        assert "This cannot be undone." in asked.text
        assert f'href="{PAGE}"' in asked.text
        # Nothing happened yet.
        assert [s["couponsession"] for s in api_export(account, email)["coupon_sessions"]] == [code]

        # The question page's button: the same fields again, confirmed.
        done = notice(web, post_form(web, PAGE, ERASE, {"email": email, **YES}))
        assert done.startswith("Erased.")
        assert "coupon sessions: 1" in done
        assert all(KIND_LABELS[kind] in done for kind in KINDS)
        assert email.lower() not in done

        left = api_export(account, email)
        assert all(left[section] == [] for section in SECTIONS), left
        assert not post_form(web, PAGE, EXPORT, {"email": email}).json()["coupon_sessions"]

        again = notice(web, post_form(web, PAGE, ERASE, {"email": email, **YES}))
        assert again.startswith("Nothing was erased")
        assert "coupon sessions: 0" in again


def test_bad_input_answers_the_form_again(live_server: LiveServer, account: TestAccount) -> None:
    email = person_email()
    code = claimed_session(live_server, account, email)
    bad = [
        ({"email": ""}, "Missing parameter: email"),
        ({"email": "not an email"}, "Email address is not valid."),
        ({"email": "x" * 400 + "@example.com"}, "Email address is not valid."),
        ({"email": email, "phone": "12"}, "Invalid value in parameter: phone."),
        ({"email": email, "phone": "x" * 10_000}, "Invalid value in parameter: phone."),
        ({"email": "a\x00b@example.com"}, "Invalid character in parameter: email."),
    ]
    with signed_in(live_server.url, account.email) as web:
        for action in (EXPORT, ERASE):
            for fields, message in bad:
                # Confirmed or not: refused before anything is asked or changed.
                for extra in ({}, YES):
                    answer = post_form(web, PAGE, action, {**fields, **extra})
                    assert answer.status_code == 422, (action, fields, answer.text[:300])
                    assert "text/html" in answer.headers["content-type"]
                    assert html.escape(message) in answer.text, (action, fields)
                    # The refused form is filled in as sent.
                    if fields.get("email") == email:
                        assert f'value="{html.escape(email)}"' in answer.text
    assert [s["couponsession"] for s in api_export(account, email)["coupon_sessions"]] == [code]


def test_both_forms_need_the_csrf_token(live_server: LiveServer, account: TestAccount) -> None:
    email = person_email()
    claimed_session(live_server, account, email)
    with signed_in(live_server.url, account.email) as web:
        web.get(PAGE)
        for action in (EXPORT, ERASE):
            for token in ({}, {"csrf_token": "forged"}):
                answer = web.post(action, data={"email": email, **YES, **token})
                assert answer.status_code == 403, answer.text
                assert "coupon_sessions" not in answer.text
    assert len(api_export(account, email)["coupon_sessions"]) == 1


def test_a_subaccount_reaches_only_its_own_data(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    email = person_email()
    masters = claimed_session(live_server, account, email)
    subs = claimed_session(live_server, subaccount, email)
    with signed_in(live_server.url, subaccount.email) as web:
        assert "This covers this account only." in web.get(PAGE).text
        body = post_form(web, PAGE, EXPORT, {"email": email}).json()
        assert [s["couponsession"] for s in body["coupon_sessions"]] == [subs]
        done = notice(web, post_form(web, PAGE, ERASE, {"email": email, **YES}))
        assert "coupon sessions: 1" in done
    # The master's customer is untouched; the subaccount's own record is gone.
    left = api_export(account, email)
    assert [s["couponsession"] for s in left["coupon_sessions"]] == [masters]
    assert left["coupon_sessions"][0]["email"].lower() == email.lower()
