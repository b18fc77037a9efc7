"""Dashboard loyalty pages over real HTTP: cards, holders with balances, a holder's ledger,
adjusting with a reason (server-side checks), void/unvoid, CSRF and tenancy."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx2

from conftest import LiveServer, TestAccount
from dashboard_fixtures import YES, browser_fields, post_form, signed_in
from loyalty_fixtures import CARDS, create_card, create_holder, ledger_of, reward_campaign
from opencoupon.runtime import Runtime


def test_holders_ledger_adjust_and_void(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    card = create_card(account, name="Stamp card", type="stamp")
    holder = create_holder(account, card["id"], first_name="Ann")
    holder_id = int(holder["ID"] if "ID" in holder else holder["id"])
    path = f"/dashboard/loyalty/{card['id']}/holders/{holder_id}"
    with signed_in(live_server.url, account.email) as web:
        assert "Stamp card" in web.get("/dashboard/loyalty").text
        card_page = web.get(f"/dashboard/loyalty/{card['id']}").text
        assert f'data-holder="{holder_id}"' in card_page
        bad = post_form(web, path, f"{path}/adjust", {"amount": "3", "reason": ""})
        assert bad.status_code == 422
        assert "Reason: choose" in bad.text
        assert 'name="amount" inputmode="numeric" value="3"' in bad.text  # kept as typed
        bad = post_form(web, path, f"{path}/adjust", {"amount": "many", "reason": "goodwill"})
        assert bad.status_code == 422
        assert "whole number" in bad.text
        assert 'value="many"' in bad.text
        assert '<option value="goodwill" selected>' in bad.text
        done = post_form(web, path, f"{path}/adjust", {"amount": "3", "reason": "goodwill"})
        assert done.status_code == 303
        page = web.get(done.headers["location"]).text
        assert "Balance is now 3 stamps." in page
        assert "goodwill" in page
        assert ledger_of(runtime, holder_id)[-1] == (3, 3, "collect")
        too_much = post_form(web, path, f"{path}/adjust", {"amount": "-10", "reason": "correction"})
        assert too_much.status_code == 422
        assert 'value="-10"' in too_much.text  # refused by the service: kept too
        assert '<option value="correction" selected>' in too_much.text
        assert ledger_of(runtime, holder_id)[-1] == (3, 3, "collect")
        post_form(web, path, f"{path}/void", YES)
        assert "voided" in web.get(path).text
        refused = post_form(web, path, f"{path}/adjust", {"amount": "1", "reason": "goodwill"})
        assert refused.status_code == 422
        post_form(web, path, f"{path}/unvoid", {})
        assert web.post(f"{path}/void", data={"csrf_token": "forged"}).status_code == 403
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(path).status_code == 404
        assert stranger.get(f"/dashboard/loyalty/{card['id']}").status_code == 404
        assert post_form(stranger, "/dashboard/loyalty", f"{path}/void", YES).status_code == 404
        assert "Stamp card" not in stranger.get("/dashboard/loyalty").text


def test_create_and_edit_a_card(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount
) -> None:
    new = "/dashboard/loyalty-cards/new"
    with signed_in(live_server.url, account.email) as web:
        bad = post_form(web, new, new, {"name": "", "type": "stamp"})
        assert bad.status_code == 422
        assert "Name: enter" in bad.text
        bad = post_form(web, new, new, {"name": "Cafe", "type": "stamp", "reward_goal": "lots"})
        assert bad.status_code == 422
        assert "Reward goal: enter a whole number" in bad.text
        bad = post_form(web, new, new, {"name": "Cafe", "type": "coins"})
        assert bad.status_code == 422
        assert "Type:" in bad.text
        made = post_form(
            web,
            new,
            new,
            {
                "name": "Cafe card",
                "type": "stamp",
                "reward_goal": "8",
                "active": "1",
                "join_fields": ["first_name", "email"],
            },
        )
        assert made.status_code == 303, made.text
        card_path = made.headers["location"]
        assert "Cafe card" in web.get(card_path).text
        edit = web.get(card_path + "/edit")
        assert 'value="8"' in edit.text
        saved = post_form(
            web,
            card_path + "/edit",
            card_path + "/edit",
            {"name": "Cafe card 2", "type": "stamp", "reward_goal": "10", "join_fields": ["email"]},
        )
        assert saved.status_code == 303
        listing = web.get("/dashboard/loyalty").text
        assert "Cafe card 2" in listing
        assert "inactive" in listing
        assert web.post(new, data={"name": "Forged", "type": "stamp", "csrf_token": "x"}).status_code == 403
        # A staff PIN follows the campaigns' rule: 4 to 12 letters or digits.
        assert "4 to 12 letters or digits" in web.get(new).text
        short_pin = post_form(web, new, new, {"name": "Pin card", "type": "stamp", "pin": "12"})
        assert short_pin.status_code == 422
        assert "Invalid value in parameter: pin. Use 4 to 12 letters or digits." in short_pin.text
        assert 'value="Pin card"' in short_pin.text
        refused = post_form(
            web,
            card_path + "/edit",
            card_path + "/edit",
            {"name": "Cafe card 2", "type": "stamp", "pin": "12"},
        )
        assert refused.status_code == 422
        assert "Use 4 to 12 letters or digits." in refused.text
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(card_path + "/edit").status_code == 404
        refused = post_form(
            stranger, "/dashboard/loyalty", card_path + "/edit", {"name": "Mine", "type": "stamp"}
        )
        assert refused.status_code == 404


def test_choose_the_campaign_each_reward_issues(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    coffee = reward_campaign(runtime, account.id, "Free coffee")
    cake = reward_campaign(runtime, account.id, "Free cake")
    theirs = reward_campaign(runtime, other_account.id, "Their gift")
    card = create_card(account, name="Bakery card", type="stamp", reward_goal=10)
    path = f"/dashboard/loyalty/{card['id']}/edit"
    base = {"name": "Bakery card", "type": "stamp", "reward_goal": "10", "join_fields": ["email"]}
    with signed_in(live_server.url, account.email) as web:
        form = web.get(path).text
        assert "Free cake" in form
        assert "Their gift" not in form
        bad = post_form(web, path, path, {**base, "reward_campaign": [coffee], "reward_threshold": [""]})
        assert bad.status_code == 422
        assert "Reward 1: enter the stamps or points" in bad.text
        bad = post_form(web, path, path, {**base, "reward_campaign": [""], "reward_threshold": ["5"]})
        assert bad.status_code == 422
        assert "Reward 1 (at 5 stamps): choose the campaign it issues, or empty the row" in bad.text
        bad = post_form(web, path, path, {**base, "reward_campaign": [coffee], "reward_threshold": ["12"]})
        assert bad.status_code == 422
        assert "above the reward goal" in bad.text
        bad = post_form(web, path, path, {**base, "reward_campaign": [theirs], "reward_threshold": ["5"]})
        assert bad.status_code == 422
        assert f"Reward 1 (at 5 stamps): its campaign {theirs} is not in this account" in bad.text
        saved = post_form(
            web,
            path,
            path,
            {**base, "reward_campaign": [coffee, cake, ""], "reward_threshold": ["5", "10", ""]},
        )
        assert saved.status_code == 303, saved.text
        stored = account.client.get(f"{CARDS}/{card['id']}", headers=account.headers)
        rewards = [(r["threshold"], r["campaign"]) for r in stored.json()["rewards"]]
        assert sorted(rewards) == [(5, coffee), (10, cake)]
        form = web.get(path).text
        assert f'<option value="{cake}" selected>' in form
        assert 'value="10"' in form
        forged = {**base, "reward_campaign": [coffee], "reward_threshold": ["1"], "csrf_token": "x"}
        assert web.post(path, data=forged).status_code == 403
    with signed_in(live_server.url, other_account.email) as stranger:
        refused = post_form(
            stranger,
            "/dashboard/loyalty",
            path,
            {**base, "reward_campaign": [theirs], "reward_threshold": ["1"]},
        )
        assert refused.status_code == 404


def test_a_holders_page_number_too_large_for_the_database_answers_a_page_not_a_500(
    live_server: LiveServer, account: TestAccount
) -> None:
    card = create_card(account, name="Paged card", type="stamp")
    with signed_in(live_server.url, account.email) as web:
        page = web.get(f"/dashboard/loyalty/{card['id']}?page=99999999999999999999")
        assert page.status_code == 200, page.text
        assert "Paged card" in page.text


def test_saving_a_card_keeps_its_reward_names(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """Reward names set through the API show on the edit form and survive a save from the
    dashboard (the form used to send campaign and threshold only, blanking every name); an empty
    name stays empty and shows the campaign's name."""
    coffee = reward_campaign(runtime, account.id, "Free coffee")
    cake = reward_campaign(runtime, account.id, "Free cake")
    card = create_card(
        account,
        name="Bakery card",
        type="stamp",
        reward_goal=10,
        rewards=[
            {"threshold": 5, "campaign": coffee, "name": "Birthday treat"},
            {"threshold": 10, "campaign": cake},
        ],
    )
    path = f"/dashboard/loyalty/{card['id']}/edit"
    base = {"name": "Bakery card renamed", "type": "stamp", "reward_goal": "10", "join_fields": ["email"]}
    with signed_in(live_server.url, account.email) as web:
        form = web.get(path).text
        assert 'name="reward_name" maxlength="200" value="Birthday treat"' in form
        assert 'name="reward_name" maxlength="200" value="Free cake"' not in form  # shown empty
        # What the browser sends back for the form as shown (names as filled in, the empty row).
        shown = {"reward_campaign": [coffee, cake, ""], "reward_threshold": ["5", "10", ""]}
        saved = post_form(web, path, path, {**base, **shown, "reward_name": ["Birthday treat", "", ""]})
        assert saved.status_code == 303, saved.text
        stored = account.client.get(f"{CARDS}/{card['id']}", headers=account.headers).json()
        assert sorted((r["threshold"], r["name"]) for r in stored["rewards"]) == [
            (5, "Birthday treat"),
            (10, "Free cake"),
        ]
        renamed = post_form(web, path, path, {**base, **shown, "reward_name": ["Cake day", "", ""]})
        assert renamed.status_code == 303, renamed.text
        stored = account.client.get(f"{CARDS}/{card['id']}", headers=account.headers).json()
        assert sorted((r["threshold"], r["name"]) for r in stored["rewards"])[0] == (5, "Cake day")
        # An over-long name is refused, not cut to 200 and saved.
        too_long = post_form(web, path, path, {**base, **shown, "reward_name": ["x" * 201, "", ""]})
        assert too_long.status_code == 422, too_long.text
        assert "Reward 1 (at 5 stamps): use at most 200 characters for its name." in too_long.text
        stored = account.client.get(f"{CARDS}/{card['id']}", headers=account.headers).json()
        assert sorted((r["threshold"], r["name"]) for r in stored["rewards"])[0] == (5, "Cake day")


def test_a_reward_of_a_deleted_campaign_is_shown_named_and_can_be_replaced_or_removed(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """A reward whose campaign was deleted shows that campaign, marked deleted (the list offers
    live campaigns only); saving it so is refused with a message naming the row; choosing another
    campaign for it, or emptying the row, saves."""
    coffee = reward_campaign(runtime, account.id, "Free coffee")
    cake = reward_campaign(runtime, account.id, "Free cake")
    pie = reward_campaign(runtime, account.id, "Free pie")
    muffin = reward_campaign(runtime, account.id, "Free muffin")
    rewards = [{"threshold": 1, "campaign": coffee}, {"threshold": 2, "campaign": cake}]
    card = create_card(
        account,
        name="Bakery card",
        type="stamp",
        reward_goal=3,
        rewards=[*rewards, {"threshold": 3, "campaign": pie}],
    )
    for gone in (cake, pie):
        deleted = account.client.delete(f"/v4/campaigns/{gone}", headers=account.headers)
        assert deleted.status_code in (200, 204), deleted.text
    path = f"/dashboard/loyalty/{card['id']}/edit"
    with signed_in(live_server.url, account.email) as web:
        form = web.get(path).text
        assert f'<option value="{cake}" selected>{cake} (deleted campaign' in form
        assert f'<option value="{pie}" selected>{pie} (deleted campaign' in form
        fields = browser_fields(form, "")
        assert fields["reward_campaign"] == [coffee, cake, pie, ""]
        refused = web.post(path, data={**fields, "description": "Changed"})
        assert refused.status_code == 422
        row = f"Reward 2 (at 2 stamps): its campaign {cake} was deleted;"
        assert f"{row} choose another campaign, or empty the row to remove the reward." in refused.text
        # Another campaign for the second reward; the third row emptied.
        chosen = {
            **browser_fields(refused.text, ""),
            "reward_campaign": [coffee, muffin, "", ""],
            "reward_threshold": ["1", "2", "", ""],
            "reward_name": ["", "", "", ""],
        }
        saved = web.post(path, data=chosen)
        assert saved.status_code == 303, saved.text
    stored = account.client.get(f"{CARDS}/{card['id']}", headers=account.headers).json()
    assert [(r["threshold"], r["campaign"]) for r in stored["rewards"]] == [(1, coffee), (2, muffin)]
    assert stored["description"] == "Changed"


def test_a_holder_who_lost_the_card_is_told_to_ask_the_staff_who_find_its_link(
    live_server: LiveServer, account: TestAccount
) -> None:
    """Joining again with the card's email (cookies cleared, another phone) says how to get back;
    the dashboard's holder page gives the staff the holder's own card link."""
    card = create_card(account, type="stamp", join_fields=["email"])
    holder = create_holder(account, card["id"], email="lost@example.com")
    with httpx2.Client(base_url=live_server.url) as phone:
        form = phone.get(f"/l/{card['code']}").text
        token = re.search(r'name="form_token" value="([^"]+)"', form)
        assert token is not None
        again = phone.post(
            f"/l/{card['code']}/join", data={"form_token": token.group(1), "email": "LOST@example.com"}
        )
    assert again.status_code == 422
    assert "ask the staff: they can find your card by your email on their dashboard" in again.text
    with signed_in(live_server.url, account.email) as web:
        page = web.get(f"/dashboard/loyalty/{card['id']}/holders/{holder['ID']}").text
    assert f'<a href="{holder["url"]}" data-card-link>' in page
    with httpx2.Client(base_url=live_server.url) as new_phone:
        assert (
            new_phone.get(urlsplit(holder["url"]).path).status_code == 200
        )  # the link opens the card anywhere


def test_turning_a_card_with_rewards_into_membership_on_the_dashboard(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """The edit form did not send the reward rows of a membership card: the rewards were dropped
    without a word, and once the service refused that, emptying the rows did not help. The rows
    are sent: left filled, the save is refused and the card kept; emptied, the card turns."""
    coffee = reward_campaign(runtime, account.id, "Free coffee")
    card = create_card(account, name="Club", type="stamp", rewards=[{"threshold": 5, "campaign": coffee}])
    path = f"/dashboard/loyalty/{card['id']}/edit"
    base = {"name": "Club", "type": "membership", "reward_goal": "", "join_fields": ["email"]}
    with signed_in(live_server.url, account.email) as web:
        filled = {"reward_campaign": [coffee, ""], "reward_threshold": ["5", ""], "reward_name": ["", ""]}
        refused = post_form(web, path, path, {**base, **filled})
        assert refused.status_code == 422, refused.text
        assert "A membership card has no rewards." in refused.text
        kept = account.client.get(f"{CARDS}/{card['id']}", headers=account.headers).json()
        assert (kept["type"], len(kept["rewards"])) == ("stamp", 1)
        emptied = {"reward_campaign": ["", ""], "reward_threshold": ["", ""], "reward_name": ["", ""]}
        saved = post_form(web, path, path, {**base, **emptied})
        assert saved.status_code == 303, saved.text
        turned = account.client.get(f"{CARDS}/{card['id']}", headers=account.headers).json()
        assert (turned["type"], turned["rewards"], turned["reward_goal"]) == ("membership", [], None)
