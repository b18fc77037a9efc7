"""Loyalty through the API: card management (v4), the vendor's v3 calls and their errors, each
card type, rewards issued at the threshold exactly once, voiding, expiry, events and tenancy."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy import update as sql_update

from conftest import TestAccount as Acc
from conftest import make_account
from helpers import assert_error, assert_ok
from loyalty_fixtures import (
    CARDS,
    create_card,
    create_holder,
    event_count,
    grants_of,
    ledger_of,
    reward_campaign,
    reward_sessions,
    update,
)
from opencoupon.kit.clock import utcnow
from opencoupon.loyalty.service import MAX_CYCLES_PER_CHANGE
from opencoupon.models import Event, LoyaltyHolder
from opencoupon.runtime import Runtime

# --- card management -----------------------------------------------------------------------


def test_create_list_get_update_delete_a_card(account: Acc, runtime: Runtime) -> None:
    cam = reward_campaign(runtime, account.id)
    card = create_card(
        account,
        name="Coffee",
        type="stamp",
        stamps_per_reward=10,
        rewards=[{"threshold": 10, "campaign": cam}],
    )
    assert isinstance(card["id"], int)
    assert len(card["code"]) == 6
    assert card["url"].endswith(f"/l/{card['code']}")
    assert card["reward_goal"] == 10
    assert card["rewards"] == [{"threshold": 10, "campaign": cam, "name": "Free coffee"}]

    listed = account.client.get(CARDS, headers=account.headers)
    assert listed.status_code == 200
    assert listed.json() == [
        {
            "id": card["id"],
            "code": card["code"],
            "name": "Coffee",
            "domain": "testserver.local",
            "type": "stamp",
        }
    ]

    got = account.client.get(f"{CARDS}/{card['id']}", headers=account.headers).json()
    assert got["name"] == "Coffee"
    assert got["active"] is True
    assert got["has_pin"] is False

    patched = account.client.patch(
        f"{CARDS}/{card['id']}",
        json={"name": "Coffee 2", "active": False, "pin": "4321"},
        headers=account.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Coffee 2"
    assert patched.json()["active"] is False
    assert patched.json()["has_pin"] is True
    assert patched.json()["rewards"] == card["rewards"]

    deleted = account.client.delete(f"{CARDS}/{card['id']}", headers=account.headers)
    assert deleted.json() == {"id": card["id"], "deleted": True}
    assert_error(account.client.get(f"{CARDS}/{card['id']}", headers=account.headers), 404, 508)
    assert account.client.get(CARDS, headers=account.headers).json() == []


def test_card_creation_errors(account: Acc, other_account: Acc, runtime: Runtime) -> None:
    post = account.client.post
    assert_error(post(CARDS, json={"type": "stamp"}, headers=account.headers), 422, 200)
    assert_error(post(CARDS, json={"name": "x", "type": "coins"}, headers=account.headers), 422, 302)
    assert_error(
        post(
            CARDS,
            json={"name": "x", "type": "stamp", "rewards": [{"threshold": 5, "campaign": "cam_999999"}]},
            headers=account.headers,
        ),
        404,
        502,
    )
    foreign = reward_campaign(runtime, other_account.id)
    assert_error(
        post(
            CARDS,
            json={"name": "x", "type": "stamp", "rewards": [{"threshold": 5, "campaign": foreign}]},
            headers=account.headers,
        ),
        404,
        502,
    )
    mine = reward_campaign(runtime, account.id)
    assert_error(
        post(
            CARDS,
            json={"name": "x", "type": "membership", "rewards": [{"threshold": 5, "campaign": mine}]},
            headers=account.headers,
        ),
        422,
        300,
    )
    assert_error(
        post(
            CARDS,
            json={
                "name": "x",
                "type": "points",
                "reward_goal": 5,
                "rewards": [{"threshold": 9, "campaign": mine}],
            },
            headers=account.headers,
        ),
        422,
        300,
    )
    assert_error(
        post(CARDS, json={"name": "x", "type": "stamp", "join_fields": ["age"]}, headers=account.headers),
        422,
        302,
    )
    assert_error(account.client.get(f"{CARDS}/abc", headers=account.headers), 422, 301)


@pytest.mark.parametrize("pin", ["12", "123", "1234567890123", "12 34", "12-4"])
def test_a_card_pin_follows_the_campaigns_rule(account: Acc, pin: str) -> None:
    """A staff PIN is 4 to 12 letters or digits, as a campaign's: create and update refuse others
    with 300 and keep the card's PIN as it was."""
    post = account.client.post
    body = assert_error(
        post(CARDS, json={"name": "x", "type": "stamp", "pin": pin}, headers=account.headers), 422, 300
    )
    described = body["status"]["errors"]["error_message_description"]
    assert "Invalid value in parameter: pin. Use 4 to 12 letters or digits." in str(described)
    made = post(CARDS, json={"name": "x", "type": "stamp", "pin": "Ab12"}, headers=account.headers)
    assert made.status_code == 201, made.text
    card = f"{CARDS}/{made.json()['id']}"
    assert_error(account.client.patch(card, json={"pin": pin}, headers=account.headers), 422, 300)
    assert account.client.get(card, headers=account.headers).json()["has_pin"] is True
    longest = account.client.patch(card, json={"pin": "abcdef123456"}, headers=account.headers)
    assert longest.status_code == 200, longest.text


def test_copy_card_keeps_settings_and_rewards_but_no_users(account: Acc, runtime: Runtime) -> None:
    cam = reward_campaign(runtime, account.id)
    card = create_card(
        account, type="points", reward_goal=100, rewards=[{"threshold": 100, "campaign": cam}], pin="1111"
    )
    create_holder(account, card["id"])
    copied = account.client.post(f"{CARDS}/{card['id']}/copy", json={"name": "Copy"}, headers=account.headers)
    assert copied.status_code == 201, copied.text
    body = copied.json()
    assert body["id"] != card["id"]
    assert body["code"] != card["code"]
    assert body["name"] == "Copy"
    assert body["type"] == "points"
    assert body["has_pin"] is True
    assert body["rewards"] == card["rewards"]
    assert body["users"] == 0
    default_name = account.client.post(f"{CARDS}/{card['id']}/copy", headers=account.headers).json()
    assert default_name["name"] == "Coffee card (copy)"
    assert_error(
        account.client.post(f"{CARDS}/{card['id']}/copy", json={"name": "x" * 51}, headers=account.headers),
        422,
        300,
    )


# --- v3 cards --------------------------------------------------------------------------------


def test_v3_list_and_info(account: Acc, runtime: Runtime) -> None:
    first = create_card(account, name="A", type="stamp")
    second = create_card(account, name="B", type="points", active=False)
    body = assert_ok(account.call("/v3/loyalty/list"))
    assert [c["ID"] for c in body["loyaltycards"]] == [str(first["id"]), str(second["id"])]
    assert body["amount_of_loyaltycards"] == "2"
    desc = assert_ok(account.call("/v3/loyalty/list", sorting="desc"))
    assert [c["ID"] for c in desc["loyaltycards"]] == [str(second["id"]), str(first["id"])]
    active = assert_ok(account.call("/v3/loyalty/list", only_active="true"))
    assert [c["ID"] for c in active["loyaltycards"]] == [str(first["id"])]
    assert_error(account.call("/v3/loyalty/list", sorting="up"), 422, 302)
    # A choice left empty in a form is not given, as an empty number or boolean is.
    blank = assert_ok(account.call("/v3/loyalty/list", sorting="", only_active=" "))
    assert [c["ID"] for c in blank["loyaltycards"]] == [str(first["id"]), str(second["id"])]

    info = assert_ok(account.call("/v3/loyalty/info", loyaltycard=str(first["id"])))["loyaltycard"]
    assert info["ID"] == str(first["id"])
    assert info["type"] == "stamp"
    assert info["active"] == "1"
    assert info["amount_of_users"] == "0"
    assert info["rewards"] == []
    assert_error(account.call("/v3/loyalty/info"), 422, 200)
    assert_error(account.call("/v3/loyalty/info", loyaltycard="99999999"), 404, 507)
    assert_error(account.call("/v3/loyalty/info", loyaltycard="12x"), 422, 301)


def test_another_accounts_cards_and_users_answer_like_missing_ones(account: Acc, other_account: Acc) -> None:
    card = create_card(other_account)
    user = create_holder(other_account, card["id"])
    cid = str(card["id"])
    for path, params, status, code in [
        ("/v3/loyalty/info", {"loyaltycard": cid}, 404, 507),
        ("/v3/loyaltyusers/list", {"loyaltycard": cid}, 404, 505),
        ("/v3/loyaltyusers/update", {"loyaltycard": cid, "user": user["ID"], "stamps": 1}, 404, 508),
        ("/v3/loyaltyusers/search", {"loyaltycard": cid, "search": "example"}, 404, 508),
        ("/v3/loyaltyusers/link", {"loyaltycard": cid, "user": user["ID"]}, 404, 508),
    ]:
        mine = assert_error(account.call(path, **params), status, code)
        missing = assert_error(account.call(path, **{**params, "loyaltycard": "987654321"}), status, code)
        assert mine == missing
    for method, suffix in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/stats"),
        ("POST", "/copy"),
        ("GET", f"/stats/{user['ID']}"),
    ]:
        theirs = account.client.request(
            method, f"{CARDS}/{card['id']}{suffix}", json={}, headers=account.headers
        )
        absent = account.client.request(
            method, f"{CARDS}/987654321{suffix}", json={}, headers=account.headers
        )
        assert theirs.status_code == absent.status_code == 404
        assert theirs.json() == absent.json()
    assert account.client.get(CARDS, headers=account.headers).json() == []
    # Their holder linked to my card is a missing user too.
    my_card = create_card(account)
    assert_error(
        account.call("/v3/loyaltyusers/link", loyaltycard=str(my_card["id"]), user=user["ID"]), 404, 512
    )


def test_master_reaches_its_subaccounts_cards(account: Acc, subaccount: Acc) -> None:
    card = create_card(subaccount, name="Sub card")
    assert [c["ID"] for c in assert_ok(account.call("/v3/loyalty/list"))["loyaltycards"]] == [str(card["id"])]
    assert_error(subaccount.call("/v3/loyalty/info", loyaltycard=str(create_card(account)["id"])), 404, 507)


def test_link_puts_on_a_subaccounts_card_only_that_subaccounts_users(
    account: Acc, subaccount: Acc, runtime: Runtime, live_server: Any
) -> None:
    """The master reaches every subaccount's users, but linking one to a card copies the person
    onto it: a subaccount's card takes only that subaccount's users, never its master's or a
    sibling's (512 as a missing one, nothing stored). A master's card may take its subaccounts'."""
    sibling = make_account(runtime, live_server, parent_id=account.id)
    shop = create_card(subaccount, name="Shop card")
    link = "/v3/loyaltyusers/link"
    for owner in (account, sibling):
        person = create_holder(owner, create_card(owner)["id"], email=f"p{owner.id}@example.com")
        assert_error(account.call(link, loyaltycard=str(shop["id"]), user=person["ID"]), 404, 512)
        # Not even a holder with the same email already on the card answers.
        create_holder(subaccount, shop["id"], email=person["email"])
        assert_error(account.call(link, loyaltycard=str(shop["id"]), user=person["ID"]), 404, 512)
    listed = assert_ok(subaccount.call("/v3/loyaltyusers/list", loyaltycard=str(shop["id"])))
    assert listed["total_results"] == "2"
    assert event_count(runtime, subaccount.id, "loyalty_user_created") == 2
    # Up the tree is fine: the master's card takes a subaccount's user.
    theirs = create_holder(sibling, create_card(sibling)["id"], first_name="Sib")
    mine = create_card(account, name="Group card")
    copied = assert_ok(account.call(link, loyaltycard=str(mine["id"]), user=theirs["ID"]))["user"]
    assert (copied["loyaltycard"], copied["first_name"]) == (str(mine["id"]), "Sib")
    sibling.client.close()


# --- v3 users --------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["first_name", "first_Name"])
def test_create_user_accepts_both_spellings(account: Acc, spelling: str) -> None:
    card = create_card(account)
    last = spelling.replace("first", "last")
    body = assert_ok(
        account.call(
            "/v3/loyaltyusers/create",
            loyaltycard=str(card["id"]),
            email="jane@example.com",
            password="pw-123456",
            phone="+32470000000",
            gender="female",
            birthday="1990-04-01",
            **{spelling: "Jane", last: "Doe"},
        )
    )
    user = body["user"]
    assert user["ID"].isdigit()
    for name in (
        "ID",
        "first_name",
        "last_name",
        "email",
        "phone",
        "points",
        "stamps",
        "voided",
        "created_date_utc",
    ):
        assert isinstance(user[name], str), name
    assert (user["first_name"], user["last_name"], user["email"]) == ("Jane", "Doe", "jane@example.com")
    assert (user["points"], user["stamps"], user["voided"]) == ("0", "0", "0")
    assert user["birthday"] == "1990-04-01"
    assert len(user["created_date_utc"]) == 19
    assert user["created_date_utc"][4] == "-"
    assert len(user["code"]) == 6


def test_create_user_errors(account: Acc) -> None:
    card = create_card(account)
    cid = str(card["id"])
    body = assert_error(account.call("/v3/loyaltyusers/create", loyaltycard=cid, password="x"), 422, 200)
    assert body["status"]["errors"]["error_message_description"] == ["You need to provide an email address."]
    body = assert_error(
        account.call("/v3/loyaltyusers/create", loyaltycard=cid, email="a@example.com"), 422, 200
    )
    assert body["status"]["errors"]["error_message_description"] == ["You need to provide a password."]
    assert_error(
        account.call("/v3/loyaltyusers/create", loyaltycard=cid, email="nope", password="x"), 422, 305
    )
    assert_error(
        account.call(
            "/v3/loyaltyusers/create", loyaltycard=cid, email="a@example.com", password="x", birthday="1/2/90"
        ),
        422,
        303,
    )
    future = f"{utcnow().year + 2}-01-01"
    for odd, code in (("2027-W05-3", 303), (future, 300)):
        assert_error(
            account.call(
                "/v3/loyaltyusers/create", loyaltycard=cid, email="a@example.com", password="x", birthday=odd
            ),
            422,
            code,
        )
    assert_error(
        account.call(
            "/v3/loyaltyusers/create", loyaltycard=cid, email="a@example.com", password="x", gender="x"
        ),
        422,
        302,
    )
    create_holder(account, card["id"], email="dup@example.com")
    assert_error(
        account.call("/v3/loyaltyusers/create", loyaltycard=cid, email="DUP@example.com", password="x"),
        422,
        304,
    )
    assert_error(
        account.call("/v3/loyaltyusers/create", loyaltycard="424242424", email="b@example.com", password="x"),
        404,
        508,
    )


def test_create_without_card_then_link(account: Acc, runtime: Runtime) -> None:
    stamp = create_card(account, type="stamp")
    points = create_card(account, type="points")
    user = assert_ok(
        account.call("/v3/loyaltyusers/create", email="solo@example.com", password="pw", first_name="Solo")
    )["user"]
    assert user["loyaltycard"] == ""
    assert user["url"] == ""
    linked = assert_ok(account.call("/v3/loyaltyusers/link", loyaltycard=str(stamp["id"]), user=user["ID"]))[
        "user"
    ]
    assert linked["ID"] == user["ID"]
    assert linked["loyaltycard"] == str(stamp["id"])
    again = assert_ok(account.call("/v3/loyaltyusers/link", loyaltycard=str(stamp["id"]), user=user["ID"]))[
        "user"
    ]
    assert again["ID"] == user["ID"]
    # Linking a holder of one card to another gives the person a separate balance there.
    other = assert_ok(account.call("/v3/loyaltyusers/link", loyaltycard=str(points["id"]), user=user["ID"]))[
        "user"
    ]
    assert other["ID"] != user["ID"]
    assert other["loyaltycard"] == str(points["id"])
    assert other["first_name"] == "Solo"
    assert other["email"] == "solo@example.com"
    assert_error(
        account.call("/v3/loyaltyusers/link", loyaltycard=str(stamp["id"]), user="77777777"), 404, 512
    )
    assert_error(account.call("/v3/loyaltyusers/link", loyaltycard=str(stamp["id"]), user="ab!"), 422, 301)
    # Digits beyond ASCII are no ID: "²" is no number at all, "٣" is not the user 3.
    for odd in ("²", "٣", "1²"):
        assert_error(account.call("/v3/loyaltyusers/link", loyaltycard=str(stamp["id"]), user=odd), 422, 301)
        assert_error(update(account, stamp["id"], odd, stamps=1), 422, 301)
        assert_error(
            account.call("/v3/loyaltyusers/update", loyaltycard=odd, user=user["ID"], stamps=1), 422, 301
        )
    assert_error(account.call("/v3/loyaltyusers/link", loyaltycard=str(stamp["id"])), 422, 200)
    assert event_count(runtime, account.id, "loyalty_user_created") == 3


def test_users_list_pages_and_errors(account: Acc) -> None:
    card = create_card(account)
    ids = [create_holder(account, card["id"])["ID"] for _ in range(3)]
    body = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))
    assert body["amount_of_results"] == "3"
    assert body["total_results"] == "3"
    assert body["page"] == "1"
    assert [u["ID"] for u in body["users"]] == ids
    # Past the last page: "0" results on the page (what clients stop paging on), the total stays.
    after = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"]), page=2))
    assert (after["amount_of_results"], after["total_results"], after["users"]) == ("0", "3", [])
    blank = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"]), page=""))
    assert (blank["page"], blank["amount_of_results"]) == ("1", "3")
    assert_error(account.call("/v3/loyaltyusers/list"), 422, 200)
    assert_error(account.call("/v3/loyaltyusers/list", loyaltycard="cam_1x"), 422, 301)
    assert_error(account.call("/v3/loyaltyusers/list", loyaltycard="31337000"), 404, 505)
    assert_error(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"]), page=0), 422, 300)


def test_search_users(account: Acc) -> None:
    card = create_card(account)
    jane = create_holder(
        account, card["id"], email="jane.doe@example.com", first_name="Jane", phone="+3247111"
    )
    create_holder(account, card["id"], email="bob@example.org", first_name="Bob")
    cid = str(card["id"])
    found = assert_ok(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search="jan"))
    assert [u["ID"] for u in found["users"]] == [jane["ID"]]
    assert found["amount_of_results"] == "1"
    assert [
        u["ID"]
        for u in assert_ok(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search="3247"))["users"]
    ] == [jane["ID"]]
    assert [
        u["ID"]
        for u in assert_ok(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search=jane["code"]))[
            "users"
        ]
    ] == [jane["ID"]]
    assert (
        len(assert_ok(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search="@example"))["users"])
        == 2
    )
    assert_error(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search="ja"), 422, 300)
    assert_error(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search="jane doe"), 422, 301)
    assert_error(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search="a%b"), 422, 301)
    assert_error(account.call("/v3/loyaltyusers/search", loyaltycard=cid), 422, 200)


def test_search_takes_an_underscore_literally(account: Acc) -> None:
    """ "_" is one of the vendor's search characters, not a wildcard matching any character."""
    card = create_card(account)
    cid = str(card["id"])
    ann = create_holder(account, card["id"], email="ann_x@example.com")
    create_holder(account, card["id"], email="annbx@example.com")
    found = assert_ok(account.call("/v3/loyaltyusers/search", loyaltycard=cid, search="ann_x"))
    assert [u["ID"] for u in found["users"]] == [ann["ID"]]


# --- balances, card types, rewards -------------------------------------------------------------


def test_stamp_card_rewards_at_the_threshold_exactly_once(account: Acc, runtime: Runtime) -> None:
    cookie = reward_campaign(runtime, account.id, "Free cookie")
    coffee = reward_campaign(runtime, account.id, "Free coffee")
    card = create_card(
        account,
        type="stamp",
        stamps_per_reward=5,
        rewards=[{"threshold": 3, "campaign": cookie}, {"threshold": 5, "campaign": coffee}],
    )
    user = create_holder(account, card["id"], first_name="Ann")
    uid = int(user["ID"])
    first = assert_ok(update(account, card["id"], user["ID"], stamps=2))
    assert first["user"]["stamps"] == "2"
    assert first["rewards_reached"] == []
    third = assert_ok(update(account, card["id"], user["ID"], stamps=1))
    assert [r["campaign"] for r in third["rewards_reached"]] == [cookie]
    assert third["rewards_reached"][0]["url"].startswith("http://testserver.local/p/")
    # Corrections below the threshold and back do not reach the same reward twice.
    assert_ok(update(account, card["id"], user["ID"], stamps=-1))
    again = assert_ok(update(account, card["id"], user["ID"], stamps=1))
    assert again["rewards_reached"] == []
    full = assert_ok(update(account, card["id"], user["ID"], stamps=2))
    assert [r["campaign"] for r in full["rewards_reached"]] == [coffee]
    # A full card is traded for its reward: the next card starts empty.
    assert full["user"]["stamps"] == "0"
    assert full["user"]["completed_cards"] == "1"
    assert len(reward_sessions(runtime, cookie)) == 1
    assert len(reward_sessions(runtime, coffee)) == 1
    session = reward_sessions(runtime, coffee)[0]
    assert session.source == "loyalty_reward"
    assert session.firstname == "Ann"
    assert ledger_of(runtime, uid) == [
        (2, 2, "collect"),
        (1, 3, "collect"),
        (-1, 2, "spend"),
        (1, 3, "collect"),
        (2, 5, "collect"),
        (-5, 0, "completed"),
    ]
    # A big addition crossing two full cards issues every reward of both cycles once.
    big = assert_ok(update(account, card["id"], user["ID"], stamps=11))
    assert [r["campaign"] for r in big["rewards_reached"]] == [cookie, coffee, cookie, coffee]
    assert big["user"]["stamps"] == "1"
    assert big["user"]["completed_cards"] == "3"
    assert len(grants_of(runtime, uid)) == 6
    assert all(g[2] is not None for g in grants_of(runtime, uid))
    assert event_count(runtime, account.id, "loyalty_reward_reached") == 6
    # One event per ledger row: six collects and spends, three completed cards.
    assert len(ledger_of(runtime, uid)) == 9
    assert event_count(runtime, account.id, "loyalty_points_changed") == 9


def test_points_card_collects_and_spends(account: Acc, runtime: Runtime) -> None:
    voucher = reward_campaign(runtime, account.id, "Voucher")
    card = create_card(
        account, type="points", points_per_reward=100, rewards=[{"threshold": 100, "campaign": voucher}]
    )
    user = create_holder(account, card["id"])
    assert assert_ok(update(account, card["id"], user["ID"], points=60))["user"]["points"] == "60"
    # The vendor's single amount parameter counts in the card's unit.
    assert assert_ok(update(account, card["id"], user["ID"], amount=-20))["user"]["points"] == "40"
    reached = assert_ok(update(account, card["id"], user["ID"], points=70))
    assert reached["user"]["points"] == "10"
    assert len(reached["rewards_reached"]) == 1
    assert_error(update(account, card["id"], user["ID"], points=-11), 409, 308)
    assert assert_ok(update(account, card["id"], user["ID"], points=-10))["user"]["points"] == "0"
    # `stamps` on a points card counts points: one amount parameter, the card decides the unit.
    assert assert_ok(update(account, card["id"], user["ID"], stamps=5))["user"]["points"] == "5"
    assert_error(update(account, card["id"], user["ID"], points=1, stamps=1), 422, 300)
    assert_error(update(account, card["id"], user["ID"]), 422, 200)
    assert_error(update(account, card["id"], user["ID"], points="lots"), 422, 300)


def test_membership_card_has_points_and_no_rewards(account: Acc) -> None:
    card = create_card(account, type="membership")
    assert card["rewards"] == []
    assert card["reward_goal"] is None
    user = create_holder(account, card["id"])
    body = assert_ok(update(account, card["id"], user["ID"], points=250))
    assert body["user"]["points"] == "250"
    assert body["rewards_reached"] == []


def test_user_by_id_or_code_and_unknown_users(account: Acc) -> None:
    card = create_card(account, type="points")
    user = create_holder(account, card["id"])
    assert assert_ok(update(account, card["id"], user["code"].lower(), points=3))["user"]["ID"] == user["ID"]
    assert_error(update(account, card["id"], "99999999", points=1), 404, 512)
    assert_error(update(account, card["id"], "ZZZZZZ", points=1), 404, 512)
    assert_error(update(account, card["id"], "no way", points=1), 422, 301)
    other_card = create_card(account, type="points")
    assert_error(update(account, other_card["id"], user["ID"], points=1), 404, 512)
    assert_error(update(account, 55555555, user["ID"], points=1), 404, 508)


def test_voided_user_cannot_collect(account: Acc, runtime: Runtime) -> None:
    card = create_card(account, type="stamp")
    user = create_holder(account, card["id"])
    assert_ok(update(account, card["id"], user["ID"], stamps=2))
    voided = assert_ok(update(account, card["id"], user["ID"], voided="true"))
    assert voided["user"]["voided"] == "1"
    assert voided["user"]["stamps"] == "2"
    body = assert_error(update(account, card["id"], user["ID"], stamps=1), 409, 308)
    assert "voided" in body["status"]["errors"]["error_message_description"][0]
    assert_error(update(account, card["id"], user["ID"], stamps=-1), 409, 308)
    restored = assert_ok(update(account, card["id"], user["ID"], voided="false", stamps=1))
    assert restored["user"]["voided"] == "0"
    assert restored["user"]["stamps"] == "3"
    kinds = [k for _, _, k in ledger_of(runtime, int(user["ID"]))]
    assert kinds == ["collect", "voided", "unvoided", "collect"]


def test_collected_points_expire_after_the_configured_days(
    account: Acc, runtime: Runtime, clock_offset: Any
) -> None:
    card = create_card(account, type="points", expire_days=30)
    user = create_holder(account, card["id"])
    assert_ok(update(account, card["id"], user["ID"], points=40))
    clock_offset(dt.timedelta(days=29))
    assert assert_ok(update(account, card["id"], user["ID"], points=10))["user"]["points"] == "50"
    clock_offset(dt.timedelta(days=29 + 31))
    listed = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(card["id"])))["users"][0]
    assert listed["points"] == "0"
    assert assert_ok(update(account, card["id"], user["ID"], points=5))["user"]["points"] == "5"
    assert ledger_of(runtime, int(user["ID"])) == [
        (40, 40, "collect"),
        (10, 50, "collect"),
        (-50, 0, "expired"),
        (5, 5, "collect"),
    ]


def test_events_carry_the_change(account: Acc, runtime: Runtime) -> None:
    cam = reward_campaign(runtime, account.id)
    card = create_card(
        account, type="stamp", stamps_per_reward=2, rewards=[{"threshold": 2, "campaign": cam}]
    )
    user = create_holder(account, card["id"])
    assert_ok(update(account, card["id"], user["ID"], stamps=2))
    with runtime.db.read() as session:
        rows = session.scalars(select(Event).where(Event.account_id == account.id).order_by(Event.id)).all()
        events = [(e.type, json.loads(e.data), e.campaign, e.session) for e in rows]
    assert [e[0] for e in events] == [
        "loyalty_user_created",
        "loyalty_points_changed",
        "loyalty_reward_reached",
        "loyalty_points_changed",  # the card completed: -2, balance 0
    ]
    assert (events[3][1]["amount"], events[3][1]["balance"], events[3][1]["reason"]) == (
        "-2",
        "0",
        "completed",
    )
    assert events[0][1]["user"]["ID"] == user["ID"]
    assert events[1][1] == {
        "loyaltycard": str(card["id"]),
        "user": user["ID"],
        "unit": "stamps",
        "amount": "2",
        "balance": "2",
        "reason": "api",
    }
    assert events[2][2] == cam
    assert len(events[2][3]) == 21
    assert events[2][1]["couponsession"] == events[2][3]


def test_idempotency_key_on_update_replays_the_first_answer(account: Acc) -> None:
    card = create_card(account, type="points")
    user = create_holder(account, card["id"])
    headers = {**account.headers, "Idempotency-Key": "add-7-once"}
    params = {"loyaltycard": str(card["id"]), "user": user["ID"], "points": 7}
    first = account.client.post("/v3/loyaltyusers/update", json=params, headers=headers)
    second = account.client.post("/v3/loyaltyusers/update", json=params, headers=headers)
    assert first.json() == second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert assert_ok(update(account, card["id"], user["ID"], points=0))["user"]["points"] == "7"
    assert_error(
        account.client.post("/v3/loyaltyusers/update", json={**params, "points": 8}, headers=headers),
        422,
        306,
    )


# --- v4 users ("stats") ------------------------------------------------------------------------


def test_v4_stats_create_bulk_list_and_get(account: Acc) -> None:
    card = create_card(account, type="points")
    base = f"{CARDS}/{card['id']}/stats"
    created = account.client.post(
        base,
        json={"first_name": "Kim", "email": "kim@example.com", "zip": "1000", "custom_1": "vip"},
        headers=account.headers,
    )
    assert created.status_code == 201, created.text
    kim = created.json()
    assert isinstance(kim["id"], int)
    assert kim["points"] == 0
    assert kim["voided"] is False
    assert kim["zip"] == "1000"
    assert kim["custom_1"] == "vip"
    bulk = account.client.post(
        base + "/bulk",
        json={"users": [{"first_name": "A"}, {"first_name": "B", "phone": "+1555"}]},
        headers=account.headers,
    )
    assert bulk.status_code == 201
    assert bulk.json()["created"] == 2
    assert_error(
        account.client.post(base + "/bulk", json={"users": [{"email": "bad"}]}, headers=account.headers),
        422,
        305,
    )
    assert_error(account.client.post(base + "/bulk", json={"users": []}, headers=account.headers), 422, 300)

    listed = account.client.get(base, headers=account.headers).json()
    assert [u["first_name"] for u in listed] == ["Kim", "A", "B"]
    filtered = account.client.get(
        base, params={"filter": json.dumps({"phone": "+1555"})}, headers=account.headers
    )
    assert [u["first_name"] for u in filtered.json()] == ["B"]
    assert_ok(update(account, card["id"], str(kim["id"]), voided=True))
    assert [u["first_name"] for u in account.client.get(base, headers=account.headers).json()] == ["A", "B"]
    with_voided = account.client.get(base, params={"include_voided": "true"}, headers=account.headers).json()
    assert len(with_voided) == 3
    page2 = account.client.get(base, params={"pagination": json.dumps({"page": 2})}, headers=account.headers)
    assert page2.status_code == 200
    assert page2.json() == []
    assert_error(account.client.get(base, params={"pagination": "{"}, headers=account.headers), 422, 300)
    # A page far beyond any OFFSET the database driver takes is refused, not a 500.
    huge = json.dumps({"page": 10**30})
    assert_error(account.client.get(base, params={"pagination": huge}, headers=account.headers), 422, 300)

    one = account.client.get(f"{base}/{kim['id']}", headers=account.headers).json()
    assert one["id"] == kim["id"]
    assert one["voided"] is True
    assert one["ledger"][0]["kind"] == "voided"
    assert_error(account.client.get(f"{base}/424242", headers=account.headers), 404, 512)


def test_v4_stats_filter_finds_an_email_in_any_letter_case(account: Acc) -> None:
    """A holder stored as Jane@Example.com was not found by filter[email]=jane@example.com ([]),
    while adding that email answered 304 "Email already exists": an integration that looks a
    customer up before creating one got "not found" and then 304."""
    card = create_card(account, type="points")
    base = f"{CARDS}/{card['id']}/stats"
    for body in (
        {"first_name": "Jane", "email": "Jane@Example.com"},
        {"first_name": "Kim", "email": "kim@x.org"},
    ):
        assert account.client.post(base, json=body, headers=account.headers).status_code == 201
    for asked in ("jane@example.com", "JANE@example.COM", "Jane@Example.com"):
        found = account.client.get(base, params={"filter[email]": asked}, headers=account.headers)
        assert [u["first_name"] for u in found.json()] == ["Jane"], asked
        assert found.json()[0]["email"] == "Jane@Example.com"
    by_json = account.client.get(
        base, params={"filter": json.dumps({"email": "KIM@X.ORG"})}, headers=account.headers
    )
    assert [u["first_name"] for u in by_json.json()] == ["Kim"]
    assert (
        account.client.get(base, params={"filter[email]": "jane@example.co"}, headers=account.headers).json()
        == []
    )
    assert_error(
        account.client.post(base, json={"email": "JANE@example.COM"}, headers=account.headers), 422, 304
    )


def test_patch_rewards_goal_and_type(account: Acc, runtime: Runtime) -> None:
    first = reward_campaign(runtime, account.id, "First")
    second = reward_campaign(runtime, account.id, "Second")
    card = create_card(
        account, type="stamp", stamps_per_reward=4, rewards=[{"threshold": 4, "campaign": first}]
    )
    url = f"{CARDS}/{card['id']}"
    replaced = account.client.patch(
        url, json={"rewards": [{"threshold": 6, "campaign": second, "name": "Big"}]}, headers=account.headers
    ).json()
    assert replaced["reward_goal"] == 6
    assert replaced["rewards"] == [{"threshold": 6, "campaign": second, "name": "Big"}]
    goal = account.client.patch(url, json={"reward_goal": 8}, headers=account.headers).json()
    assert goal["reward_goal"] == 8
    assert goal["rewards"] == replaced["rewards"]
    assert_error(account.client.patch(url, json={"reward_goal": 5}, headers=account.headers), 422, 300)
    user = create_holder(account, card["id"])
    assert_error(account.client.patch(url, json={"type": "points"}, headers=account.headers), 409, 308)
    reached = assert_ok(update(account, card["id"], user["ID"], stamps=6))["rewards_reached"]
    assert [r["campaign"] for r in reached] == [second]
    empty = create_card(account, type="stamp")
    turned = account.client.patch(
        f"{CARDS}/{empty['id']}", json={"type": "membership"}, headers=account.headers
    )
    assert turned.json()["type"] == "membership"
    assert turned.json()["rewards"] == []
    assert_error(
        account.client.patch(
            f"{CARDS}/{empty['id']}",
            json={"rewards": [{"threshold": 1, "campaign": first}]},
            headers=account.headers,
        ),
        422,
        300,
    )


def test_turning_a_card_with_rewards_into_membership_is_refused_until_they_are_removed(
    account: Acc, runtime: Runtime
) -> None:
    """PATCH {"type": "membership"} answered 200 and dropped the card's rewards and goal for good,
    while create refuses rewards on a membership card with 300."""
    cam = reward_campaign(runtime, account.id)
    rewards = [{"threshold": 6, "campaign": cam, "name": "Free coffee"}]
    card = create_card(account, type="stamp", stamps_per_reward=8, rewards=rewards)
    url = f"{CARDS}/{card['id']}"
    refused = assert_error(
        account.client.patch(url, json={"type": "membership"}, headers=account.headers), 422, 300
    )
    assert "remove them first" in json.dumps(refused)
    kept = account.client.get(url, headers=account.headers).json()
    assert (kept["type"], kept["reward_goal"], kept["rewards"]) == ("stamp", 8, rewards)
    # Removed in the same call, the change is made.
    turned = account.client.patch(url, json={"type": "membership", "rewards": []}, headers=account.headers)
    assert turned.status_code == 200, turned.text
    assert (turned.json()["type"], turned.json()["reward_goal"], turned.json()["rewards"]) == (
        "membership",
        None,
        [],
    )


def test_editing_a_card_does_not_issue_rewards_already_won_again(account: Acc, runtime: Runtime) -> None:
    """Saving a card (as the dashboard does: the whole reward list every time) or changing only
    its goal keeps the rewards a holder already reached in this cycle reached."""
    cookie = reward_campaign(runtime, account.id, "Free cookie")
    coffee = reward_campaign(runtime, account.id, "Free coffee")
    tea = reward_campaign(runtime, account.id, "Free tea")
    rewards = [{"threshold": 5, "campaign": cookie}, {"threshold": 10, "campaign": coffee}]
    card = create_card(account, type="stamp", stamps_per_reward=10, rewards=rewards)
    url = f"{CARDS}/{card['id']}"
    user = create_holder(account, card["id"])
    reached = assert_ok(update(account, card["id"], user["ID"], stamps=6))["rewards_reached"]
    assert [r["campaign"] for r in reached] == [cookie]

    renamed = account.client.patch(url, json={"name": "Renamed", "rewards": rewards}, headers=account.headers)
    assert renamed.status_code == 200, renamed.text
    goal = account.client.patch(url, json={"reward_goal": 10}, headers=account.headers)
    assert goal.status_code == 200, goal.text
    assert assert_ok(update(account, card["id"], user["ID"], stamps=1))["rewards_reached"] == []
    assert len(reward_sessions(runtime, cookie)) == 1

    # A reward that really changes still counts from the next addition.
    changed = [{"threshold": 5, "campaign": cookie}, {"threshold": 10, "campaign": tea}]
    assert account.client.patch(url, json={"rewards": changed}, headers=account.headers).status_code == 200
    full = assert_ok(update(account, card["id"], user["ID"], stamps=3))["rewards_reached"]
    assert [r["campaign"] for r in full] == [tea]
    assert len(reward_sessions(runtime, cookie)) == 1
    assert len(reward_sessions(runtime, coffee)) == 0


def test_moving_a_rewards_threshold_does_not_issue_it_again(account: Acc, runtime: Runtime) -> None:
    """A reward whose campaign stays keeps its row when its threshold moves (rewards of one
    campaign are paired in threshold order), so a holder who won it in this cycle does not win it
    again."""
    cookie = reward_campaign(runtime, account.id, "Free cookie")
    coffee = reward_campaign(runtime, account.id, "Free coffee")
    rewards = [
        {"threshold": 2, "campaign": cookie},
        {"threshold": 4, "campaign": cookie},
        {"threshold": 10, "campaign": coffee},
    ]
    card = create_card(account, type="stamp", stamps_per_reward=10, rewards=rewards)
    url = f"{CARDS}/{card['id']}"
    user = create_holder(account, card["id"])
    uid = int(user["ID"])
    reached = assert_ok(update(account, card["id"], user["ID"], stamps=5))["rewards_reached"]
    assert [(r["campaign"], r["threshold"]) for r in reached] == [(cookie, "2"), (cookie, "4")]

    moved = [
        {"threshold": 6, "campaign": cookie, "name": "Later cookie"},
        {"threshold": 3, "campaign": cookie},
        {"threshold": 10, "campaign": coffee},
    ]
    patched = account.client.patch(url, json={"rewards": moved}, headers=account.headers)
    assert patched.status_code == 200, patched.text
    assert [(r["threshold"], r["name"]) for r in patched.json()["rewards"]] == [
        (3, "Free cookie"),
        (6, "Later cookie"),
        (10, "Free coffee"),
    ]
    # Both cookies were won at 2 and 4: moved to 3 and 6, neither is won again in this cycle.
    assert assert_ok(update(account, card["id"], user["ID"], stamps=1))["rewards_reached"] == []
    full = assert_ok(update(account, card["id"], user["ID"], stamps=4))["rewards_reached"]
    assert [r["campaign"] for r in full] == [coffee]
    assert len(reward_sessions(runtime, cookie)) == 2
    # The next card reaches both cookies at their new thresholds.
    next_card = assert_ok(update(account, card["id"], user["ID"], stamps=6))["rewards_reached"]
    assert [(r["campaign"], r["threshold"]) for r in next_card] == [(cookie, "3"), (cookie, "6")]
    assert [cycle for _reward, cycle, _session in grants_of(runtime, uid)] == [0, 0, 0, 1, 1]


def test_demo_seeds_a_stamp_card_and_a_points_card_with_holders(runtime: Runtime, account: Acc) -> None:
    from opencoupon.loyalty import demo
    from opencoupon.models import Account

    with runtime.db.transaction() as session:
        owner = session.get(Account, account.id)
        assert owner is not None
        seeded = demo.seed(session, runtime, owner, owner)["loyalty"]
    cards = {c["ID"]: c for c in assert_ok(account.call("/v3/loyalty/list"))["loyaltycards"]}
    assert cards[str(seeded["stamp_card"]["id"])]["type"] == "stamp"
    assert cards[str(seeded["points_card"]["id"])]["type"] == "points"
    users = assert_ok(account.call("/v3/loyaltyusers/list", loyaltycard=str(seeded["stamp_card"]["id"])))[
        "users"
    ]
    assert [u["stamps"] for u in users] == ["7", "3"]


def test_a_balance_stops_at_what_its_column_holds(account: Acc, runtime: Runtime) -> None:
    """A points card without a goal only grows; the addition that would pass the largest balance
    the database column holds is refused (309) and changes nothing, instead of failing inside
    the database (PostgreSQL) or storing a number other readers cannot hold."""
    card = create_card(account, type="points")
    user = create_holder(account, card["id"])
    most = 2**31 - 1
    with runtime.db.transaction() as session:
        session.execute(
            sql_update(LoyaltyHolder).where(LoyaltyHolder.id == int(user["ID"])).values(points=most - 10)
        )
    refused = assert_error(update(account, card["id"], user["ID"], points=11), 422, 309)
    assert "at most" in refused["status"]["errors"]["error_message_description"][0]
    body = assert_ok(update(account, card["id"], user["ID"], points=10))
    assert body["user"]["points"] == str(most)
    assert_ok(update(account, card["id"], user["ID"], points=-5))


def test_one_addition_trades_at_most_a_bounded_number_of_full_cards(account: Acc, runtime: Runtime) -> None:
    """An addition that would complete more cards than one call may trade (MAX_CYCLES_PER_CHANGE)
    is refused (309) and changes nothing; one that completes exactly that many trades every full
    card and issues the new card's own rewards too, so no card is left holding a full card."""
    limit = MAX_CYCLES_PER_CHANGE
    cam = reward_campaign(runtime, account.id, "Sticker")
    card = create_card(
        account, type="stamp", stamps_per_reward=2, rewards=[{"threshold": 1, "campaign": cam}]
    )
    user = create_holder(account, card["id"])
    uid = int(user["ID"])
    refused = assert_error(update(account, card["id"], user["ID"], stamps=2 * limit + 2), 422, 309)
    assert f"at most {limit} cards" in refused["status"]["errors"]["error_message_description"][0]
    assert ledger_of(runtime, uid) == []
    assert grants_of(runtime, uid) == []
    body = assert_ok(update(account, card["id"], user["ID"], stamps=2 * limit + 1))
    assert body["user"]["stamps"] == "1"
    # One reward per traded card, and the new card's threshold-1 reward as well.
    assert len(body["rewards_reached"]) == limit + 1
    assert [cycle for _reward, cycle, _session in grants_of(runtime, uid)] == list(range(limit + 1))
    assert len(reward_sessions(runtime, cam)) == limit + 1
