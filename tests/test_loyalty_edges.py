"""Loyalty cards at their edges, over real HTTP: links racing to two cards, rewards of deleted
campaigns, lowered goals, expired balances on every read, amounts written oddly, events that
follow every balance change."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from typing import Any

import httpx2
from sqlalchemy import select

from conftest import LiveServer, TestAccount
from helpers import assert_error, assert_ok
from loyalty_fixtures import CARDS, create_card, create_holder, grants_of, ledger_of, reward_campaign, update
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, Event, LoyaltyHolder
from opencoupon.runtime import Runtime


def _race(calls: list[Any]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_an_unlinked_user_linked_to_two_cards_at_once_is_where_each_answer_says(
    account: TestAccount, live_server: LiveServer, runtime: Runtime
) -> None:
    for _trial in range(3):
        first, second = create_card(account, name="A"), create_card(account, name="B")
        email = f"lin-{secrets.token_hex(4)}@example.com"
        made = assert_ok(
            account.call("/v3/loyaltyusers/create", email=email, password="pw", first_name="Lin")
        )
        user = made["user"]["ID"]

        def link(card: dict[str, Any], user: str = user) -> Any:
            def call() -> Any:
                with httpx2.Client(base_url=live_server.url, timeout=60, headers=account.headers) as c:
                    body = {"loyaltycard": str(card["id"]), "user": user}
                    return assert_ok(c.post("/v3/loyaltyusers/link", json=body))["user"]

            return call

        answers = _race([link(first), link(second)])
        with runtime.db.read() as session:
            for answer in answers:
                stored = session.get(LoyaltyHolder, int(answer["ID"]))
                assert stored is not None
                assert str(stored.card_id) == answer["loyaltycard"]
        # One of them is the user itself, the other a copy on the other card.
        assert {a["loyaltycard"] for a in answers} == {str(first["id"]), str(second["id"])}
        assert user in {a["ID"] for a in answers}


def test_a_reward_of_a_deleted_campaign_is_not_reached(account: TestAccount, runtime: Runtime) -> None:
    gone = reward_campaign(runtime, account.id, "Gone")
    kept = reward_campaign(runtime, account.id, "Kept")
    card = create_card(
        account,
        stamps_per_reward=10,
        rewards=[{"threshold": 3, "campaign": gone}, {"threshold": 5, "campaign": kept}],
    )
    user = create_holder(account, card["id"])
    assert account.client.delete(f"/v4/campaigns/{gone}", headers=account.headers).status_code in (200, 204)
    reached = assert_ok(update(account, card["id"], user["ID"], stamps=5))["rewards_reached"]
    assert [r["campaign"] for r in reached] == [kept]
    assert all(r["couponsession"] for r in reached)
    grants = grants_of(runtime, int(user["ID"]))
    assert len(grants) == 1
    assert grants[0][2] is not None  # with its coupon session


def _change_campaign(runtime: Runtime, public_id: str, **values: Any) -> None:
    with runtime.db.transaction() as session:
        campaign = session.get(Campaign, int(public_id.removeprefix("cam_")))
        assert campaign is not None
        for name, value in values.items():
            setattr(campaign, name, value)


def test_a_reward_of_an_inactive_ended_or_expired_campaign_waits_until_it_can_be_used(
    account: TestAccount, runtime: Runtime
) -> None:
    """A reward whose campaign cannot give a usable coupon is not issued as a dead coupon and not
    used up: the next addition on the same card, once the campaign is usable, issues it."""
    inactive = reward_campaign(runtime, account.id, "Inactive")
    ended = reward_campaign(runtime, account.id, "Ended")
    expired = reward_campaign(runtime, account.id, "Expired")
    later = reward_campaign(runtime, account.id, "Starts later")
    kept = reward_campaign(runtime, account.id, "Kept")
    yesterday = utcnow() - dt.timedelta(days=1)
    _change_campaign(runtime, inactive, status="inactive")
    _change_campaign(runtime, ended, end_at=yesterday)
    _change_campaign(runtime, expired, expiry_mode="fixed_date", expiry_date=yesterday.date())
    _change_campaign(runtime, later, start_at=utcnow() + dt.timedelta(days=2))
    card = create_card(
        account,
        stamps_per_reward=10,
        rewards=[
            {"threshold": 2, "campaign": inactive},
            {"threshold": 3, "campaign": ended},
            {"threshold": 4, "campaign": expired},
            {"threshold": 5, "campaign": later},
            {"threshold": 5, "campaign": kept},
        ],
    )
    user = create_holder(account, card["id"])
    reached = assert_ok(update(account, card["id"], user["ID"], stamps=5))["rewards_reached"]
    # A campaign that starts later still gives a coupon: it waits for the start.
    assert sorted(r["campaign"] for r in reached) == sorted([later, kept])
    assert len(grants_of(runtime, int(user["ID"]))) == 2
    _change_campaign(runtime, inactive, status="active")
    _change_campaign(runtime, expired, expiry_date=(utcnow() + dt.timedelta(days=30)).date())
    again = assert_ok(update(account, card["id"], user["ID"], stamps=1))["rewards_reached"]
    assert sorted(r["campaign"] for r in again) == sorted([inactive, expired])
    assert all(r["couponsession"] for r in again)
    assert assert_ok(update(account, card["id"], user["ID"], stamps=1))["rewards_reached"] == []
    assert len(grants_of(runtime, int(user["ID"]))) == 4


def test_a_lowered_goal_does_not_stop_a_large_balance_from_collecting(
    account: TestAccount, runtime: Runtime
) -> None:
    card = create_card(account, type="points")
    user = create_holder(account, card["id"])
    for _ in range(3):
        assert_ok(update(account, card["id"], user["ID"], points=1_000_000))
    campaign = reward_campaign(runtime, account.id)
    patched = account.client.patch(
        f"{CARDS}/{card['id']}",
        json={"reward_goal": 500, "rewards": [{"threshold": 500, "campaign": campaign}]},
        headers=account.headers,
    )
    assert patched.status_code == 200, patched.text
    assert_ok(update(account, card["id"], user["ID"], points=1))


def test_a_balance_past_a_lowered_goal_is_completed_one_card_per_addition(
    account: TestAccount, runtime: Runtime
) -> None:
    """The surplus of a lowered goal is traded one card per addition, besides the cards the
    addition itself completes (one +1 completed 2,500 cards, and 1,001 passed the bound of one
    call, MAX_CYCLES_PER_CHANGE)."""
    card = create_card(account, type="points")
    user = create_holder(account, card["id"])
    assert_ok(update(account, card["id"], user["ID"], points=5000))
    campaign = reward_campaign(runtime, account.id)
    patched = account.client.patch(
        f"{CARDS}/{card['id']}",
        json={"reward_goal": 2, "rewards": [{"threshold": 1, "campaign": campaign}]},
        headers=account.headers,
    )
    assert patched.status_code == 200, patched.text
    first = assert_ok(update(account, card["id"], user["ID"], points=1))
    assert (first["user"]["points"], first["user"]["completed_cards"]) == ("4999", "1")
    # The full card traded and the next one's reward (it is full too).
    assert len(first["rewards_reached"]) == 2
    # This addition completes one card itself (its 2 points) and one of the surplus.
    second = assert_ok(update(account, card["id"], user["ID"], points=2))
    assert (second["user"]["points"], second["user"]["completed_cards"]) == ("4997", "3")
    assert len(second["rewards_reached"]) == 2
    assert [row[2] for row in ledger_of(runtime, int(user["ID"]))] == [
        "collect",
        "collect",
        "completed",
        "collect",
        "completed",
        "completed",
    ]
    assert [cycle for _reward, cycle, _session in grants_of(runtime, int(user["ID"]))] == [0, 1, 2, 3]


def test_completing_a_card_is_an_event_too(account: TestAccount, runtime: Runtime) -> None:
    """A webhook consumer that keeps each holder's balance from the events stays right."""
    card = create_card(account, stamps_per_reward=10)
    user = create_holder(account, card["id"])
    answer = assert_ok(update(account, card["id"], user["ID"], stamps=12))
    assert answer["user"]["stamps"] == "2"
    with runtime.db.read() as session:
        rows = session.scalars(
            select(Event).where(Event.account_id == account.id, Event.type == "loyalty_points_changed")
        ).all()
        changes = [e.data for e in rows if f'"user": "{user["ID"]}"' in e.data]
    assert len(changes) == 2
    assert '"amount": "12", "balance": "12", "reason": "api"' in changes[0]
    assert '"amount": "-10", "balance": "2", "reason": "completed"' in changes[1]
    assert [row[1:] for row in ledger_of(runtime, int(user["ID"]))] == [(12, "collect"), (2, "completed")]


def test_every_read_writes_off_an_expired_balance(
    account: TestAccount, runtime: Runtime, clock_offset: Any
) -> None:
    card = create_card(account, expire_days=30)
    user = create_holder(account, card["id"], first_name="Expiring")
    assert_ok(update(account, card["id"], user["ID"], stamps=4))
    clock_offset(dt.timedelta(days=31))
    found = assert_ok(account.call("/v3/loyaltyusers/search", loyaltycard=str(card["id"]), search="Expiring"))
    assert [u["stamps"] for u in found["users"]] == ["0"]
    assert [row[2] for row in ledger_of(runtime, int(user["ID"]))] == ["collect", "expired"]


def test_a_master_puts_its_subaccounts_unlinked_user_on_its_own_card(
    account: TestAccount, subaccount: TestAccount
) -> None:
    card = create_card(account)
    made = assert_ok(subaccount.call("/v3/loyaltyusers/create", email="sub-user@example.com", password="pw"))
    linked = assert_ok(
        account.call("/v3/loyaltyusers/link", loyaltycard=str(card["id"]), user=made["user"]["ID"])
    )["user"]
    assert linked["loyaltycard"] == str(card["id"])
    assert linked["email"] == "sub-user@example.com"


def test_amounts_are_whole_numbers_and_an_empty_one_is_not_given(account: TestAccount) -> None:
    card = create_card(account)
    user = create_holder(account, card["id"])
    for odd in ("1_0", "2.0", "²", "x"):
        assert_error(update(account, card["id"], user["ID"], stamps=odd), 422, 300)
    assert_error(
        account.client.post(
            "/v3/loyaltyusers/update",
            json={"loyaltycard": str(card["id"]), "user": user["ID"], "stamps": True},
            headers=account.headers,
        ),
        422,
        300,
    )
    form = {"loyaltycard": str(card["id"]), "user": user["ID"], "stamps": "", "voided": "true"}
    voided = assert_ok(account.client.post("/v3/loyaltyusers/update", data=form, headers=account.headers))
    assert voided["user"]["voided"] == "1"
    nothing = {"loyaltycard": str(card["id"]), "user": user["ID"], "stamps": ""}
    assert_error(
        account.client.post("/v3/loyaltyusers/update", data=nothing, headers=account.headers), 422, 200
    )
    assert (
        assert_ok(update(account, card["id"], user["ID"], voided=False, stamps="3"))["user"]["stamps"] == "3"
    )


def test_join_fields_given_empty_require_nothing_on_create_as_on_update(account: TestAccount) -> None:
    made = create_card(account, join_fields=[])
    assert made["join_fields"] == []
    assert create_card(account)["join_fields"] == ["first_name", "email"]


def test_the_card_page_refuses_frames(account: TestAccount, live_server: LiveServer) -> None:
    card = create_card(account, pin="2468")
    user = create_holder(account, card["id"])
    with httpx2.Client(base_url=live_server.url) as phone:
        page = phone.get(
            f"/l/{card['code']}/{user['token'] if 'token' in user else user['url'].rsplit('/', 1)[1]}"
        )
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_a_user_number_no_id_column_holds_is_not_found_on_every_database(account: TestAccount) -> None:
    """A user ID above 2147483647 (the int4 ID columns' largest) is no user's: not found (512) as
    on SQLite, not PostgreSQL's "value too large" (300); a search for it finds nothing by ID."""
    card = create_card(account, type="points")
    user = create_holder(account, card["id"], phone="+32470000001")
    cid = str(card["id"])
    for number in ("2147483648", "3000000000", "999999999999999999", "0" * 30 + "2147483648"):
        assert_error(update(account, card["id"], number, points=1), 404, 512)
        assert_error(account.call("/v3/loyaltyusers/link", loyaltycard=cid, user=number), 404, 512)
        one = account.client.get(f"{CARDS}/{cid}/stats/{number}", headers=account.headers)
        assert one.status_code == 404, one.text
        found = assert_ok(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search=number))
        assert found["users"] == []
    # The largest ID and a plain one still look users up by number.
    assert_error(update(account, card["id"], "2147483647", points=1), 404, 512)
    assert assert_ok(update(account, card["id"], user["ID"], points=1))["user"]["ID"] == user["ID"]
    # A number too large for an ID still finds a phone number holding it.
    found = assert_ok(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search="2470000001"))
    assert [u["ID"] for u in found["users"]] == [user["ID"]]
