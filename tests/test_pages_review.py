"""Faults found by a review of the public pages, each pinned by a test over real HTTP and the real
database: a made-up device cookie opening a directory member's coupon, a client-chosen multipart
charset making lone surrogates (500s), control characters stored from page forms the API refuses,
and a refused stamp whose JSON said 200."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2
import pytest

from conftest import LiveServer, TestAccount
from coupons_fixtures import create_campaign, csrf_token
from directories_fixtures import Browser, create_directory, make_campaign
from helpers import assert_ok
from loyalty_fixtures import create_card
from opencoupon.runtime import Runtime
from test_loyalty_pages import form_token, join

SURROGATE_ESCAPE = "A\\ud800"  # what `charset=unicode_escape` decodes to a lone surrogate


def test_a_made_up_device_cookie_does_not_open_a_directory_members_coupon(
    account: TestAccount, runtime: Runtime, http: httpx2.Client, browser: Browser
) -> None:
    """A member's coupon is stored under the device ID `reg_<id>`; `GET /p/{code}` took the
    unsigned `oc_device` cookie as it came, so `oc_device=reg_6` opened member 6's coupon, name and
    email shown, ready to be claimed by someone else."""
    campaign = make_campaign(runtime, account.id, "Members' deal")
    directory = create_directory(account, access="public", campaigns=[f"cam_{campaign.id}"])
    assert browser.register(directory["code"], "vera@example.org").status_code == 303
    members = browser.get(f"/d/{directory['code']}/c/cam_{campaign.id}")
    assert members.status_code == 303
    member_session = members.headers["location"]
    users = account.call("/v3/directoryusers/list", directory=directory["id"]).json()["users"]
    member_id = users[0]["ID"]
    stranger = http.get(
        f"/p/{campaign.code}", headers={"Cookie": f"oc_device={member_id}"}, follow_redirects=False
    )
    assert stranger.status_code == 303
    assert stranger.headers["location"] != member_session
    page = http.get(stranger.headers["location"], headers={"Accept": "application/json"})
    assert "vera@example.org" not in page.text


def _claim_with_surrogate_escape(phone: httpx2.Client, location: str, content_type: str) -> httpx2.Response:
    """The session's claim form posted as multipart under `content_type`, its first name the six
    characters `\\ud800` (a lone surrogate once decoded with unicode_escape)."""
    token = csrf_token(phone, location)
    body, _ = _multipart({"csrf": token, "firstname": SURROGATE_ESCAPE, "email": "a@example.org"})
    return phone.post(f"{location}/claim", content=body, headers={"Content-Type": content_type})


def _multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "XbOuNdArY"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}; charset=unicode_escape"


def test_a_multipart_charset_cannot_make_lone_surrogates(
    account: TestAccount, live_server: LiveServer, http: httpx2.Client
) -> None:
    """Starlette decodes a multipart form with the charset the client names, any codec:
    `unicode_escape` turned `\\ud800` into a lone surrogate, a 500 on the claim form, the PIN forms
    and the sign-in pages. Other charsets than UTF-8, ASCII and Latin-1 are dropped."""
    campaign = create_campaign(account, claim_fields="firstname,email")
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        _, content_type = _multipart({})
        claimed = _claim_with_surrogate_escape(phone, location, content_type)
        assert claimed.status_code == 303, claimed.text
        body, content_type = _multipart({"csrf": csrf_token(phone, location), "pin": SURROGATE_ESCAPE})
        wrong_pin = phone.post(
            f"{location}/validate",
            content=body,
            headers={"Content-Type": content_type},
            follow_redirects=True,
        )
        assert wrong_pin.status_code in (403, 422), wrong_pin.text
    user = account.call("/v3/couponsession/data", couponsession=location.rsplit("/", 1)[1]).json()["data"][
        "user"
    ]
    assert user["firstname"] == SURROGATE_ESCAPE  # read as UTF-8: the text as sent
    body, content_type = _multipart({"email": SURROGATE_ESCAPE, "password": SURROGATE_ESCAPE})
    signin = http.post("/dashboard/login", content=body, headers={"Content-Type": content_type})
    assert signin.status_code < 500, signin.text


@pytest.mark.parametrize(
    "params",
    [
        "boundary=XbOuNdArY; charset=utf-8; charset=unicode_escape",
        "boundary=XbOuNdArY; charset=unicode_escape; charset=unicode_escape",
        'boundary="XbOuNdArY"; x="a;charset=utf-8"; charset=unicode_escape',
        "boundary=XbOuNdArY; charset=latin-1; charset=raw_unicode_escape",
    ],
)
def test_the_charset_is_read_as_the_form_parser_reads_it(
    account: TestAccount, live_server: LiveServer, params: str
) -> None:
    """The first fix read the first `charset` with a regex; the form parser takes the last one
    and keeps quoted values whole: these headers still decoded the form with unicode_escape."""
    campaign = create_campaign(account, claim_fields="firstname,email")
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        claimed = _claim_with_surrogate_escape(phone, location, f"multipart/form-data; {params}")
        assert claimed.status_code == 303, claimed.text


def test_push_subscriptions_refuse_unstorable_characters(http: httpx2.Client) -> None:
    subscription = {"endpoint": "https://push.example.com/x", "keys": {"p256dh": "k", "auth": "a"}}
    for target, endpoint in (
        ({"kind": "loyalty_holder", "code": "\ud800"}, subscription["endpoint"]),
        ({"kind": "coupon_session", "code": "abc"}, "https://push.example.com/\ud800"),
        ({"kind": "coupon_session", "code": "abc"}, "https://push.example.com/a\u0000b"),
    ):
        body = _json({"target": target, "subscription": {**subscription, "endpoint": endpoint}})
        for method in ("POST", "DELETE"):
            answer = http.request(
                method, "/push/subscriptions", content=body, headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 422, answer.text
            assert answer.json()["status"]["errors"]["error_code"] == [301]


def _json(value: Any) -> str:
    return json.dumps(value)  # ensure_ascii: a lone surrogate travels as its \\ud800 escape


def test_page_forms_refuse_control_characters_as_the_api_does(
    account: TestAccount, live_server: LiveServer, http: httpx2.Client, runtime: Runtime
) -> None:
    """The claim form and the loyalty card's join form stored NUL and escape characters (the
    API and the directory registration refuse them), which then went out in exports and webhooks."""
    campaign = create_campaign(account, claim_fields="firstname,email", custom_fields="Loyalty no")
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        location = phone.get(f"/p/{campaign['code']}").headers["location"]
        for fields in ({"firstname": "a\x00b"}, {"email": "a\x00@y.zz"}, {"custom_Loyalty no": "\x1b[31m7"}):
            token = csrf_token(phone, location)
            refused = phone.post(f"{location}/claim", data={"csrf": token, "email": "ok@y.zz", **fields})
            assert refused.status_code == 422, refused.text
            assert "invisible control characters" in refused.text
        session_code = location.rsplit("/", 1)[1]
        assert (
            account.call("/v3/couponsession/data", couponsession=session_code).json()["data"]["status"][
                "claimed"
            ]
            == "0"
        )
    card = create_card(account, type="stamp")
    refused = join(http, card["code"], first_name="Ann\x00\x1b", email="ann@example.org")
    assert refused.status_code == 422, refused.text
    assert "invisible control characters" in refused.text
    holders = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))
    assert holders["users"] == []


def test_a_refused_stamp_answers_409_in_json_as_in_html(account: TestAccount, http: httpx2.Client) -> None:
    card = create_card(account, type="stamp", pin="9876")
    location = join(http, card["code"], first_name="Li", email="li@example.org").headers["location"]
    holder = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))["users"][0]["ID"]
    assert_ok(account.call("/v3/loyaltyusers/update", loyaltycard=str(card["id"]), user=holder, voided=True))
    for accept in ("text/html", "application/json"):
        # A voided card's page offers no form any more; a form from before (here the staff page's,
        # the same kind of token) is what a phone left open sends.
        token = form_token(http.get(f"/l/{card['code']}/staff").text)
        refused = http.post(
            location + "/collect",
            data={"form_token": token, "pin": "9876", "amount": "1"},
            headers={"Accept": accept},
        )
        assert refused.status_code == 409, (accept, refused.text)
    assert re.search(r"voided", refused.json()["error"])
