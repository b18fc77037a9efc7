"""Every destructive dashboard action asks first, with or without JavaScript.

In the browser the button's confirm() asks and marks the form confirmed. A browser without
JavaScript posts the bare form: the server then answers a page with the question, changes nothing,
and the page's button posts the same fields again, confirmed. These tests are that browser."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx2

from conftest import LiveServer, TestAccount
from coupons_fixtures import create_campaign, open_session, session_status
from dashboard_fixtures import post_form, signed_in
from directories_fixtures import PAY_URL, create_category, create_directory, create_user, v4
from helpers import assert_error, assert_ok
from loyalty_fixtures import create_card, create_holder
from opencoupon.dashboard.common import QUESTIONS
from opencoupon.runtime import Runtime
from webhooks_fixtures import Receiver, receiver  # noqa: F401 - fixture

TEMPLATES = Path(__file__).resolve().parent.parent / "src" / "opencoupon" / "templates" / "dashboard"
_FORM = re.compile(r'<form method="post" action="([^"]+)" class="dash-inline-form">(.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def _asked(response: httpx2.Response, question: str, back: str) -> tuple[str, list[tuple[str, str]]]:
    """The question page: its text, the way back, and the form its button posts."""
    assert response.status_code == 200, response.text
    assert f"<h1>{html.escape(question)}</h1>" in response.text
    assert f'href="{html.escape(back)}"' in response.text
    match = _FORM.search(response.text)
    assert match, response.text
    fields = [(html.unescape(name), html.unescape(value)) for name, value in _HIDDEN.findall(match.group(2))]
    assert ("confirmed", "yes") in fields
    return html.unescape(match.group(1)), fields


def _say_yes(web: httpx2.Client, action: str, fields: list[tuple[str, str]]) -> httpx2.Response:
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    return web.post(action, data=data)


def test_coupon_session_void_and_validate_ask_first(live_server: LiveServer, account: TestAccount) -> None:
    campaign = create_campaign(account, name="Ask first")
    code = campaign["code"]
    first, second = open_session(live_server, code), open_session(live_server, code)
    base = f"/dashboard/campaigns/{campaign['id']}"
    with signed_in(live_server.url, account.email) as web:
        page = web.get(base).text
        ids = re.findall(r"/sessions/(\d+)/void", page)
        assert len(ids) == 2
        for session_id in ids:
            action = f"{base}/sessions/{session_id}/void"
            asked = post_form(web, base, action, {"back": f"{base}?state=open"})
            posted, fields = _asked(asked, "Void this coupon?", f"{base}?state=open")
            assert posted == action
            assert ("back", f"{base}?state=open") in fields
        # Nothing happened yet.
        assert {session_status(account, c)["voided"] for c in (first, second)} == {"0"}
        done = _say_yes(web, posted, fields)
        assert done.status_code == 303
        assert done.headers["location"].startswith(f"{base}?state=open")
        assert sorted(session_status(account, c)["voided"] for c in (first, second)) == ["0", "1"]

        survivor = first if session_status(account, first)["voided"] == "0" else second
        validate = next(f"{base}/sessions/{i}/validate" for i in ids if f"{base}/sessions/{i}/void" != posted)
        asked = post_form(web, base, validate, {"back": base})
        posted, fields = _asked(asked, "Validate this coupon?", base)
        assert session_status(account, survivor)["validated"] == "0"
        assert _say_yes(web, posted, fields).status_code == 303
        assert session_status(account, survivor)["validated"] == "1"


def test_account_secret_rotation_asks_first(live_server: LiveServer, account: TestAccount) -> None:
    page = "/dashboard/account"
    with signed_in(live_server.url, account.email) as web:
        asked = post_form(web, page, f"{page}/rotate", {"grace_hours": "0"})
        posted, fields = _asked(asked, "Make a new API secret?", page)
        assert 'id="secret"' not in asked.text
        # Still the only secret: with no grace period a rotation would have ended it at once.
        assert_ok(account.call("/v3/subaccount/list"))
        rotated = _say_yes(web, posted, fields)
        assert rotated.status_code == 200
        assert 'id="secret"' in rotated.text
        assert account.call("/v3/subaccount/list").status_code == 401


def test_subaccount_block_asks_first(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    path = f"/dashboard/subaccounts/sub_{subaccount.id}"
    with signed_in(live_server.url, account.email) as web:
        posted, fields = _asked(post_form(web, path, f"{path}/block", {}), "Block this subaccount?", path)
        assert_ok(subaccount.call("/v3/coupon/list"))
        assert _say_yes(web, posted, fields).status_code == 303
        assert_error(subaccount.call("/v3/coupon/list"), 403, 101)  # "Account is blocked."


def test_loyalty_holder_void_asks_first(live_server: LiveServer, account: TestAccount) -> None:
    card = create_card(account, name="Stamps")
    holder = create_holder(account, card["id"])
    path = f"/dashboard/loyalty/{card['id']}/holders/{holder['ID']}"
    with signed_in(live_server.url, account.email) as web:
        posted, fields = _asked(post_form(web, path, f"{path}/void", {}), "Void this holder?", path)
        assert "voided" not in web.get(path).text
        assert _say_yes(web, posted, fields).status_code == 303
        assert "voided" in web.get(path).text


def test_category_delete_asks_first(live_server: LiveServer, account: TestAccount) -> None:
    food = create_category(account, 'Food\'s "best"')
    create_category(account, "Pizza", parent=food["id"])
    listing = "/dashboard/directories"
    with signed_in(live_server.url, account.email) as web:
        # The name reaches the browser's question as attribute text, never as script.
        tree = web.get(listing).text
        # The browser and the server page ask the same question, the browser naming the category.
        detail = "Campaigns in them are not deleted; they lose the category."
        assert f'data-confirm="Delete Food&#39;s &#34;best&#34; and its subcategories? {detail}"' in tree
        assert "confirm('Delete" not in tree
        asked = post_form(web, listing, f"/dashboard/categories/{food['id']}/delete", {})
        posted, fields = _asked(asked, "Delete this category and its subcategories?", f"{listing}#categories")
        assert f"<p>{detail}</p>" in asked.text
        assert len(v4(account, "GET", "/v4/categories").json()) == 2
        assert _say_yes(web, posted, fields).status_code == 303
        assert v4(account, "GET", "/v4/categories").json() == []


def test_directory_delete_asks_first(live_server: LiveServer, account: TestAccount) -> None:
    directory = create_directory(account, name="Old book & co")
    path = f"/dashboard/directories/{directory['id']}"
    with signed_in(live_server.url, account.email) as web:
        page = web.get(path).text
        assert f'action="{path}/delete"' in page
        assert 'data-confirm="Delete Old book &amp; co? Its page stops answering' in page
        # The old confirmation page's field is not a yes.
        for data in ({}, {"confirm": "yes"}):
            posted, fields = _asked(
                post_form(web, path, f"{path}/delete", data), "Delete Old book & co?", path
            )
            assert posted == f"{path}/delete"
            assert v4(account, "GET", f"/v4/directory/{directory['id']}").status_code == 200
        done = _say_yes(web, posted, fields)
        assert done.status_code == 303
        assert v4(account, "GET", f"/v4/directory/{directory['id']}").status_code == 404


def test_directory_user_revoke_asks_first(live_server: LiveServer, account: TestAccount) -> None:
    directory = create_directory(account, name="Members", access="payment", payment_url=PAY_URL)
    user = create_user(account, directory["id"], email="reader@example.com", password="reader-pass-1")
    access = f"/v4/directory/{directory['id']}/users/{user['id']}/access"
    assert v4(account, "POST", access).status_code == 200
    path = f"/dashboard/directories/{directory['id']}"
    with signed_in(live_server.url, account.email) as web:
        # The browser names the user; the server's page, which has only the form, says "this user".
        assert 'data-confirm="Revoke access for reader@example.com? They can no longer' in web.get(path).text
        revoke = f"{path}/users/{user['id']}/revoke"
        posted, fields = _asked(
            post_form(web, path, revoke, {}), "Revoke access for this user?", f"{path}#users"
        )
        status = f"/v4/directory/{directory['id']}/users/{user['id']}"
        assert v4(account, "GET", status).json()["has_access"] is True
        assert _say_yes(web, posted, fields).status_code == 303
        assert v4(account, "GET", status).json()["has_access"] is False


def test_webhook_endpoint_delete_asks_first(
    live_server: LiveServer,
    account: TestAccount,
    runtime: Runtime,
    receiver: Receiver,  # noqa: F811
) -> None:
    created = account.client.post(
        "/v4/webhooks",
        json={"url": receiver.url + "/hook", "events": ["coupon_validated"]},
        headers=account.headers,
    )
    assert created.status_code == 201, created.text
    endpoint = f"/dashboard/webhooks/{created.json()['id']}"
    with signed_in(live_server.url, account.email) as web:
        page = web.get(endpoint).text
        questions = {
            "rotate": "Rotate the signing secret?",
            "replay": "Send every event since this time again?",
            "delete": "Delete this endpoint?",
        }
        for action, question in questions.items():
            asked = post_form(web, endpoint, f"{endpoint}/{action}", {"since": "2000-01-01"})
            posted, fields = _asked(asked, question, endpoint)
            assert ("since", "2000-01-01") in fields
            # The browser's confirm() asks the same, with what the page explains below it.
            detail = re.search(r"<p>(.*?)</p>", asked.text)
            opening = re.search(rf'action="{re.escape(posted)}"[^>]* data-confirm="([^"]*)"', page)
            assert detail, action
            assert opening, action
            assert html.unescape(opening.group(1)) == f"{question} {html.unescape(detail.group(1))}"
            assert web.get(endpoint).status_code == 200
        assert _say_yes(web, posted, fields).status_code == 303
        assert web.get(endpoint).status_code == 404


def test_every_confirm_button_marks_its_form_confirmed() -> None:
    """The JavaScript path: destructive forms open with the shared macro, whose confirm() asks the
    question from a data attribute and fills the field the server looks for only on "yes"."""
    macro = (TEMPLATES / "_forms.html").read_text()
    opening = re.search(r"\{% macro ask_first_form.*?\{%- endmacro %\}", macro, re.S)
    assert opening, macro
    marks = "onsubmit=\"return confirm(this.dataset.confirm) && !!(this.confirmed.value = 'yes')\""
    assert marks in opening.group()
    assert '<input type="hidden" name="confirmed" value="">' in opening.group()
    uses = 0
    for template in sorted(TEMPLATES.glob("*.html")):
        if template.name == "_forms.html":
            continue
        text = template.read_text()
        assert "confirm(" not in text, f"{template.name}: ask with forms.ask_first_form, not inline script"
        # Each asks a question the server asks too: the second argument names it.
        keys = re.findall(r'forms\.ask_first_form\([^,]+, "([^"]+)"', text)
        assert len(keys) == text.count("forms.ask_first_form("), template.name
        for key in keys:
            assert key in QUESTIONS, f"{template.name}: no question {key!r} in dashboard.common.QUESTIONS"
        uses += len(keys)
    assert uses >= 11
