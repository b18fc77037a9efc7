"""Consumer and counter pages under /l/{code}: join, card page, stamping by PIN on the phone or by
the holder's code on the staff page, idempotent forms, voided holders, JSON answers."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
from sqlalchemy import select

from conftest import TestAccount as Acc
from helpers import assert_ok
from loyalty_fixtures import create_card, create_holder, ledger_of, reward_campaign, reward_sessions, update
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account, Campaign, LoyaltyRewardGrant
from opencoupon.runtime import Runtime


def form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


def join(http: httpx2.Client, code: str, **fields: str) -> httpx2.Response:
    page = http.get(f"/l/{code}")
    assert page.status_code == 200
    return http.post(f"/l/{code}/join", data={"form_token": form_token(page.text), **fields})


def test_join_then_see_the_card(http: httpx2.Client, account: Acc, runtime: Runtime) -> None:
    card = create_card(
        account, name="Bean Club", type="stamp", stamps_per_reward=8, join_fields=["first_name", "phone"]
    )
    page = http.get(f"/l/{card['code']}")
    assert 'for="join-first_name"' in page.text
    assert 'id="join-phone" name="phone" type="tel" autocomplete="tel" value="" required' in page.text
    missing = http.post(
        f"/l/{card['code']}/join", data={"form_token": form_token(page.text), "first_name": "Eva"}
    )
    assert missing.status_code == 422
    assert "Please fill in: phone." in missing.text
    joined = http.post(
        f"/l/{card['code']}/join",
        data={"form_token": form_token(missing.text), "first_name": "Eva", "phone": "+3247000"},
    )
    assert joined.status_code == 303
    location = joined.headers["location"]
    assert re.fullmatch(rf"/l/{card['code']}/[a-z0-9]{{24}}", location)
    card_page = http.get(location)
    assert card_page.status_code == 200
    assert "Bean Club" in card_page.text
    assert "<strong>0</strong> stamps of 8" in card_page.text
    assert card_page.text.count('<li class="">') == 8
    assert "<svg" in card_page.text  # the holder's QR code
    users = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))["users"]
    assert [(u["first_name"], u["phone"]) for u in users] == [("Eva", "+3247000")]
    assert f">{users[0]['code']}</strong>" in card_page.text
    # The same browser coming back to the card goes straight to its card page.
    again = http.get(f"/l/{card['code']}")
    assert again.status_code == 303
    assert again.headers["location"] == location


def test_join_refuses_forged_forms_inactive_cards_and_duplicate_emails(
    http: httpx2.Client, account: Acc
) -> None:
    card = create_card(account, type="points")
    fields = {"form_token": "x", "first_name": "A", "email": "a@example.com"}
    # A browser that sends no cookies is told to allow them (the form would never do otherwise).
    cookieless = http.post(f"/l/{card['code']}/join", data=fields)
    assert cookieless.status_code == 422
    assert "allow cookies" in cookieless.text
    assert http.get(f"/l/{card['code']}").status_code == 200  # the browser has its cookie now
    forged = http.post(f"/l/{card['code']}/join", data=fields)
    assert forged.status_code == 422
    assert "expired" in forged.text
    create_holder(account, card["id"], email="taken@example.com")
    duplicate = join(http, card["code"], first_name="B", email="taken@example.com")
    assert duplicate.status_code == 422
    assert "already has this card" in duplicate.text
    token = form_token(http.get(f"/l/{card['code']}").text)
    account.client.patch(
        f"/v4/loyalty/loyalty-cards/{card['id']}", json={"active": False}, headers=account.headers
    )
    inactive = http.get(f"/l/{card['code']}")
    assert "not active" in inactive.text
    refused = http.post(
        f"/l/{card['code']}/join", data={"form_token": token, "first_name": "C", "email": "c@example.com"}
    )
    assert refused.status_code == 422
    assert http.get("/l/nocard", headers={"accept": "text/html"}).status_code == 404


def test_pin_on_the_phone_adds_once_per_form(http: httpx2.Client, account: Acc, runtime: Runtime) -> None:
    cam = reward_campaign(runtime, account.id, "Free tea")
    card = create_card(
        account, type="stamp", stamps_per_reward=2, rewards=[{"threshold": 2, "campaign": cam}], pin="9876"
    )
    location = join(http, card["code"], first_name="Li", email="li@example.com").headers["location"]
    page = http.get(location)
    assert "Staff: add stamps" in page.text
    token = form_token(page.text)
    wrong = http.post(location + "/collect", data={"form_token": token, "pin": "0000", "amount": "1"})
    assert wrong.status_code == 403
    assert "Wrong PIN" in wrong.text
    added = http.post(location + "/collect", data={"form_token": token, "pin": "9876", "amount": "1"})
    assert added.status_code == 303
    assert added.headers["location"] == location + "?added=1"
    # The phone retries the same form (flaky network): the same answer, no second stamp.
    retry = http.post(location + "/collect", data={"form_token": token, "pin": "9876", "amount": "1"})
    assert retry.status_code == 303
    after = http.get(location + "?added=1")
    assert "Added 1 stamp." in after.text
    assert "<strong>1</strong> stamps of 2" in after.text
    second = http.post(
        location + "/collect", data={"form_token": form_token(after.text), "pin": "9876", "amount": "1"}
    )
    assert second.status_code == 303
    won = http.get(location)
    session = reward_sessions(runtime, cam)[0]
    assert 'href="/p/' in won.text
    assert f"/{session.code}" in won.text
    assert "Free tea" in won.text
    assert "<strong>0</strong> stamps of 2" in won.text
    holder_id = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))["users"][0][
        "ID"
    ]
    assert [k for _, _, k in ledger_of(runtime, int(holder_id))] == ["collect", "collect", "completed"]


def test_staff_page_by_holder_code(http: httpx2.Client, account: Acc, runtime: Runtime) -> None:
    card = create_card(account, type="points", pin="1357")
    user = create_holder(account, card["id"], first_name="Max", last_name="Power")
    page = http.get(f"/l/{card['code']}/staff?holder={user['code']}")
    assert f'value="{user["code"]}"' in page.text
    token = form_token(page.text)
    form = {"form_token": token, "holder": user["code"].lower(), "pin": "1357", "amount": "25"}
    done = http.post(f"/l/{card['code']}/staff", data=form)
    assert done.status_code == 200
    assert f"Added 25 points to Max P ({user['code']}): now 25 points." in done.text
    replay = http.post(f"/l/{card['code']}/staff", data=form)
    assert "now 25 points" in replay.text
    assert [d for d, _, _ in ledger_of(runtime, int(user["ID"]))] == [25]
    unknown = http.post(
        f"/l/{card['code']}/staff", data={**form, "form_token": form_token(done.text), "holder": "ZZZZZZ"}
    )
    assert unknown.status_code == 404
    assert "No card holder with this code" in unknown.text
    too_much = http.post(
        f"/l/{card['code']}/staff", data={**form, "form_token": form_token(done.text), "amount": "500"}
    )
    assert too_much.status_code == 422
    as_json = http.post(
        f"/l/{card['code']}/staff",
        data={**form, "form_token": form_token(done.text), "amount": "5"},
        headers={"accept": "application/json"},
    )
    assert as_json.json()["balance"] == 30
    assert as_json.json()["added"] == 5


def test_staff_are_told_a_card_was_completed_and_a_new_one_started(
    http: httpx2.Client, account: Acc, runtime: Runtime
) -> None:
    """The stamp that fills a card takes the goal off and starts a new card at 0: the counter page
    says the card is complete and a new one started, not just "now 0 stamps"."""
    cam = reward_campaign(runtime, account.id, "Free coffee")
    card = create_card(
        account, type="stamp", stamps_per_reward=3, rewards=[{"threshold": 3, "campaign": cam}], pin="1212"
    )
    user = create_holder(account, card["id"], first_name="Ann", last_name="Bell")
    staff = f"/l/{card['code']}/staff"
    form = {"holder": user["code"], "pin": "1212", "amount": "1"}
    one = http.post(staff, data={**form, "form_token": form_token(http.get(staff).text)})
    assert f"Added 1 stamp to Ann B ({user['code']}): now 1 stamps." in one.text
    assert "card is complete" not in one.text
    full = http.post(staff, data={**form, "form_token": form_token(one.text), "amount": "2"})
    assert full.status_code == 200
    told = f"Added 2 stamps to Ann B ({user['code']}): the card is complete. A new card has started with 0 "
    assert told in full.text
    assert "now 0 stamps" not in full.text
    assert "Reward reached: Free coffee." in full.text
    two_cards = http.post(staff, data={**form, "form_token": form_token(full.text), "amount": "7"})
    assert "2 cards are complete. A new card has started with 1 stamp." in two_cards.text
    as_json = http.post(
        staff,
        data={**form, "form_token": form_token(two_cards.text), "amount": "2"},
        headers={"accept": "application/json"},
    )
    assert as_json.json()["cards_completed"] == 1
    assert as_json.json()["balance"] == 0


def test_wrong_pins_are_limited(http: httpx2.Client, account: Acc) -> None:
    card = create_card(account, type="points", pin="2468")
    user = create_holder(account, card["id"])
    token = form_token(http.get(f"/l/{card['code']}/staff").text)
    for _ in range(10):
        answer = http.post(
            f"/l/{card['code']}/staff", data={"form_token": token, "holder": user["code"], "pin": "1111"}
        )
        assert answer.status_code == 403
    right = http.post(
        f"/l/{card['code']}/staff", data={"form_token": token, "holder": user["code"], "pin": "2468"}
    )
    assert right.status_code == 429


def test_voided_holder_cannot_collect_and_the_page_says_so(
    http: httpx2.Client, account: Acc, runtime: Runtime
) -> None:
    card = create_card(account, type="stamp", pin="1212")
    location = join(http, card["code"], first_name="Vi", email="vi@example.com").headers["location"]
    token = form_token(http.get(location).text)
    holder = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))["users"][0]
    assert_ok(update(account, card["id"], holder["ID"], voided=True))
    page = http.get(location)
    assert "This card has been voided" in page.text
    assert "Staff: add" not in page.text
    refused = http.post(location + "/collect", data={"form_token": token, "pin": "1212", "amount": "1"})
    assert refused.status_code == 409
    assert "voided" in refused.text
    staff = http.post(
        f"/l/{card['code']}/staff",
        data={
            "form_token": form_token(http.get(f"/l/{card['code']}/staff").text),
            "holder": holder["code"],
            "pin": "1212",
        },
    )
    assert staff.status_code == 409
    assert "voided" in staff.text
    assert [k for _, _, k in ledger_of(runtime, int(holder["ID"]))] == ["voided"]


def test_card_without_pin_has_no_stamping(http: httpx2.Client, account: Acc) -> None:
    card = create_card(account, type="stamp")
    location = join(http, card["code"], first_name="No", email="nopin@example.com").headers["location"]
    assert "Staff: add" not in http.get(location).text
    assert "not possible" in http.get(f"/l/{card['code']}/staff").text


def test_card_page_as_json(http: httpx2.Client, account: Acc) -> None:
    card = create_card(account, type="points", points_per_reward=50, rewards=[])
    location = join(http, card["code"], first_name="Jo", email="jo@example.com").headers["location"]
    holder = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))["users"][0]
    assert_ok(update(account, card["id"], holder["ID"], points=12))
    body: dict[str, Any] = http.get(location, headers={"accept": "application/json"}).json()
    assert body["balance"] == 12
    assert body["unit"] == "points"
    assert body["user"]["id"] == int(holder["ID"])
    assert body["reward_goal"] == 50
    assert (
        http.get(f"/l/{card['code']}/{'x' * 24}", headers={"accept": "application/json"}).status_code == 404
    )


def test_join_as_json(http: httpx2.Client, account: Acc) -> None:
    card = create_card(account, type="points", join_fields=["email"])
    accept = {"accept": "application/json"}
    form = http.get(f"/l/{card['code']}", headers=accept).json()
    assert form["join_fields"] == ["email"]
    assert form["card"]["id"] == card["id"]
    bad = http.post(f"/l/{card['code']}/join", data={"form_token": form["form_token"]}, headers=accept)
    assert bad.status_code == 422
    assert bad.json()["error"] == "Please fill in: email."
    joined = http.post(
        f"/l/{card['code']}/join",
        data={"form_token": bad.json()["form_token"], "email": "js@example.com"},
        headers=accept,
    )
    assert joined.status_code == 201
    assert joined.json()["user"]["email"] == "js@example.com"
    assert joined.json()["url"].startswith(f"http://testserver.local/l/{card['code']}/")


def test_the_holder_page_promises_only_rewards_that_will_be_issued_and_tells_of_a_completed_card(
    http: httpx2.Client, account: Acc, runtime: Runtime
) -> None:
    """A reward already won on the current card is not issued again when the balance climbs back
    to it (after a spend or an expiry): the page does not promise it. A stamp on the phone that
    completes the card says so and names the reward it issued."""
    cookie = reward_campaign(runtime, account.id, "Free cookie")
    coffee = reward_campaign(runtime, account.id, "Free coffee")
    card = create_card(
        account,
        type="stamp",
        stamps_per_reward=10,
        rewards=[
            {"threshold": 5, "campaign": cookie, "name": "Free cookie"},
            {"threshold": 10, "campaign": coffee, "name": "Free coffee"},
        ],
        pin="4321",
    )
    location = join(http, card["code"], first_name="Bo", email="bo@example.com").headers["location"]
    holder = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))["users"][0]
    assert "5 more for: <strong>Free cookie</strong>" in http.get(location).text
    assert len(assert_ok(update(account, card["id"], holder["ID"], stamps=5))["rewards_reached"]) == 1
    assert_ok(update(account, card["id"], holder["ID"], stamps=-3))
    page = http.get(location).text
    assert "Free cookie</strong>" not in page
    assert "8 more for: <strong>Free coffee</strong>" in page
    assert 'Free cookie <span class="muted">(won on this card)</span>' in page
    stamped = http.post(
        location + "/collect", data={"form_token": form_token(page), "pin": "4321", "amount": "9"}
    )
    assert stamped.status_code == 303
    told = http.get(stamped.headers["location"]).text
    assert "Added 9 stamps: the card is complete. A new card has started with 1 stamp." in told
    coffee_session = reward_sessions(runtime, coffee)[0]
    assert 'Reward reached: <a href="/p/' in told
    assert f'/{coffee_session.code}">Free coffee</a>.' in told
    assert "Free cookie</a>." not in told.split("Reward reached")[1].split("</p>")[0]
    # On the new card both rewards are ahead again.
    assert "4 more for: <strong>Free cookie</strong>" in told


def test_the_holder_page_shows_which_reward_coupons_are_used_expired_or_open(
    http: httpx2.Client, account: Acc, runtime: Runtime
) -> None:
    used = reward_campaign(runtime, account.id, "Used one")
    expired = reward_campaign(runtime, account.id, "Expired one")
    still_open = reward_campaign(runtime, account.id, "Open one")
    card = create_card(
        account,
        type="stamp",
        stamps_per_reward=10,
        rewards=[
            {"threshold": 2, "campaign": used},
            {"threshold": 4, "campaign": expired},
            {"threshold": 6, "campaign": still_open},
        ],
    )
    location = join(http, card["code"], first_name="Su", email="su@example.com").headers["location"]
    holder = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))["users"][0]
    reached = assert_ok(update(account, card["id"], holder["ID"], stamps=6))["rewards_reached"]
    assert len(reached) == 3
    used_code = next(r["couponsession"] for r in reached if r["campaign"] == used)
    assert_ok(account.call("/v3/couponsession/update", couponsession=used_code, validate=True))
    with runtime.db.transaction() as session:
        campaign = session.get(Campaign, int(expired.removeprefix("cam_")))
        assert campaign is not None
        campaign.expiry_mode = "fixed_date"
        campaign.expiry_date = (utcnow() - dt.timedelta(days=2)).date()
    page = http.get(location).text
    items = re.findall(
        r"<li><a href=\"[^\"]+\">([^<]+)</a> <span [^>]*data-state=\"(\w+)\">(\w+)</span>", page
    )
    assert sorted(items) == [
        ("Expired one", "expired", "Expired"),
        ("Open one", "open", "Open"),
        ("Used one", "validated", "Used"),
    ]
    won = http.get(location, headers={"accept": "application/json"}).json()["won"]
    assert sorted((w["name"], w["state"]) for w in won) == [
        ("Expired one", "expired"),
        ("Open one", "open"),
        ("Used one", "validated"),
    ]


def test_the_holder_page_shows_reward_dates_in_the_account_time_zone(
    http: httpx2.Client, account: Acc, runtime: Runtime
) -> None:
    with runtime.db.transaction() as session:
        owner = session.get(Account, account.id)
        assert owner is not None
        owner.timezone = "Pacific/Auckland"
    cam = reward_campaign(runtime, account.id, "Free scone")
    card = create_card(
        account, type="stamp", stamps_per_reward=1, rewards=[{"threshold": 1, "campaign": cam}]
    )
    location = join(http, card["code"], first_name="Ra", email="ra@example.com").headers["location"]
    holder = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))["users"][0]
    assert_ok(update(account, card["id"], holder["ID"], stamps=1))
    with runtime.db.read() as session:
        issued = session.scalars(
            select(LoyaltyRewardGrant.created_at).where(LoyaltyRewardGrant.holder_id == int(holder["ID"]))
        ).one()
    local = issued.replace(tzinfo=dt.UTC).astimezone(ZoneInfo("Pacific/Auckland"))
    page = http.get(location).text
    assert f"{local:%d %B %Y %H:%M} (Pacific/Auckland)" in page
    assert f"{issued:%Y-%m-%d %H:%M}" not in page  # not the raw UTC time
