"""Races for real: threads hitting the live server at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import secrets
import threading
from typing import Any

import httpx2
from sqlalchemy import func, select

from conftest import LiveServer
from conftest import TestAccount as Acc
from helpers import assert_ok, race
from loyalty_fixtures import CARDS, create_card, create_holder, grants_of, ledger_of, reward_campaign, update
from opencoupon.models import LoyaltyHolder, LoyaltyRewardGrant
from opencoupon.runtime import Runtime


def _client(live_server: LiveServer) -> httpx2.Client:
    return httpx2.Client(base_url=live_server.url, timeout=60)


def test_8_clients_x_50_additions_of_1_give_exactly_400(
    account: Acc, live_server: LiveServer, runtime: Runtime
) -> None:
    card = create_card(account, type="points")
    user = create_holder(account, card["id"])
    params = {"loyaltycard": str(card["id"]), "user": user["ID"], "points": 1}

    def client_adds(_i: int) -> list[int]:
        with _client(live_server) as client:
            return [
                client.post("/v3/loyaltyusers/update", json=params, headers=account.headers).status_code
                for _ in range(50)
            ]

    statuses = [s for batch in race(8, client_adds) for s in batch]
    assert statuses == [200] * 400
    assert assert_ok(update(account, card["id"], user["ID"], points=0))["user"]["points"] == "400"
    ledger = ledger_of(runtime, int(user["ID"]))
    assert len(ledger) == 400
    # Every row's balance is the one before it plus its delta: no lost or merged update.
    assert [b for _, b, _ in ledger] == list(range(1, 401))


def test_20_concurrent_spends_of_100_from_100_exactly_one_wins(
    account: Acc, live_server: LiveServer, runtime: Runtime
) -> None:
    card = create_card(account, type="points")
    user = create_holder(account, card["id"])
    assert_ok(update(account, card["id"], user["ID"], points=100))
    params = {"loyaltycard": str(card["id"]), "user": user["ID"], "points": -100}

    def spend(_i: int) -> tuple[int, Any]:
        with _client(live_server) as client:
            response = client.post("/v3/loyaltyusers/update", json=params, headers=account.headers)
            return response.status_code, response.json()

    results = race(20, spend)
    winners = [body for status, body in results if status == 200]
    losers = [body for status, body in results if status != 200]
    assert len(winners) == 1
    assert winners[0]["user"]["points"] == "0"
    assert len(losers) == 19
    assert all(body["status"]["errors"]["error_code"] == [308] for body in losers)
    assert assert_ok(update(account, card["id"], user["ID"], points=0))["user"]["points"] == "0"
    assert ledger_of(runtime, int(user["ID"])) == [(100, 100, "collect"), (-100, 0, "spend")]


def test_same_idempotency_key_10_times_at_once_has_one_effect(
    account: Acc, live_server: LiveServer, runtime: Runtime
) -> None:
    card = create_card(account, type="stamp")
    user = create_holder(account, card["id"])
    params = {"loyaltycard": str(card["id"]), "user": user["ID"], "stamps": 5}
    headers = {**account.headers, "Idempotency-Key": f"stamp-{user['ID']}"}

    def send(_i: int) -> tuple[int, Any]:
        with _client(live_server) as client:
            response = client.post("/v3/loyaltyusers/update", json=params, headers=headers)
            return response.status_code, response.json()

    results = race(10, send)
    ok = [body for status, body in results if status == 200]
    # A duplicate that arrives while the first is still running may be told so (307); every
    # answer that is OK is the first answer.
    assert ok
    assert all(body == ok[0] for body in ok)
    assert all(status == 200 or body["status"]["errors"]["error_code"] == [307] for status, body in results)
    assert ok[0]["user"]["stamps"] == "5"
    assert ledger_of(runtime, int(user["ID"])) == [(5, 5, "collect")]


def test_concurrent_additions_reach_each_reward_once(
    account: Acc, live_server: LiveServer, runtime: Runtime
) -> None:
    half = reward_campaign(runtime, account.id, "Half")
    full = reward_campaign(runtime, account.id, "Full")
    card = create_card(
        account,
        type="stamp",
        stamps_per_reward=10,
        rewards=[{"threshold": 5, "campaign": half}, {"threshold": 10, "campaign": full}],
    )
    user = create_holder(account, card["id"])
    params = {"loyaltycard": str(card["id"]), "user": user["ID"], "stamps": 1}

    def add(_i: int) -> int:
        with _client(live_server) as client:
            return client.post("/v3/loyaltyusers/update", json=params, headers=account.headers).status_code

    assert race(12, add) == [200] * 12
    grants = grants_of(runtime, int(user["ID"]))
    assert len(grants) == 2
    assert {g[1] for g in grants} == {0}
    final = assert_ok(update(account, card["id"], user["ID"], stamps=0))["user"]
    assert (final["stamps"], final["completed_cards"]) == ("2", "1")


def test_one_counter_form_posted_10_times_at_once_adds_once(
    account: Acc, live_server: LiveServer, runtime: Runtime
) -> None:
    card = create_card(account, type="stamp", pin="2468")
    user = create_holder(account, card["id"])
    with _client(live_server) as browser:
        page = browser.get(f"/l/{card['code']}/staff")
        token = re.search(r'name="form_token" value="([^"]+)"', page.text)
        assert token is not None
        cookies = dict(browser.cookies)
    form = {"form_token": token.group(1), "holder": user["code"], "pin": "2468", "amount": "1"}

    def post(_i: int) -> int:
        with httpx2.Client(base_url=live_server.url, timeout=60, cookies=cookies) as client:
            return client.post(f"/l/{card['code']}/staff", data=form).status_code

    assert race(10, post) == [200] * 10
    assert ledger_of(runtime, int(user["ID"])) == [(1, 1, "collect")]


def test_12_joins_with_one_email_at_once_make_one_holder(
    account: Acc, live_server: LiveServer, runtime: Runtime
) -> None:
    card = create_card(account, type="stamp")
    email = f"twin-{secrets.token_hex(4)}@example.com"
    # A form each: one form sent twice is one join (its nonce is its idempotency key).
    with _client(live_server) as browser:
        tokens = [
            re.search(r'name="form_token" value="([^"]+)"', browser.get(f"/l/{card['code']}").text)
            for _ in range(12)
        ]
        cookies = dict(browser.cookies)

    def join(i: int) -> tuple[int, str]:
        # The same person, their address typed in different letter cases.
        token = tokens[i]
        assert token is not None
        form = {"form_token": token.group(1), "first_name": "Ann", "email": email.upper() if i % 2 else email}
        with httpx2.Client(base_url=live_server.url, timeout=60, cookies=cookies) as client:
            response = client.post(f"/l/{card['code']}/join", data=form)
            return response.status_code, response.text

    results = race(12, join)
    assert sorted(status for status, _text in results) == [303] + [422] * 11
    assert all(
        "This email address already has this card." in text for status, text in results if status == 422
    )
    with runtime.db.read() as session:
        holders = session.scalars(
            select(LoyaltyHolder).where(
                LoyaltyHolder.card_id == card["id"], func.lower(LoyaltyHolder.email) == email
            )
        ).all()
    assert len(holders) == 1


def test_goal_changes_racing_additions_issue_the_goal_reward_once_on_every_card(
    account: Acc, live_server: LiveServer, runtime: Runtime
) -> None:
    """The goal moves between 5 and 10 with its reward while two holders collect: every card
    completed was completed at a goal whose reward it reached, once (an addition that took the
    goal from before an edit and the rewards from after it completed cards at 5 without the
    reward, which had moved to 10)."""
    small = reward_campaign(runtime, account.id, "Small")
    at_goal = reward_campaign(runtime, account.id, "At the goal")

    def rewards(goal: int) -> list[dict[str, Any]]:
        return [{"threshold": 3, "campaign": small}, {"threshold": goal, "campaign": at_goal}]

    card = create_card(account, type="stamp", reward_goal=10, rewards=rewards(10))
    holders = [int(create_holder(account, card["id"])["ID"]) for _ in range(2)]
    adders = 4
    collecting = threading.Semaphore(0)  # released once by each adder that is done

    def work(i: int) -> list[int]:
        with _client(live_server) as client:
            if i == adders:  # the editor, until every adder is done
                statuses: list[int] = []
                goal, done = 5, 0
                while done < adders:
                    body = {"reward_goal": goal, "rewards": rewards(goal)}
                    statuses.append(
                        client.patch(f"{CARDS}/{card['id']}", json=body, headers=account.headers).status_code
                    )
                    goal = 15 - goal
                    done += collecting.acquire(blocking=False)
                return statuses
            params = {"loyaltycard": str(card["id"]), "user": str(holders[i % 2]), "stamps": 1}
            try:
                return [
                    client.post("/v3/loyaltyusers/update", json=params, headers=account.headers).status_code
                    for _ in range(60)
                ]
            finally:
                collecting.release()

    results = race(adders + 1, work)
    assert all(status == 200 for statuses in results for status in statuses)
    assert len(results[adders]) > 1
    with runtime.db.read() as session:
        for holder_id in holders:
            holder = session.get(LoyaltyHolder, holder_id)
            assert holder is not None
            assert holder.cycle >= 12
            grants = session.execute(
                select(LoyaltyRewardGrant.cycle, LoyaltyRewardGrant.campaign_id).where(
                    LoyaltyRewardGrant.holder_id == holder_id
                )
            ).all()
            goal_grants = sorted(cycle for cycle, campaign in grants if f"cam_{campaign}" == at_goal)
            # Every completed card once; the current one may have reached its goal reward too.
            assert goal_grants[: holder.cycle] == list(range(holder.cycle))
            assert len(goal_grants) - holder.cycle in (0, 1)


def test_voids_racing_additions_record_the_balance_they_left(
    account: Acc, live_server: LiveServer, runtime: Runtime
) -> None:
    """A void or unvoid ledger row carries the balance its UPDATE saw, not the one read with the
    request before an addition committed: every row's balance is the running sum of the deltas."""
    card = create_card(account, type="points")
    user = create_holder(account, card["id"])
    adders = 3

    def work(i: int) -> list[tuple[int, str]]:
        with _client(live_server) as client:
            params: dict[str, Any] = {"loyaltycard": str(card["id"]), "user": user["ID"]}
            refusals = []
            for turn in range(50):
                change = {"points": 1} if i < adders else {"voided": (turn + i) % 2 == 0}
                response = client.post(
                    "/v3/loyaltyusers/update", json={**params, **change}, headers=account.headers
                )
                if response.status_code != 200:
                    errors = response.json()["status"]["errors"]
                    refusals.append((errors["error_code"][0], errors["error_message_description"][0]))
            return refusals

    refusals = {refusal for refused in race(adders + 2, work) for refusal in refused}
    # Additions to a voided user are refused as such (one unvoided right after the refused
    # UPDATE was told "too many points", 309); nothing else fails.
    assert refusals <= {(308, "This loyalty user is voided and cannot collect or spend.")}
    ledger = ledger_of(runtime, int(user["ID"]))
    assert {kind for _delta, _balance, kind in ledger} == {"collect", "voided", "unvoided"}
    running = 0
    for delta, balance, _kind in ledger:
        running += delta
        assert balance == running


def test_one_unlinked_user_linked_to_one_card_4_times_at_once_is_on_it_in_every_answer(
    account: Acc, live_server: LiveServer
) -> None:
    """The calls that wait for the first one find the user it linked: each answer names it on the
    card (they said "loyaltycard": "", the user as they had loaded it, unlinked)."""
    card = create_card(account, type="points")
    for _trial in range(3):
        made = account.call(
            "/v3/loyaltyusers/create", email=f"link-{secrets.token_hex(4)}@example.com", password="pw"
        )
        user = assert_ok(made)["user"]["ID"]

        def link(_i: int, user: str = user) -> tuple[str, str]:
            with _client(live_server) as client:
                body = {"loyaltycard": str(card["id"]), "user": user}
                linked = assert_ok(client.post("/v3/loyaltyusers/link", json=body, headers=account.headers))
                return linked["user"]["ID"], linked["user"]["loyaltycard"]

        assert race(4, link) == [(user, str(card["id"]))] * 4
