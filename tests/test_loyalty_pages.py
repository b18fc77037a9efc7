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


# --- a PIN search from many addresses, and the counter's own device ---------------------------------

JSON = {"Accept": "application/json"}


def _from(http: httpx2.Client, last_octet: int) -> httpx2.Client:
    """A client at its own loopback address (127.0.0.N): another client address for the limits."""
    transport = httpx2.HTTPTransport(local_address=f"127.0.0.{last_octet}")
    return httpx2.Client(base_url=http.base_url, timeout=30, transport=transport)


def _stamp(client: httpx2.Client, card: dict[str, Any], pin: str, holder: str) -> httpx2.Response:
    staff = f"/l/{card['code']}/staff"
    token = form_token(client.get(staff).text)
    return client.post(staff, data={"form_token": token, "holder": holder, "pin": pin}, headers=JSON)


def _pin_search(attackers: list[httpx2.Client], card: dict[str, Any], first_guess: int) -> tuple[int, int]:
    """Every address guesses PINs on the card's staff page in turn until it is refused: (guesses
    checked, seconds to wait)."""
    staff = f"/l/{card['code']}/staff"
    checked, wait = 0, 10 * 60
    for client in attackers:
        token = form_token(client.get(staff).text)
        while True:
            pin = f"{first_guess + checked:04d}"
            data = {"form_token": token, "holder": "ZZZZZZ", "pin": pin}
            answer = client.post(staff, data=data, headers=JSON)
            if answer.status_code == 429:
                wait = max(wait, int(answer.headers.get("retry-after", 10 * 60)))
                break
            assert answer.status_code == 403, (pin, answer.status_code, answer.text)  # the PIN not found
            checked += 1
    return checked, wait


def test_a_loyalty_pin_search_spread_over_many_addresses_is_stopped(
    http: httpx2.Client, account: Acc, clock_offset: Any
) -> None:
    """Eleven addresses guess a card's 4-digit staff PIN for three days, each time as soon as they
    are let: every time the card's hundred wrong PINs are reached its PINs are refused twice as long
    (15 minutes, 30 minutes, … a day), so they check 900 PINs, not every one of the 10,000. (A
    backstop that started again every ten minutes let them try all of them in a day.)"""
    card = create_card(account, type="points", pin="2361")
    attackers = [_from(http, n) for n in range(2, 13)]
    checked, waits, elapsed = 0, [], dt.timedelta(0)
    try:
        while elapsed < dt.timedelta(days=3):
            found, wait = _pin_search(attackers, card, checked)
            checked += found
            waits.append(wait)
            elapsed += dt.timedelta(seconds=wait + 1)
            clock_offset(elapsed)
    finally:
        for client in attackers:
            client.close()
    assert checked == 900, (checked, waits)
    # 15 minutes, then twice as long each time, up to a day (Retry-After: the seconds left).
    minutes = [round(wait / 60) for wait in waits]
    assert minutes[:9] == [15, 30, 60, 120, 240, 480, 960, 1440, 1440], minutes


def test_the_counter_with_the_staff_device_cookie_stamps_while_the_card_is_locked(
    http: httpx2.Client, account: Acc, runtime: Runtime, clock_offset: Any
) -> None:
    """The counter's device that typed the right PIN on the card's staff page carries a signed
    "staff device" cookie: a search from other addresses that locks the card's PINs does not lock
    it out. A device without the cookie (the holder's phone too: its PIN gives none), a forged one,
    another card's, an expired one, or one given before the PIN was changed, is refused like
    everyone."""
    card = create_card(account, type="points", pin="1357")
    other = create_card(account, type="points", pin="1357")
    user = create_holder(account, card["id"], first_name="Max", last_name="Power")
    attackers = [_from(http, n) for n in range(2, 13)]
    till, newcomer, forger, phone = (_from(http, n) for n in (20, 21, 22, 23))
    try:
        first = _stamp(till, card, "1357", user["code"])
        assert first.status_code == 200, first.text
        (cookie,) = [c for c in first.headers.get_list("set-cookie") if c.startswith("oc_staff=")]
        assert "HttpOnly" in cookie, cookie
        assert f"Path=/l/{card['code']}" in cookie, cookie
        assert "Max-Age=2592000" in cookie, cookie  # 30 days
        given = till.cookies["oc_staff"]
        # The PIN typed on the holder's own phone gives no cookie: that device is the holder's.
        location = join(phone, card["code"], first_name="Li", email="li@example.com").headers["location"]
        stamped = phone.post(
            location + "/collect",
            data={"form_token": form_token(phone.get(location).text), "pin": "1357", "amount": "1"},
        )
        assert stamped.status_code == 303, stamped.text
        assert "oc_staff" not in phone.cookies

        assert _pin_search(attackers, card, 0)[0] == 100
        for _ in range(2):  # the counter goes on, every time
            done = _stamp(till, card, "1357", user["code"])
            assert done.status_code == 200, done.text
        assert [d for d, _, _ in ledger_of(runtime, int(user["ID"]))] == [1, 1, 1]
        refused = _stamp(newcomer, card, "1357", user["code"])
        assert refused.status_code == 429, refused.text
        assert refused.json() == {"error": "Too many wrong PINs. Try again in 15 minutes."}
        assert 14 * 60 < int(refused.headers["retry-after"]) <= 15 * 60
        on_phone = phone.post(
            location + "/collect",
            data={"form_token": form_token(phone.get(location).text), "pin": "1357", "amount": "1"},
        )
        assert on_phone.status_code == 429, on_phone.text
        assert "Too many wrong PINs. Try again in 15 minutes." in on_phone.text
        assert "retry-after" in on_phone.headers
        forged_value = given[:-1] + ("0" if given[-1] != "0" else "1")
        for forged in (forged_value, f"{card['id']}.9999999999.{'0' * 64}", "x"):
            forger.cookies.set("oc_staff", forged)
            assert _stamp(forger, card, "1357", user["code"]).status_code == 429, forged
        assert [d for d, _, _ in ledger_of(runtime, int(user["ID"]))] == [1, 1, 1]

        # Another card's cookie gives nothing there (the same value works where it was given).
        assert _pin_search(attackers, other, 0)[0] == 100
        forger.cookies.clear()
        forger.cookies.set("oc_staff", given)
        assert _stamp(forger, other, "1357", "ZZZZZZ").status_code == 429
        assert _stamp(forger, card, "1357", "ZZZZZZ").status_code == 404

        # A month without a right PIN: the cookie has expired.
        clock_offset(dt.timedelta(days=31))
        assert _pin_search(attackers, card, 100)[0] == 100
        assert _stamp(till, card, "1357", user["code"]).status_code == 429

        # A new PIN: cookies given for the old one give nothing.
        clock_offset(dt.timedelta(days=33))
        renewed = _stamp(till, card, "1357", user["code"])
        assert renewed.status_code == 200, renewed.text
        changed = account.client.patch(
            f"/v4/loyalty/loyalty-cards/{card['id']}", json={"pin": "8642"}, headers=account.headers
        )
        assert changed.status_code == 200, changed.text
        assert _pin_search(attackers, card, 200)[0] == 100
        assert _stamp(till, card, "8642", user["code"]).status_code == 429
    finally:
        for client in (*attackers, till, newcomer, forger, phone):
            client.close()
