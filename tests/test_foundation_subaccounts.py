"""Subaccount calls: reset URL, SSO, account SSO, every error code of the capability, the rate
limit and Idempotency-Key."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select, update

from conftest import LiveServer, TestAccount, free_port, served_with
from coupons_fixtures import create_campaign
from dashboard_fixtures import PASSWORD
from distribution_fixtures import SmtpServer
from foundation_fixtures import browser, csrf_from, sign_in
from helpers import assert_error, assert_ok
from opencoupon.config import Settings
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account, Campaign, Job, OneTimeToken
from opencoupon.runtime import Runtime
from opencoupon.worker.runner import Runner


def _set(runtime: Runtime, account_id: int, **fields: Any) -> None:
    with runtime.db.transaction() as session:
        acc = session.get(Account, account_id)
        assert acc is not None
        for name, value in fields.items():
            setattr(acc, name, value)


def _campaign(runtime: Runtime, account_id: int) -> int:
    with runtime.db.transaction() as session:
        now = utcnow()
        campaign = Campaign(
            account_id=account_id, code=f"f{account_id:05d}"[-6:], name="SSO", created_at=now, updated_at=now
        )
        session.add(campaign)
        session.flush()
        return campaign.id


def _error_text(response: httpx2.Response) -> str:
    return str(response.json()["status"]["errors"]["error_message_description"][0])


# --- password reset URL ------------------------------------------------------------------------


def test_reset_url_is_a_one_time_dashboard_link(account: TestAccount, subaccount: TestAccount) -> None:
    body = assert_ok(account.call("/v3/subaccount/reset/url", subaccount=f"sub_{subaccount.id}"))
    assert re.fullmatch(r"http://testserver\.local/dashboard/reset/[A-Za-z0-9]{49}", body["url"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", body["expiry_date_utc"])
    other = assert_ok(account.call("/v3/subaccount/reset/url", subaccount=str(subaccount.id)))
    assert other["url"] != body["url"]


# --- SSO ---------------------------------------------------------------------------------------


def test_subaccount_sso_answers_the_vendor_shape(account: TestAccount, subaccount: TestAccount) -> None:
    body = assert_ok(account.call("/v3/subaccount/sso", subaccount=f"sub_{subaccount.id}", page="statistics"))
    sub = body["subaccount"]
    assert set(sub) == {"ID", "token", "url", "url_whitelabel"}
    assert sub["ID"] == f"sub_{subaccount.id}"
    assert re.fullmatch(r"[A-Za-z0-9]{49}", sub["token"])
    assert sub["url"] == f"http://testserver.local/sso/{sub['token']}"
    assert sub["url_whitelabel"].endswith(f"/sso/{sub['token']}")


def test_sso_update_campaign_needs_a_campaign_of_that_subaccount(
    runtime: Runtime, account: TestAccount, subaccount: TestAccount
) -> None:
    ref = f"sub_{subaccount.id}"
    response = account.call("/v3/subaccount/sso", subaccount=ref, page="update_campaign")
    assert_error(response, 422, 200)
    assert _error_text(response) == "Missing parameter: campaign"
    assert_error(
        account.call("/v3/subaccount/sso", subaccount=ref, page="update_campaign", campaign="x!"), 422, 301
    )
    not_found = account.call(
        "/v3/subaccount/sso", subaccount=ref, page="update_campaign", campaign="cam_999999"
    )
    assert_error(not_found, 404, 502)
    assert _error_text(not_found) == "Campaign ID not found."
    # The master's own campaign is not the subaccount's.
    mine = _campaign(runtime, account.id)
    assert_error(
        account.call("/v3/subaccount/sso", subaccount=ref, page="update_campaign", campaign=f"cam_{mine}"),
        404,
        502,
    )
    theirs = _campaign(runtime, subaccount.id)
    body = assert_ok(
        account.call("/v3/subaccount/sso", subaccount=ref, page="update_campaign", campaign=f"cam_{theirs}")
    )
    with runtime.db.read() as session:
        token = session.scalars(
            select(OneTimeToken)
            .where(OneTimeToken.account_id == subaccount.id)
            .order_by(OneTimeToken.id.desc())
        ).first()
        assert token is not None
        assert (token.purpose, token.page, token.target) == ("sso", "update_campaign", str(theirs))
        assert token.expires_at - token.created_at == dt.timedelta(seconds=60)
    assert body["subaccount"]["ID"] == ref


def test_campaign_is_ignored_without_update_campaign(account: TestAccount, subaccount: TestAccount) -> None:
    assert_ok(
        account.call("/v3/subaccount/sso", subaccount=f"sub_{subaccount.id}", page="campaigns", campaign="x")
    )


def test_account_sso_signs_in_the_caller(account: TestAccount) -> None:
    body = assert_ok(account.call("/v3/account/sso"))
    assert body["subaccount"]["ID"] == f"sub_{account.id}"
    assert re.fullmatch(r"[A-Za-z0-9]{49}", body["subaccount"]["token"])


def test_account_sso_works_with_subaccount_credentials(subaccount: TestAccount) -> None:
    assert_ok(subaccount.call("/v3/account/sso"))


# --- error codes -------------------------------------------------------------------------------


def test_1000_wrong_credentials(http: httpx2.Client) -> None:
    response = http.post(
        "/v3/subaccount/sso", json={"client_id": "1", "client_secret": "2", "subaccount": "sub_1"}
    )
    assert response.status_code == 401
    assert response.json()["status"]["errors"] == {
        "error_code": 1000,
        "error_message": "HTTP/1.0 401 Unauthorized. Client ID or Secret not correct.",
    }


def test_101_expired_account(runtime: Runtime, account: TestAccount) -> None:
    _set(runtime, account.id, expiry_date=utcnow().date() - dt.timedelta(days=1))
    response = account.call("/v4/subaccount/list")
    body = assert_error(response, 403, 101)
    assert body["status"]["errors"]["error_message"] == "HTTP/1.0 403 Forbidden."
    assert _error_text(response) == "Account has expired."


def test_101_expires_at_the_end_of_its_expiry_date(runtime: Runtime, account: TestAccount) -> None:
    _set(runtime, account.id, expiry_date=utcnow().date())
    assert_ok(account.call("/v4/subaccount/list"))


def test_101_blocked_account(runtime: Runtime, account: TestAccount) -> None:
    _set(runtime, account.id, blocked=True)
    response = account.call("/v4/subaccount/list")
    assert_error(response, 403, 101)
    assert _error_text(response) == "Account is blocked."


def test_101_subaccount_of_an_expired_master(
    runtime: Runtime, account: TestAccount, subaccount: TestAccount
) -> None:
    _set(runtime, account.id, expiry_date=utcnow().date() - dt.timedelta(days=1))
    assert_error(subaccount.call("/v3/account/sso"), 403, 101)


def test_101_sso_into_a_blocked_subaccount(account: TestAccount, subaccount: TestAccount) -> None:
    ref = f"sub_{subaccount.id}"
    assert_ok(account.call("/v4/subaccount/update", subaccount=ref, block=True))
    response = account.call("/v3/subaccount/sso", subaccount=ref)
    assert_error(response, 403, 101)
    assert _error_text(response) == "Account is blocked."
    assert_error(subaccount.call("/v3/account/sso"), 403, 101)


def test_a_blocked_subaccounts_objects_keep_working_for_consumers_and_its_master(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    """As docs/api.md says: a block ends the subaccount's own access only; its coupon pages open
    and its master still manages its campaigns."""
    campaign = create_campaign(subaccount, title="Free coffee")
    ref = f"sub_{subaccount.id}"
    assert_ok(account.call("/v4/subaccount/update", subaccount=ref, block=True))
    assert_error(subaccount.call("/v3/coupon/list"), 403, 101)
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        opened = phone.get(f"/p/{campaign['code']}")
        assert opened.status_code == 303
        assert phone.get(opened.headers["location"]).status_code == 200
    info = assert_ok(account.call("/v3/coupon/info", campaign=campaign["id"]))
    assert info["coupon_info"]["ID"] == campaign["id"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v4/subaccount/list", {}),
        ("/v3/subaccount/list", {}),
        ("/v4/subaccount", {"subaccount": "sub_1"}),
        ("/v4/subaccount/create", {"email": "x@example.com"}),
        ("/v4/subaccount/update", {"subaccount": "sub_1"}),
        ("/v3/subaccount/reset/url", {"subaccount": "sub_1"}),
        ("/v3/subaccount/sso", {"subaccount": "sub_1"}),
    ],
)
def test_102_subaccount_credentials_cannot_manage_subaccounts(
    subaccount: TestAccount, path: str, params: dict[str, str]
) -> None:
    response = subaccount.call(path, **params)
    assert_error(response, 403, 102)
    assert _error_text(response) == "You are trying to use subaccount credentials to manage subaccounts."


@pytest.mark.parametrize(
    "path", ["/v4/subaccount", "/v4/subaccount/update", "/v3/subaccount/reset/url", "/v3/subaccount/sso"]
)
def test_200_missing_subaccount(account: TestAccount, path: str) -> None:
    response = account.call(path)
    assert_error(response, 422, 200)
    assert _error_text(response) == "Missing parameter: subaccount"


@pytest.mark.parametrize("email", [None, "", "   "])
def test_200_missing_email(account: TestAccount, email: str | None) -> None:
    """Left out or empty, the email is missing (the vendor's 200), not malformed (305)."""
    fields = {} if email is None else {"email": email}
    response = account.call("/v4/subaccount/create", first_name="No email", **fields)
    assert_error(response, 422, 200)
    assert _error_text(response) == "Missing parameter: email"


def test_max_campaigns_bounds_a_subaccounts_campaigns(account: TestAccount, subaccount: TestAccount) -> None:
    """A master's max_campaigns on a subaccount (0: no limit) stops the subaccount's campaign
    creation at that many (309, nothing stored); info reports what is left as
    available_campaigns, and a deleted campaign frees its place."""
    sub_id = f"sub_{subaccount.id}"
    info = assert_ok(account.call("/v4/subaccount", subaccount=sub_id))["subaccount"]
    assert info["available_campaigns"] == ""
    assert_ok(account.call("/v4/subaccount/update", subaccount=sub_id, max_campaigns=2))
    made = []
    for name in ("One", "Two"):
        created = subaccount.client.post("/v4/campaigns", json={"name": name}, headers=subaccount.headers)
        assert created.status_code == 201, created.text
        made.append(created.json()["id"])
    third = subaccount.client.post("/v4/campaigns", json={"name": "Three"}, headers=subaccount.headers)
    assert_error(third, 422, 309)
    assert "at most 2 campaigns" in _error_text(third)
    info = assert_ok(account.call("/v4/subaccount", subaccount=sub_id))["subaccount"]
    assert (info["has_campaigns"], info["available_campaigns"]) == ("2", "0")
    deleted = subaccount.client.delete(f"/v4/campaigns/{made[0]}", headers=subaccount.headers)
    assert deleted.status_code in (200, 204), deleted.text
    again = subaccount.client.post("/v4/campaigns", json={"name": "Three"}, headers=subaccount.headers)
    assert again.status_code == 201, again.text
    # The master itself has no limit set.
    mine = account.client.post("/v4/campaigns", json={"name": "Master's"}, headers=account.headers)
    assert mine.status_code == 201, mine.text


def test_an_empty_max_campaigns_is_not_given(account: TestAccount, subaccount: TestAccount) -> None:
    """`max_campaigns=` (a form with the field left empty) leaves the limit as it is, as an empty
    number does in every other call; it was refused with 300."""
    sub_id = f"sub_{subaccount.id}"
    assert_ok(account.call("/v4/subaccount/update", subaccount=sub_id, max_campaigns=3))
    updated = assert_ok(
        account.call("/v4/subaccount/update", subaccount=sub_id, max_campaigns="", first_name="Ann")
    )
    assert (updated["subaccount"]["max_campaigns"], updated["subaccount"]["first_name"]) == ("3", "Ann")
    assert_error(account.call("/v4/subaccount/update", subaccount=sub_id, max_campaigns="two"), 422, 300)
    assert_error(account.call("/v4/subaccount/update", subaccount=sub_id, max_campaigns=-1), 422, 300)


@pytest.mark.parametrize("value", ["sub_abc", "sub_1;drop", "cam_12", "-1", "sub_"])
@pytest.mark.parametrize("path", ["/v3/subaccount/info", "/v3/subaccount/reset/url", "/v3/subaccount/sso"])
def test_301_malformed_subaccount_id(account: TestAccount, path: str, value: str) -> None:
    response = account.call(path, subaccount=value)
    body = assert_error(response, 422, 301)
    assert body["status"]["errors"]["error_message"] == "HTTP/1.0 422 Unprocessable entity."
    assert _error_text(response) == "Invalid character in parameter: subaccount."


def test_301_characters_no_database_can_store(account: TestAccount) -> None:
    response = account.call("/v4/subaccount/create", email="a@example.com", first_name="nul\x00byte")
    assert_error(response, 422, 301)
    assert _error_text(response) == "Invalid character in parameter: first_name."


def test_302_value_not_in_the_list(account: TestAccount, subaccount: TestAccount) -> None:
    response = account.call("/v4/subaccount/create", email="s302@example.com", status="gold")
    assert_error(response, 422, 302)
    assert _error_text(response).startswith("Value not allowed in parameter: status.")
    response = account.call("/v3/subaccount/sso", subaccount=f"sub_{subaccount.id}", page="billing")
    assert_error(response, 422, 302)
    assert _error_text(response).startswith("Value not allowed in parameter: page.")
    # Left empty, an optional choice is not given: the default applies.
    sub = assert_ok(account.call("/v4/subaccount/update", subaccount=f"sub_{subaccount.id}", status=""))
    assert sub["subaccount"]["status"] in ("trial", "customer")
    sso = assert_ok(account.call("/v3/subaccount/sso", subaccount=f"sub_{subaccount.id}", page=""))
    assert sso["subaccount"]["url"]


@pytest.mark.parametrize("value", ["2026/01/01", "01-01-2026", "2026-13-01", "tomorrow"])
def test_303_bad_expiry_date(account: TestAccount, value: str) -> None:
    response = account.call("/v4/subaccount/create", email="s303@example.com", expiry_date=value)
    assert_error(response, 422, 303)
    assert _error_text(response) == "Invalid format in parameter: expiry_date. Required format: yyyy-MM-dd"


def test_304_email_exists(account: TestAccount, other_account: TestAccount) -> None:
    response = account.call("/v4/subaccount/create", email=other_account.email.upper())
    assert_error(response, 422, 304)
    assert _error_text(response) == "Email already exists."


@pytest.mark.parametrize(
    "value",
    [
        "not-an-email",
        "a@b",
        "two@@example.com",
        "sp ace@example.com",
        # Display-name syntax: stored as typed, mailed to another address, no sign-in possible.
        "<shop2@example.com>",
        '"a"<attacker@evil.example>',
        "Shop <shop2@example.com>",
        "a(comment)@example.com",
        "one@example.com,two@example.com",
        "one@example.com;two@example.com",
        "zero\u200bwidth@example.com",
        "bell\x07@example.com",
        "nb\u00a0sp@example.com",
    ],
)
def test_305_invalid_email(account: TestAccount, subaccount: TestAccount, value: str) -> None:
    response = account.call("/v4/subaccount/create", email=value)
    assert_error(response, 422, 305)
    assert _error_text(response) == "Email address is not valid."
    changed = account.call("/v4/subaccount/update", subaccount=f"sub_{subaccount.id}", email=value)
    assert_error(changed, 422, 305)
    assert (
        assert_ok(account.call("/v4/subaccount", subaccount=f"sub_{subaccount.id}"))["subaccount"]["email"]
        == subaccount.email
    )


def test_a_plain_address_with_other_characters_is_taken(account: TestAccount) -> None:
    for email in [f"o'brien+tag-{time.time_ns()}@example.com", f"zoë.{time.time_ns()}@exämple.com"]:
        assert (
            assert_ok(account.call("/v4/subaccount/create", email=email, password="password123"))[
                "subaccount"
            ]["email"]
            == email
        )


@pytest.mark.parametrize(
    "path", ["/v4/subaccount", "/v4/subaccount/update", "/v3/subaccount/reset/url", "/v3/subaccount/sso"]
)
def test_510_unknown_subaccount(account: TestAccount, path: str) -> None:
    response = account.call(path, subaccount="sub_999999999")
    body = assert_error(response, 404, 510)
    assert body["status"]["errors"]["error_message"] == "HTTP/1.0 404 Not Found."
    assert _error_text(response) == "Subaccount ID not correct."


def test_too_long_values_are_refused_not_crashed(account: TestAccount) -> None:
    assert_error(
        account.call("/v4/subaccount/create", email="long@example.com", first_name="x" * 101), 422, 300
    )
    assert_error(
        account.call("/v4/subaccount/create", email="big@example.com", max_campaigns=2**40), 422, 300
    )


def test_300_a_webhook_endpoint_that_v4_webhooks_would_refuse(
    settings: Settings, runtime: Runtime, account: TestAccount, subaccount: TestAccount
) -> None:
    """`webhook_endpoint` is checked by the rules of `/v4/webhooks` when it is set: it answered OK,
    and every delivery to it was then refused ("refused: URL must use https") for days."""
    ref = f"sub_{subaccount.id}"
    refused = account.call("/v4/subaccount/update", subaccount=ref, webhook_endpoint="not a url")
    assert_error(refused, 422, 300)
    assert _error_text(refused) == "Invalid value in parameter: webhook_endpoint. URL must use https."
    email = f"hook-{time.time_ns()}@example.com"
    made = account.call(
        "/v4/subaccount/create", email=email, password="password123", webhook_endpoint="ftp://x.io/h"
    )
    assert_error(made, 422, 300)
    assert _count_subaccounts(runtime, email) == 0
    # The server's defaults (no private targets): what /v4/webhooks refuses, the field refuses too.
    with (
        served_with(settings, allow_private_webhooks=False) as (server, _runtime),
        httpx2.Client(base_url=server.url, timeout=30) as client,
    ):
        for url, reason in [
            ("http://example.com/hook", "URL must use https."),
            ("https://127.0.0.1:22/x", "URL points to a non-public address."),
        ]:
            hook = client.post("/v4/webhooks", json={"url": url, "events": ["*"]}, headers=account.headers)
            assert_error(hook, 422, 300)
            field = {"subaccount": ref, "webhook_endpoint": url}
            answer = client.post("/v4/subaccount/update", json=field, headers=account.headers)
            assert_error(answer, 422, 300)
            assert _error_text(answer) == f"Invalid value in parameter: webhook_endpoint. {reason}"
    assert assert_ok(account.call("/v4/subaccount", subaccount=ref))["subaccount"]["webhook_endpoint"] == ""
    kept = account.call("/v4/subaccount/update", subaccount=ref, webhook_endpoint="https://example.com/hook")
    assert assert_ok(kept)["subaccount"]["webhook_endpoint"] == "https://example.com/hook"
    cleared = account.call("/v4/subaccount/update", subaccount=ref, webhook_endpoint="")
    assert assert_ok(cleared)["subaccount"]["webhook_endpoint"] == ""


def test_timezone_and_language_are_checked_and_answered(account: TestAccount) -> None:
    """`timezone` was stored but in no answer (a client could not read back what it set), and
    `language` took any text ("zz-top!")."""
    email = f"tz-{time.time_ns()}@example.com"
    made = assert_ok(account.call("/v4/subaccount/create", email=email, password="password123"))["subaccount"]
    assert (made["timezone"], made["language"]) == ("UTC", "en")
    ref = made["ID"]
    changed = account.call("/v4/subaccount/update", subaccount=ref, timezone="Europe/Brussels", language="FR")
    assert (assert_ok(changed)["subaccount"]["timezone"], changed.json()["subaccount"]["language"]) == (
        "Europe/Brussels",
        "fr",
    )
    info = assert_ok(account.call("/v4/subaccount", subaccount=ref))["subaccount"]
    [listed] = [s for s in assert_ok(account.call("/v4/subaccount/list"))["subaccounts"] if s["ID"] == ref]
    for shown in (info, listed):
        assert (shown["timezone"], shown["language"]) == ("Europe/Brussels", "fr")
    for bad in ["zz-top!", "english", "e", "e1"]:
        refused = account.call("/v4/subaccount/update", subaccount=ref, language=bad)
        assert_error(refused, 422, 300)
        assert _error_text(refused).startswith("Invalid value in parameter: language.")
        other = f"lang-{time.time_ns()}@example.com"
        assert_error(
            account.call("/v4/subaccount/create", email=other, password="password123", language=bad), 422, 300
        )
        assert _count_subaccounts_of(account, other) == 0
    # Left empty, it is not given: the language stays.
    kept = assert_ok(account.call("/v4/subaccount/update", subaccount=ref, language=""))["subaccount"]
    assert kept["language"] == "fr"


def _count_subaccounts_of(master: TestAccount, email: str) -> int:
    listed = assert_ok(master.call("/v4/subaccount/list"))["subaccounts"]
    return sum(1 for s in listed if s["email"] == email)


def test_300_a_password_shorter_than_the_reset_page_allows(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    """Create and update refuse a password the dashboard's reset page would refuse (fewer than 8
    characters), saying why; nothing is made or changed, and 8 characters are enough."""
    for call, fields in (
        ("/v4/subaccount/create", {"email": "short-pw@example.com"}),
        ("/v3/subaccount/create", {"email": "short-pw@example.com"}),
        ("/v4/subaccount/update", {"subaccount": f"sub_{subaccount.id}"}),
    ):
        body = assert_error(account.call(call, password="abc", **fields), 422, 300)
        assert _error_text_of(body) == "Invalid value in parameter: password. Use at least 8 characters."
    listed = assert_ok(account.call("/v4/subaccount/list"))["subaccounts"]
    assert "short-pw@example.com" not in [sub["email"] for sub in listed]
    with browser(live_server.url) as web:
        assert sign_in(web, "short-pw@example.com", "abc").status_code == 401
    assert_ok(account.call("/v4/subaccount/update", subaccount=f"sub_{subaccount.id}", password="8-chars!"))
    with browser(live_server.url) as web:
        assert sign_in(web, subaccount.email, "8-chars!").status_code == 303


def _error_text_of(body: dict[str, Any]) -> str:
    return str(body["status"]["errors"]["error_message_description"][0])


# --- rate limit --------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(settings: Settings, account: TestAccount) -> None:
    with (
        served_with(settings, rate_limit_per_second=0.1, rate_limit_burst=2) as (server, _runtime),
        httpx2.Client(base_url=server.url, timeout=30) as client,
    ):
        # Someone else claiming this client ID with a wrong secret does not use up its bucket.
        squatter = {"X-Client-Id": account.client_id, "X-Client-Secret": "wrong"}
        squatted = [client.post("/v4/subaccount/list", headers=squatter) for _ in range(3)]
        answers = [client.post("/v4/subaccount/list", headers=account.headers) for _ in range(3)]
        other = client.post("/v4/subaccount/list", headers={"X-Client-Id": "9", "X-Client-Secret": "x"})
    assert [a.status_code for a in squatted] == [401, 401, 429]
    assert [a.status_code for a in answers] == [200, 200, 429]
    body = assert_error(answers[2], 429, 429)
    assert body["status"]["errors"]["error_message"] == "HTTP/1.0 429 Too Many Requests."
    assert int(answers[2].headers["Retry-After"]) >= 1
    # Buckets are per client: another client ID is not held back by this one.
    assert other.status_code == 401


# --- Idempotency-Key ---------------------------------------------------------------------------


def _count_subaccounts(runtime: Runtime, email: str) -> int:
    with runtime.db.read() as session:
        return int(
            session.scalar(select(func.count()).select_from(Account).where(Account.email == email)) or 0
        )


def test_idempotent_retry_gets_the_same_answer_and_no_second_effect(
    runtime: Runtime, account: TestAccount
) -> None:
    email = f"idem-{account.id}@example.com"
    headers = {**account.headers, "Idempotency-Key": "create-1"}
    first = account.client.post("/v4/subaccount/create", json={"email": email}, headers=headers)
    second = account.client.post("/v4/subaccount/create", json={"email": email}, headers=headers)
    assert_ok(first)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert _count_subaccounts(runtime, email) == 1
    # Another key is another request: this one fails because the email now exists.
    assert_error(
        account.client.post(
            "/v4/subaccount/create",
            json={"email": email},
            headers={**account.headers, "Idempotency-Key": "k2"},
        ),
        422,
        304,
    )


def test_a_retry_by_another_alias_encoding_or_method_is_the_same_request(
    runtime: Runtime, account: TestAccount
) -> None:
    """The same call with the same parameters, through its v3 alias, with a trailing slash, as a
    form ("2" for 2) or as a GET with a query string, is a retry: replayed, not refused (306) nor
    run again. A v3 write sent as GET honours the key too (it ran twice)."""
    email = f"idem-alias-{account.id}@example.com"
    key = {**account.headers, "Idempotency-Key": "alias-1"}
    first = account.client.post(
        "/v4/subaccount/create", json={"email": email, "max_campaigns": 2}, headers=key
    )
    assert_ok(first)
    retries = [
        account.client.post(
            "/v3/subaccount/create/", data={"email": email, "max_campaigns": "2"}, headers=key
        ),
        account.client.get(
            "/v3/subaccount/create", params={"email": email, "max_campaigns": "2"}, headers=key
        ),
    ]
    for retry in retries:
        assert retry.status_code == 200, retry.text
        assert (retry.json(), retry.headers["Idempotent-Replayed"]) == (first.json(), "true")
    assert _count_subaccounts(runtime, email) == 1

    by_get = f"idem-get-{account.id}@example.com"
    key = {**account.headers, "Idempotency-Key": "get-1"}
    once = account.client.get("/v3/subaccount/create", params={"email": by_get}, headers=key)
    again = account.client.get("/v3/subaccount/create", params={"email": by_get}, headers=key)
    assert_ok(once)
    assert (again.json(), again.headers["Idempotent-Replayed"]) == (once.json(), "true")
    assert _count_subaccounts(runtime, by_get) == 1


def test_same_key_with_another_body_is_306(account: TestAccount) -> None:
    headers = {**account.headers, "Idempotency-Key": "create-306"}
    assert_ok(
        account.client.post("/v4/subaccount/create", json={"email": f"a{account.id}@ex.com"}, headers=headers)
    )
    response = account.client.post(
        "/v4/subaccount/create", json={"email": f"b{account.id}@ex.com"}, headers=headers
    )
    assert_error(response, 422, 306)
    assert _error_text(response) == "This Idempotency-Key was used with a different request."


def test_keys_are_per_client(account: TestAccount, other_account: TestAccount) -> None:
    key = {"Idempotency-Key": "shared-key"}
    a = account.client.post(
        "/v4/subaccount/create", json={"email": f"pa{account.id}@ex.com"}, headers={**account.headers, **key}
    )
    b = other_account.client.post(
        "/v4/subaccount/create",
        json={"email": f"pb{account.id}@ex.com"},
        headers={**other_account.headers, **key},
    )
    assert_ok(a)
    assert_ok(b)
    assert a.json()["subaccount"]["ID"] != b.json()["subaccount"]["ID"]


def test_failed_requests_are_not_remembered(account: TestAccount) -> None:
    headers = {**account.headers, "Idempotency-Key": "retry-after-fix"}
    assert_error(
        account.client.post("/v4/subaccount/create", json={"email": "bad"}, headers=headers), 422, 305
    )
    # The corrected request may reuse the key: the failed one was rolled back with its claim.
    fixed = account.client.post(
        "/v4/subaccount/create", json={"email": f"ok{account.id}@ex.com"}, headers=headers
    )
    assert_ok(fixed)


def test_ten_concurrent_creates_with_one_key_create_one_subaccount(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    email = f"race-{account.id}@example.com"
    headers = {**account.headers, "Idempotency-Key": f"race-{account.id}"}
    barrier = threading.Barrier(10)
    answers: list[httpx2.Response] = []
    lock = threading.Lock()

    def create() -> None:
        with httpx2.Client(base_url=live_server.url, timeout=60) as client:
            barrier.wait()
            response = client.post("/v4/subaccount/create", json={"email": email}, headers=headers)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 10
    assert _count_subaccounts(runtime, email) == 1
    ok = [a for a in answers if a.status_code == 200]
    # Every duplicate waits for the first to commit and then gets its answer, replayed.
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    assert ok
    assert all(a.json() == ok[0].json() for a in ok)
    assert sum(1 for a in ok if "Idempotent-Replayed" not in a.headers) == 1


def _create(acc: TestAccount, email: str, key: str) -> httpx2.Response:
    headers = {**acc.headers, "Idempotency-Key": key}
    return acc.client.post("/v4/subaccount/create", json={"email": email}, headers=headers)


def test_keys_are_kept_for_24_hours(
    account: TestAccount, clock_offset: Callable[[dt.timedelta], None]
) -> None:
    assert_ok(_create(account, f"d1{account.id}@ex.com", "daily-job"))
    clock_offset(dt.timedelta(hours=23, minutes=59))
    assert_error(_create(account, f"d2{account.id}@ex.com", "daily-job"), 422, 306)
    clock_offset(dt.timedelta(hours=24, minutes=1))
    later = _create(account, f"d2{account.id}@ex.com", "daily-job")
    assert_ok(later)
    assert "Idempotent-Replayed" not in later.headers


def test_overlong_idempotency_key_is_refused(account: TestAccount) -> None:
    assert_error(_create(account, f"lk{account.id}@ex.com", "k" * 256), 422, 300)


def test_a_subaccount_made_without_password_is_emailed_a_link_to_set_one(
    account: TestAccount, live_server: LiveServer, runtime: Runtime, dist_smtp: SmtpServer
) -> None:
    """As the vendor does: created without `password`, the subaccount receives a one-time link to
    set one (sent by the worker through its master's email settings) and can sign in once it has
    used it; created with a password, it gets no email."""
    sender = "hi@agency.example"
    smtp = {"host": dist_smtp.host, "port": dist_smtp.port, "tls": "none", "sender_email": sender}
    configured = account.client.put("/v4/integrations/email", json=smtp, headers=account.headers)
    assert configured.status_code == 200, configured.text
    invited = f"invited-{time.time_ns()}@example.com"
    chosen = f"chosen-{time.time_ns()}@example.com"
    assert_ok(account.call("/v4/subaccount/create", email=invited, company_name="Corner shop"))
    assert_ok(account.call("/v4/subaccount/create", email=chosen, password="chosen-password-1"))
    assert dist_smtp.handler.messages == []  # sent by the worker, once the create has committed
    Runner(runtime).run_until_idle()
    assert dist_smtp.handler.to(chosen) == []
    [received] = dist_smtp.handler.to(invited)
    assert received.mail_from == sender
    text = received.message.get_content()
    found = re.search(r"http://testserver\.local(/dashboard/reset/[A-Za-z0-9]{49})", text)
    assert found is not None
    with browser(live_server.url) as web:
        form = web.get(found.group(1))
        assert form.status_code == 200
        fields = {"password": "first-own-password", "password_confirm": "first-own-password"}
        done = web.post(found.group(1), data={**fields, "csrf_token": csrf_from(form.text)})
        assert done.status_code == 200, done.text
    with browser(live_server.url) as web:
        assert sign_in(web, invited, "first-own-password").status_code == 303


def test_a_subaccount_blocked_before_the_worker_ran_gets_no_password_email(
    account: TestAccount, live_server: LiveServer, runtime: Runtime, dist_smtp: SmtpServer
) -> None:
    """Blocked between the create and the worker (a mistaken invitation, SMTP down meanwhile): the
    worker made a setup link anyway and mailed it, and that link set the password after an unblock
    although a block ends the open links for good. Now the job ends without a link or an email;
    after the unblock the master hands out /v3/subaccount/reset/url."""
    smtp = {
        "host": dist_smtp.host,
        "port": dist_smtp.port,
        "tls": "none",
        "sender_email": "hi@agency.example",
    }
    assert account.client.put("/v4/integrations/email", json=smtp, headers=account.headers).status_code == 200
    invited = f"blocked-{time.time_ns()}@example.com"
    sub = assert_ok(account.call("/v4/subaccount/create", email=invited))["subaccount"]["ID"]
    assert_ok(account.call("/v4/subaccount/update", subaccount=sub, block="true"))
    Runner(runtime).run_until_idle()
    assert_ok(account.call("/v4/subaccount/update", subaccount=sub, block="false"))
    Runner(runtime).run_until_idle()
    assert dist_smtp.handler.to(invited) == []
    payload = f'{{"account_id": {sub.removeprefix("sub_")}}}'
    with runtime.db.read() as session:
        job = session.scalars(select(Job).where(Job.payload == payload)).one()
        assert job.status == "done"
        links = session.scalar(
            select(func.count()).select_from(OneTimeToken).where(OneTimeToken.account_id == int(sub[4:]))
        )
        assert links == 0
    link = assert_ok(account.call("/v3/subaccount/reset/url", subaccount=sub))["url"]
    with browser(live_server.url) as web:
        path = link.removeprefix("http://testserver.local")
        form = web.get(path)
        fields = {"password": "set-after-unblock", "password_confirm": "set-after-unblock"}
        assert web.post(path, data={**fields, "csrf_token": csrf_from(form.text)}).status_code == 200
        assert sign_in(web, invited, "set-after-unblock").status_code == 303


def test_the_password_email_goes_through_the_servers_own_smtp_on_loopback(
    account: TestAccount, settings: Settings, dist_smtp: SmtpServer
) -> None:
    """Private targets are refused for tenants' hosts, not for the server's own settings (a local
    relay), as for coupon emails."""
    invited = f"relay-{time.time_ns()}@example.com"
    with served_with(
        settings,
        allow_private_webhooks=False,
        smtp_host=dist_smtp.host,
        smtp_port=dist_smtp.port,
        smtp_tls="none",
        smtp_sender_email="noreply@opencoupon.example",
    ) as (server, runtime):
        with httpx2.Client(base_url=server.url, timeout=30) as client:
            created = client.post("/v4/subaccount/create", json={"email": invited}, headers=account.headers)
        assert_ok(created)
        Runner(runtime).run_until_idle()
    [received] = dist_smtp.handler.to(invited)
    assert received.mail_from == "noreply@opencoupon.example"
    assert "/dashboard/reset/" in received.message.get_content()


def test_the_password_email_is_retried_while_its_link_would_be_valid_then_given_up(
    account: TestAccount, settings: Settings
) -> None:
    """A mail server that cannot be reached: the worker tries again every 5 minutes (without
    using up the job's attempts) for as long as the link is valid (3 days), then gives up. It
    retried every 5 minutes for ever."""
    invited = f"unreachable-{time.time_ns()}@example.com"
    with served_with(
        settings,
        smtp_host="127.0.0.1",
        smtp_port=free_port(),  # nobody listens: connection refused
        smtp_tls="none",
        smtp_sender_email="noreply@opencoupon.example",
    ) as (server, runtime):
        with httpx2.Client(base_url=server.url, timeout=30) as client:
            created = client.post("/v4/subaccount/create", json={"email": invited}, headers=account.headers)
        sub_id = int(assert_ok(created)["subaccount"]["ID"].removeprefix("sub_"))
        payload = f'{{"account_id": {sub_id}}}'

        def job() -> Job:
            with runtime.db.read() as session:
                return session.scalars(select(Job).where(Job.payload == payload)).one()

        runner = Runner(runtime)
        for _ in range(12):  # more tries than the job's max_attempts (10)
            runner.run_once()
            assert (job().status, job().attempts) == ("queued", 0)
            assert job().run_at > utcnow() + dt.timedelta(minutes=4)
            with runtime.db.transaction() as session:
                session.execute(update(Job).where(Job.payload == payload).values(run_at=utcnow()))
        with runtime.db.transaction() as session:  # three days on
            session.execute(
                update(Account).where(Account.id == sub_id).values(created_at=utcnow() - dt.timedelta(days=3))
            )
        runner.run_once()
        assert job().status == "done"


def test_a_subaccount_without_dashboard_access_cannot_use_the_dashboard(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    """Its sign-in made before ends, it cannot sign in or get an SSO link; its API keys work."""
    ref = f"sub_{subaccount.id}"
    with browser(live_server.url) as web:
        assert sign_in(web, subaccount.email, PASSWORD).status_code == 303
        assert web.get("/dashboard/").status_code == 200
        assert_ok(account.call("/v3/subaccount/update", subaccount=ref, access_dashboard=False))
        gone = web.get("/dashboard/")
        assert gone.status_code == 303
        assert gone.headers["location"].startswith("/dashboard/login")
        # Ended, not suspended: access given back later does not bring that session back (a
        # master who blocks to throw out a stolen session, then unblocks, re-admitted the thief).
        kept_cookie = dict(web.cookies)
        assert_ok(account.call("/v3/subaccount/update", subaccount=ref, access_dashboard=True))
        assert_ok(account.call("/v3/subaccount/update", subaccount=ref, block=True))
        assert_ok(account.call("/v3/subaccount/update", subaccount=ref, block=False))
        web.cookies.update(kept_cookie)
        assert web.get("/dashboard/").status_code == 303
        assert_ok(account.call("/v3/subaccount/update", subaccount=ref, access_dashboard=False))
    with browser(live_server.url) as web:
        refused = sign_in(web, subaccount.email, PASSWORD)
        assert refused.status_code == 401
        assert "This account has no dashboard access." in refused.text
    assert_error(account.call("/v3/subaccount/sso", subaccount=ref, page="statistics"), 403, 101)
    assert_ok(subaccount.call("/v3/coupon/list"))
    assert_ok(account.call("/v3/subaccount/update", subaccount=ref, access_dashboard=True))
    with browser(live_server.url) as web:
        assert sign_in(web, subaccount.email, PASSWORD).status_code == 303
