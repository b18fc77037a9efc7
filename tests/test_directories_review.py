# ruff: noqa: F811  (the `limited_server` fixture is imported, then requested by name)
"""Faults found by a review of the directories capability, each pinned by a test over real HTTP
and the real database (SQLite, and PostgreSQL with OPENCOUPON_TEST_DATABASE_URL)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx2
from sqlalchemy import func, select

from conftest import LiveServer
from directories_fixtures import PAY_URL, Browser, create_directory, create_user, make_campaign, v4
from helpers import assert_error
from loyalty_fixtures import create_card
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, CampaignCustomCode, CouponSession, DirectoryItem, Event
from opencoupon.runtime import Runtime
from test_directories_races import THREADS, _race
from test_directory_signin_pages import limited_server  # noqa: F401  (a fixture, requested by name)


def test_a_hidden_item_of_a_public_directory_does_not_open_a_paid_coupon(
    account: Any, runtime: Runtime, http: httpx2.Client, browser: Browser
) -> None:
    """Only a directory that shows a campaign (item status active) may open it: a paid coupon
    hidden in a public directory stayed open to anyone."""
    campaign = make_campaign(runtime, account.id, "Paid deal")
    paid = create_directory(account, access="payment", payment_url=PAY_URL, campaigns=[f"cam_{campaign.id}"])
    public = create_directory(
        account, access="public", campaigns=[{"id": f"cam_{campaign.id}", "status": "inactive"}]
    )
    locked = http.get(f"/p/{campaign.code}", follow_redirects=False)
    assert locked.status_code == 303
    assert locked.headers["location"].startswith(f"/d/{paid['code']}/login")
    assert v4(account, "GET", f"/v4/directory/{public['id']}").json()["campaigns"][0]["status"] == "inactive"

    # Shown in the public directory again: open to anyone, as before.
    assert (
        account.call(
            "/v3/directory/campaign/update",
            campaign=f"cam_{campaign.id}",
            directory=public["id"],
            status="active",
        ).status_code
        == 200
    )
    opened = http.get(f"/p/{campaign.code}", follow_redirects=False)
    assert "/login" not in opened.headers.get("location", "")

    # Hidden in its only (paid) directory: a paying member cannot open it there either, and an
    # anonymous visitor is not sent to a sign-in that could not open it.
    v4(account, "PATCH", f"/v4/directory/{public['id']}", campaigns=[])
    v4(
        account,
        "PATCH",
        f"/v4/directory/{paid['id']}",
        campaigns=[{"id": f"cam_{campaign.id}", "status": "inactive"}],
    )
    assert browser.register(paid["code"], "payer@example.com").status_code == 303
    users = v4(account, "GET", f"/v4/directory/{paid['id']}/users").json()
    v4(account, "POST", f"/v4/directory/{paid['id']}/users/{users[0]['id']}/access")
    for client in (http, browser.client):
        hidden = client.get(
            f"/p/{campaign.code}", follow_redirects=False, headers={"Accept": "application/json"}
        )
        assert hidden.status_code == 403, hidden.text
        assert hidden.json()["reason"] == "hidden"


def test_a_member_opening_a_coupon_many_times_at_once_gets_one_session(
    account: Any, runtime: Runtime, live_server: Any, browser: Browser
) -> None:
    """The member's session is read, then made when missing: on PostgreSQL requests arriving
    together each made one. One member's openings now queue on their directory-user row."""
    campaigns = [make_campaign(runtime, account.id, f"Race deal {n}") for n in range(3)]
    directory = create_directory(account, access="login", campaigns=[f"cam_{c.id}" for c in campaigns])
    assert browser.register(directory["code"], "racer@example.com").status_code == 303
    cookies = dict(browser.client.cookies)
    for campaign in campaigns:  # a few rounds: one race alone is sometimes won by chance
        path = f"/d/{directory['code']}/c/cam_{campaign.id}"
        cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
        answers = _race(
            live_server, lambda client, path=path, cookie=cookie: client.get(path, headers={"Cookie": cookie})
        )
        assert [a.status_code for a in answers] == [303] * THREADS
        assert len({a.headers["location"] for a in answers}) == 1
        with runtime.db.read() as session:
            made = session.scalar(
                select(func.count())
                .select_from(CouponSession)
                .where(CouponSession.campaign_id == campaign.id)
            )
        assert made == 1


def test_a_template_copy_starts_its_own_custom_code_count(account: Any, runtime: Runtime) -> None:
    """`custom_codes_issued` (a usage counter not named `…_count`) was copied with the settings:
    a copy of a template with 5 codes handed out said 5 of its own, and with an imported list it
    took the count but not the codes. A copy starts at 0; an imported list is not copied."""
    directory = create_directory(account)
    generated = make_campaign(
        runtime, account.id, "Generated", custom_codes_issued=5, settings={"custom_code_mode": "generated"}
    )
    imported = make_campaign(runtime, account.id, "Imported")
    patched = v4(account, "PATCH", f"/v4/campaigns/cam_{imported.id}", custom_codes=["GOLD-1", "GOLD-2"])
    assert patched.status_code == 200, patched.text
    with runtime.db.transaction() as session:
        session.get(Campaign, imported.id).custom_codes_issued = 1  # type: ignore[union-attr]

    def copy_of(template: Campaign) -> dict[str, Any]:
        made = account.call(
            "/v3/directory/campaign/create",
            directory=directory["id"],
            template=f"cam_{template.id}",
            name="Copy",
        )
        assert made.status_code == 200, made.text
        answer: dict[str, Any] = v4(account, "GET", f"/v4/campaigns/{made.json()['campaign']['ID']}").json()
        return answer

    copied = copy_of(generated)
    assert (copied["custom_code_mode"], copied["custom_codes_issued"]) == ("generated", 0)
    copied = copy_of(imported)
    assert (copied["custom_code_mode"], copied["custom_codes_total"], copied["custom_codes_issued"]) == (
        "none",
        0,
        0,
    )
    with runtime.db.read() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(CampaignCustomCode)
                .where(CampaignCustomCode.campaign_id == int(copied["id"][4:]))
            )
            == 0
        )
    template = v4(account, "GET", f"/v4/campaigns/cam_{imported.id}").json()
    assert (template["custom_code_mode"], template["custom_codes_total"]) == ("imported", 2)


def test_a_subaccounts_loyalty_card_shows_in_its_masters_directory(
    account: Any, subaccount: Any, runtime: Runtime, http: httpx2.Client
) -> None:
    """The master's directory accepted its subaccount's card but its page showed only the
    master's own: cards are shown as campaigns are, those of the directory's account and, for a
    master's directory, of its subaccounts."""
    sub_card = create_card(subaccount, name="Sub card")
    master_card = create_card(account, name="Master card")
    directory = create_directory(account, loyalty_cards=[str(sub_card["id"]), str(master_card["id"])])
    page = http.get(f"/d/{directory['code']}", headers={"Accept": "application/json"}).json()
    assert [c["name"] for c in page["loyalty_cards"]] == ["Sub card", "Master card"]
    html = http.get(f"/d/{directory['code']}").text
    assert "Sub card" in html
    assert "Master card" in html

    # A subaccount's directory never shows its master's card (put there through the master's
    # reach, as an older server allowed): only what the directory may hold.
    sub_directory = create_directory(subaccount, loyalty_cards=[str(sub_card["id"])])
    with runtime.db.transaction() as session:
        session.add(
            DirectoryItem(
                directory_id=int(sub_directory["id"][4:]),
                account_id=subaccount.id,
                kind="loyalty_card",
                item_id=int(master_card["id"]),
                featured=False,
                status="active",
                position=1,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    page = http.get(f"/d/{sub_directory['code']}", headers={"Accept": "application/json"}).json()
    assert [c["name"] for c in page["loyalty_cards"]] == ["Sub card"]


def test_deleted_campaigns_and_cards_are_neither_counted_nor_listed(account: Any, runtime: Runtime) -> None:
    """A deleted campaign (or loyalty card) stays in the directory's rows but is shown nowhere:
    /v3/directory/info and /v3/directory/list counted and listed it, GET /v4/directory listed it."""
    kept, gone = make_campaign(runtime, account.id, "Kept"), make_campaign(runtime, account.id, "Gone")
    kept_card, gone_card = create_card(account, name="Kept card"), create_card(account, name="Gone card")
    directory = create_directory(
        account,
        campaigns=[f"cam_{kept.id}", f"cam_{gone.id}"],
        loyalty_cards=[str(kept_card["id"]), str(gone_card["id"])],
    )
    assert v4(account, "DELETE", f"/v4/campaigns/cam_{gone.id}").status_code == 200
    assert v4(account, "DELETE", f"/v4/loyalty/loyalty-cards/{gone_card['id']}").status_code == 200

    info = account.call("/v3/directory/info", directory=directory["id"]).json()["directory"]
    assert (info["amount_of_campaigns"], info["campaigns"]) == ("1", [f"cam_{kept.id}"])
    assert (info["amount_of_loyalty_cards"], info["loyalty_cards"]) == ("1", [str(kept_card["id"])])
    listed = account.call("/v3/directory/list").json()["directories"]
    assert [(d["amount_of_campaigns"], d["amount_of_loyalty_cards"]) for d in listed] == [("1", "1")]
    assert (
        account.call("/v3/directory/campaigns", directory=directory["id"]).json()["amount_of_campaigns"]
        == "1"
    )
    for answer in (
        v4(account, "GET", f"/v4/directory/{directory['id']}").json(),
        v4(account, "GET", "/v4/directory").json()[0],
    ):
        assert [c["id"] for c in answer["campaigns"]] == [f"cam_{kept.id}"]
        assert [c["name"] for c in answer["loyalty_cards"]] == ["Kept card"]


def test_a_blocked_member_of_a_public_directory_is_signed_out(
    account: Any, runtime: Runtime, browser: Browser
) -> None:
    """A blocked member was still shown as signed in and got a personal coupon session in their
    name; now they are treated as signed out, and the public directory still opens for them
    as for anyone."""
    campaign = make_campaign(runtime, account.id, "Public deal")
    directory = create_directory(account, access="public", campaigns=[f"cam_{campaign.id}"])
    code = directory["code"]
    assert browser.register(code, "blocked@example.com").status_code == 303
    member = v4(account, "GET", f"/v4/directory/{directory['id']}/users").json()[0]
    page = browser.get(f"/d/{code}", headers={"Accept": "application/json"}).json()
    assert page["user"] == member["id"]
    assert v4(account, "POST", f"/v4/directory/{directory['id']}/users/{member['id']}", block=True).is_success

    page = browser.get(f"/d/{code}", headers={"Accept": "application/json"}).json()
    assert (page["user"], page["locked"]) == (None, False)
    assert "Signed in as" not in browser.get(f"/d/{code}").text
    opened = browser.get(f"/d/{code}/c/cam_{campaign.id}")
    assert (opened.status_code, opened.headers["location"]) == (303, f"/p/{campaign.code}")
    with runtime.db.read() as session:
        personal = session.scalar(
            select(func.count())
            .select_from(CouponSession)
            .where(
                CouponSession.campaign_id == campaign.id, CouponSession.device_id == f"reg_{member['id'][4:]}"
            )
        )
    assert personal == 0


def test_a_member_sso_link_is_not_used_up_at_another_directorys_address(
    account: Any, browser: Browser, second_browser: Browser
) -> None:
    """The link was redeemed before its directory was compared: opened at another directory's
    address it was refused there and used up, so its own directory refused it too."""
    own = create_directory(account, access="login")
    other = create_directory(account, access="login")
    member = create_user(account, own["id"], email="sso-member@example.com")
    sso = v4(account, "POST", f"/v4/directory/{own['id']}/users/{member['id']}/sso").json()
    wrong = second_browser.get(f"/d/{other['code']}/sso/{sso['token']}")
    assert wrong.status_code == 403
    assert f"ocd_{other['code']}" not in wrong.headers.get("set-cookie", "")
    right = browser.get(f"/d/{own['code']}/sso/{sso['token']}")
    assert (right.status_code, right.headers["location"]) == (303, f"/d/{own['code']}")
    page = browser.get(f"/d/{own['code']}", headers={"Accept": "application/json"}).json()
    assert page["user"] == member["id"]
    # Once, as before.
    assert second_browser.get(f"/d/{own['code']}/sso/{sso['token']}").status_code == 403


def test_directory_user_fields_are_bounded_and_checked(account: Any, browser: Browser) -> None:
    """Fields longer than their columns were stored on SQLite (500-character names) and answered
    a generic "too long" 300 on PostgreSQL; birth_date took year 1 and answered "1-01-01"; the
    register form stored a NUL on SQLite."""
    directory = create_directory(account)
    users = f"/v4/directory/{directory['id']}/users"
    for field, limit in [
        ("first_name", 100),
        ("last_name", 100),
        ("phone", 40),
        ("address", 300),
        ("zip", 20),
        ("city", 100),
        ("custom_1", 300),
        ("custom_3", 300),
    ]:
        refused = assert_error(
            v4(account, "POST", users, email=f"{field}@example.com", **{field: "x" * (limit + 1)}), 422, 300
        )
        assert refused["status"]["errors"]["error_message_description"] == [
            f"Invalid value in parameter: {field}."
        ]
        kept = create_user(account, directory["id"], email=f"{field}-ok@example.com", **{field: "x" * limit})
        assert kept[field] == "x" * limit
    assert_error(v4(account, "POST", users, email="old@example.com", birth_date="0001-01-01"), 422, 300)
    assert_error(v4(account, "POST", users, email="later@example.com", birth_date="2999-01-01"), 422, 300)
    assert_error(v4(account, "POST", users, email="week@example.com", birth_date="1990-W01-1"), 422, 303)
    born = create_user(account, directory["id"], email="born@example.com", birth_date="1900-01-01")
    assert born["birth_date"] == "1900-01-01"

    code = directory["code"]
    for fields in ({"first_name": "\x00"}, {"last_name": "Ann\nSmith"}, {"phone": "+31\x7f"}):
        browser.client.cookies.clear()
        refused_form = browser.register(code, "control@example.com", **fields)
        assert refused_form.status_code == 422
        assert "control characters" in refused_form.text
    browser.client.cookies.clear()
    assert browser.register(code, "nul\x00@example.com").status_code == 422
    assert [
        u["email"] for u in v4(account, "GET", users).json() if "control" in u["email"] or "nul" in u["email"]
    ] == []
    assert browser.register(code, "control@example.com", first_name="Ann").status_code == 303


def test_the_register_form_says_already_registered_within_the_address_limit(
    account: Any, limited_server: LiveServer
) -> None:
    """The register form says an email is registered already (a person registering must learn
    why it fails, and sign in instead); sign-in does not tell. Every such answer counts toward the
    per-address registration limit, so one address learns at most that many a minute, and the
    refusal past the limit tells nothing about the email."""
    code = create_directory(account, access="login")["code"]
    browser = Browser(limited_server.url)
    try:
        assert browser.register(code, "member@example.com").status_code == 303
        answers = []
        for _ in range(9):
            browser.client.cookies.clear()
            answers.append(browser.register(code, "member@example.com"))
        assert [a.status_code for a in answers] == [422] * 9
        assert all("already registered" in a.text for a in answers)
        for email in ("member@example.com", "stranger@example.com"):
            browser.client.cookies.clear()
            held = browser.register(code, email)
            assert held.status_code == 429
            assert "already registered" not in held.text
        # Sign-in says the same for a member's wrong password and an unknown email.
        browser.client.cookies.clear()
        wrong = browser.login(code, "member@example.com", password="not the password")
        unknown = browser.login(code, "nobody@example.com", password="not the password")
        assert (wrong.status_code, unknown.status_code) == (401, 401)
        assert all("Email or password is not correct." in a.text for a in (wrong, unknown))
    finally:
        browser.close()


def test_the_v4_access_grant_without_expiry_is_a_renewal_made_safe_by_an_idempotency_key(
    account: Any, runtime: Runtime, clock_offset: Any
) -> None:
    """Without `expires_at`, in a directory with `membership_days`, each call grants that many
    days from now and emits its event: a renewal, not a retry. Retries send an Idempotency-Key
    (the stored answer comes back, nothing changes) or an explicit `expires_at`."""
    directory = create_directory(account, access="payment", payment_url=PAY_URL, membership_days=30)
    member = create_user(account, directory["id"], email="renew@example.com")
    path = f"/v4/directory/{directory['id']}/users/{member['id']}/access"

    def grant(**headers: str) -> httpx2.Response:
        return account.client.post(path, json={}, headers={**account.headers, **headers})

    def changes() -> int:
        with runtime.db.read() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Event)
                    .where(Event.account_id == account.id, Event.type == "directory_payment_status_changed")
                )
                or 0
            )

    first = grant(**{"Idempotency-Key": "grant-renew-1"})
    assert first.status_code == 200, first.text
    clock_offset(dt.timedelta(hours=1))
    again = grant(**{"Idempotency-Key": "grant-renew-1"})
    assert (again.status_code, again.json()["expires_at"]) == (200, first.json()["expires_at"])
    assert changes() == 1
    renewed = grant()
    assert renewed.json()["expires_at"] > first.json()["expires_at"]
    assert changes() == 2
    # An explicit end is safe to repeat as it is.
    for _ in range(2):
        assert v4(account, "POST", path, expires_at="2031-01-31 23:59:59").status_code == 200
    assert changes() == 3
