"""Loyalty faults from the third review: a card's rewards and the rewards one addition issues are
bounded, the join form is idempotent, voiding is an event, emails match in any letter case beyond
ASCII, and the v4 user list takes filter and page values of the right JSON type only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import select, text

from conftest import LiveServer, TestAccount, served_with
from dashboard_fixtures import post_form, signed_in
from helpers import assert_error, assert_ok, race
from loyalty_fixtures import (
    CARDS,
    create_card,
    create_holder,
    grants_of,
    ledger_of,
    reward_campaign,
    reward_sessions,
    update,
)
from opencoupon.accounts import service as accounts
from opencoupon.config import Settings
from opencoupon.db.migrate import downgrade, upgrade
from opencoupon.db.session import Database
from opencoupon.loyalty.service import MAX_REWARDS_PER_CARD, MAX_REWARDS_PER_CHANGE
from opencoupon.models import Event, LoyaltyHolder
from opencoupon.runtime import Runtime
from test_loyalty_pages import form_token

# --- rewards per card and per addition -----------------------------------------------------------


def test_a_card_has_a_bounded_number_of_rewards(
    account: TestAccount, runtime: Runtime, live_server: LiveServer
) -> None:
    """One addition issued every reward of every card it completed: a card of 1,000 rewards and a
    goal of 1 made 20,000 coupon sessions from one call of 20 stamps, holding the write lock."""
    campaign = reward_campaign(runtime, account.id)
    most = [{"threshold": 1, "campaign": campaign}] * MAX_REWARDS_PER_CARD
    too_many = [*most, {"threshold": 1, "campaign": campaign}]
    refused = account.client.post(
        CARDS,
        json={"name": "x", "type": "stamp", "reward_goal": 1, "rewards": too_many},
        headers=account.headers,
    )
    body = assert_error(refused, 422, 300)
    assert (
        f"at most {MAX_REWARDS_PER_CARD} rewards" in body["status"]["errors"]["error_message_description"][0]
    )
    card = create_card(account, reward_goal=1, rewards=most)
    assert len(card["rewards"]) == MAX_REWARDS_PER_CARD
    patched = account.client.patch(
        f"{CARDS}/{card['id']}", json={"rewards": too_many}, headers=account.headers
    )
    assert_error(patched, 422, 300)
    assert (
        len(account.client.get(f"{CARDS}/{card['id']}", headers=account.headers).json()["rewards"])
        == MAX_REWARDS_PER_CARD
    )
    # The dashboard's card form saves through the same rules.
    path = f"/dashboard/loyalty/{card['id']}/edit"
    form = {
        "name": "x",
        "type": "stamp",
        "reward_goal": "1",
        "active": "1",
        "reward_campaign": [campaign] * (MAX_REWARDS_PER_CARD + 1),
        "reward_threshold": ["1"] * (MAX_REWARDS_PER_CARD + 1),
    }
    with signed_in(live_server.url, account.email) as web:
        answer = post_form(web, path, path, form)
    assert answer.status_code == 422, answer.text
    assert f"at most {MAX_REWARDS_PER_CARD} rewards" in answer.text


def test_one_addition_issues_a_bounded_number_of_rewards(account: TestAccount, runtime: Runtime) -> None:
    """Cards completed × the card's rewards beyond MAX_REWARDS_PER_CHANGE: 309 and nothing stored;
    at the bound the addition goes through."""
    campaign = reward_campaign(runtime, account.id)
    rewards = [{"threshold": 1, "campaign": campaign}] * MAX_REWARDS_PER_CARD
    card = create_card(account, reward_goal=1, rewards=rewards)
    user = create_holder(account, card["id"])
    uid = int(user["ID"])
    cards = MAX_REWARDS_PER_CHANGE // MAX_REWARDS_PER_CARD
    refused = assert_error(update(account, card["id"], user["ID"], stamps=cards + 1), 422, 309)
    message = refused["status"]["errors"]["error_message_description"][0]
    assert f"at most {MAX_REWARDS_PER_CHANGE} rewards" in message
    assert f"at most {cards} cards" in message
    assert ledger_of(runtime, uid) == []
    assert grants_of(runtime, uid) == []
    assert reward_sessions(runtime, campaign) == []
    done = assert_ok(update(account, card["id"], user["ID"], stamps=cards))
    assert done["user"]["completed_cards"] == str(cards)
    assert len(done["rewards_reached"]) == cards * MAX_REWARDS_PER_CARD


# --- voiding is an event --------------------------------------------------------------------------


def _points_changed(runtime: Runtime, account_id: int) -> list[dict[str, str]]:
    with runtime.db.read() as session:
        rows = session.scalars(
            select(Event)
            .where(Event.account_id == account_id, Event.type == "loyalty_points_changed")
            .order_by(Event.id)
        ).all()
        return [json.loads(e.data) for e in rows]


def test_voiding_and_unvoiding_a_user_are_events(account: TestAccount, runtime: Runtime) -> None:
    """One event per ledger row: the voided/unvoided rows had none, so a webhook consumer never
    learned that a holder was voided."""
    card = create_card(account, stamps_per_reward=5)
    user = create_holder(account, card["id"])
    assert_ok(update(account, card["id"], user["ID"], stamps=2))
    assert_ok(update(account, card["id"], user["ID"], voided=True))
    assert_ok(update(account, card["id"], user["ID"], voided=False))
    assert [row[2] for row in ledger_of(runtime, int(user["ID"]))] == ["collect", "voided", "unvoided"]
    changes = _points_changed(runtime, account.id)
    assert len(changes) == 3
    common = {
        "loyaltycard": str(card["id"]),
        "user": user["ID"],
        "unit": "stamps",
        "amount": "0",
        "balance": "2",
    }
    assert changes[1] == {**common, "reason": "voided"}
    assert changes[2] == {**common, "reason": "unvoided"}


# --- v4 user list: filter and page values of the right type --------------------------------------


def test_stats_filter_and_page_take_values_of_the_right_type(account: TestAccount) -> None:
    """str(value) made a null filter the text "None" and an operator object its repr (200, an empty
    list), and int(value) read a page of 1.7 or true as page 1."""
    card = create_card(account, stamps_per_reward=5)
    create_holder(account, card["id"], first_name="Ann")
    base = f"{CARDS}/{card['id']}/stats"

    def listed(**params: str) -> httpx2.Response:
        return account.client.get(base, params=params, headers=account.headers)

    for value in (None, 5, [1], {"$ne": 1}, True):
        refused = assert_error(listed(filter=json.dumps({"first_name": value})), 422, 300)
        assert (
            "Invalid value in parameter: filter"
            in refused["status"]["errors"]["error_message_description"][0]
        )
    for page in (1.7, True, None, "1e3", "1.0", "-1", [1], {"n": 1}):
        refused = assert_error(listed(pagination=json.dumps({"page": page})), 422, 300)
        assert (
            "Invalid value in parameter: pagination"
            in refused["status"]["errors"]["error_message_description"][0]
        )
    # In a JSON body as well.
    body = account.client.request(
        "GET", base, json={"filter": {"first_name": {"$ne": 1}}}, headers=account.headers
    )
    assert_error(body, 422, 300)
    assert [u["first_name"] for u in listed(filter=json.dumps({"first_name": "Ann"})).json()] == ["Ann"]
    assert len(listed(pagination=json.dumps({"page": 1})).json()) == 1
    assert len(listed(pagination=json.dumps({"page": "1"})).json()) == 1
    assert listed(pagination=json.dumps({"page": "2"})).json() == []


# --- the join form is idempotent -----------------------------------------------------------------


def _holders_of(runtime: Runtime, card_id: int) -> list[LoyaltyHolder]:
    with runtime.db.read() as session:
        return list(session.scalars(select(LoyaltyHolder).where(LoyaltyHolder.card_id == card_id)).all())


def test_the_join_form_sent_again_after_a_lost_answer_leads_to_the_same_card(
    http: httpx2.Client, account: TestAccount, runtime: Runtime
) -> None:
    """The form's nonce was never claimed: the same form sent again (its answer and cookie lost on
    the way) answered "This email address already has this card." and the customer never got
    their link; on a card that asks no email it made a second holder."""
    card = create_card(account, stamps_per_reward=8)  # first name and email
    cookie = f"oc_l_{card['code']}"
    data = {"form_token": form_token(http.get(f"/l/{card['code']}").text), "first_name": "Eva"}
    data["email"] = "eva@example.com"
    first = http.post(f"/l/{card['code']}/join", data=data)
    assert first.status_code == 303, first.text
    http.cookies.delete(cookie)
    again = http.post(f"/l/{card['code']}/join", data=data)
    assert again.status_code == 303, again.text
    assert again.headers["location"] == first.headers["location"]
    assert http.cookies.get(cookie) == first.headers["location"].rsplit("/", 1)[1]
    as_json = http.post(f"/l/{card['code']}/join", data=data, headers={"Accept": "application/json"})
    assert as_json.status_code == 201, as_json.text
    assert as_json.json()["url"].endswith(first.headers["location"])
    assert len(_holders_of(runtime, card["id"])) == 1
    # The same form with other values: refused as a reused Idempotency-Key is, nothing made.
    other = http.post(f"/l/{card['code']}/join", data={**data, "email": "ava@example.com"})
    assert other.status_code == 409, other.text
    assert "This Idempotency-Key was used with a different request." in other.text
    assert len(_holders_of(runtime, card["id"])) == 1
    # A refused join gives the form back: once the reason is gone, the same form goes through.
    taken = create_card(account, stamps_per_reward=8)
    create_holder(account, taken["id"], email="kim@example.com")
    data = {"form_token": form_token(http.get(f"/l/{taken['code']}").text), "first_name": "Kim"}
    data["email"] = "kim@example.com"
    assert http.post(f"/l/{taken['code']}/join", data=data).status_code == 422
    assert (
        http.post(f"/l/{taken['code']}/join", data={**data, "email": "kim2@example.com"}).status_code == 303
    )


def test_one_join_form_sent_twice_at_once_makes_one_holder(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    card = create_card(account, stamps_per_reward=8, join_fields=["first_name"])
    with httpx2.Client(base_url=live_server.url, timeout=60) as phone:
        data = {"form_token": form_token(phone.get(f"/l/{card['code']}").text), "first_name": "Eva"}
        answers = race(4, lambda _i: phone.post(f"/l/{card['code']}/join", data=data))
    assert [a.status_code for a in answers] == [303] * 4, [a.text for a in answers]
    assert len({a.headers["location"] for a in answers}) == 1
    assert len(_holders_of(runtime, card["id"])) == 1


# --- one email, any letter case, beyond ASCII ----------------------------------------------------


def test_an_email_joins_a_card_once_in_any_letter_case_beyond_ascii(
    http: httpx2.Client, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    """SQLite's lower() folds ASCII letters only: JOSÉ@example.com and josé@example.com joined one
    card twice."""
    card = create_card(account, stamps_per_reward=8)
    first = create_holder(account, card["id"], email="JOSÉ@example.com")
    for other_case in ("josé@example.com", "JOSÉ@EXAMPLE.COM", "José@Example.com"):
        again = account.call(
            "/v3/loyaltyusers/create", loyaltycard=str(card["id"]), email=other_case, password="x"
        )
        assert_error(again, 422, 304)
    page = http.get(f"/l/{card['code']}")
    joined = http.post(
        f"/l/{card['code']}/join",
        data={"form_token": form_token(page.text), "first_name": "José", "email": "josé@EXAMPLE.com"},
    )
    assert joined.status_code == 422, joined.text
    assert "This email address already has this card." in joined.text
    # Linking the same person from another card finds the holder already there.
    elsewhere = create_card(account, stamps_per_reward=8)
    theirs = create_holder(account, elsewhere["id"], email="josé@example.com")
    linked = assert_ok(account.call("/v3/loyaltyusers/link", loyaltycard=str(card["id"]), user=theirs["ID"]))
    assert linked["user"]["ID"] == first["ID"]
    assert [(h.email, h.email_key) for h in _holders_of(runtime, card["id"])] == [
        ("JOSÉ@example.com", "josé@example.com")
    ]
    # Erasing the person takes the key too: no trace of the address, and it may join again.
    erased = account.client.post(
        "/v4/privacy/erase", json={"email": "JOSÉ@example.com"}, headers=account.headers
    )
    assert erased.status_code == 200, erased.text
    assert [h.email_key for h in _holders_of(runtime, card["id"])] == [""]
    create_holder(account, card["id"], email="josé@example.com")


@pytest.fixture
def scratch_url(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new, empty database of the suite's kind."""
    if not settings.database_url.startswith("postgres"):
        return f"sqlite:///{tmp_path / 'scratch.db'}"
    return str(request.getfixturevalue("scratch_postgres"))


def test_the_migration_fills_in_the_email_keys_of_existing_holders(
    scratch_url: str, runtime: Runtime
) -> None:
    # The account is made through today's model (its columns), then the schema goes back to 0017.
    upgrade(scratch_url)
    database = Database(scratch_url)
    try:
        with database.transaction() as session:
            owner, _ = accounts.create_account(
                session, runtime.keyring, email="keys@example.com", password=None
            )
            owner_id = owner.id
        database.dispose()
        downgrade(scratch_url, "0017")
        card = (
            "INSERT INTO loyalty_cards (account_id, code, name, type, description, active, pin_digest, "
            "join_fields, created_at, updated_at) VALUES (:a, 'keys01', 'Card', 'stamp', '', true, '', "
            "'email', '2030-01-01', '2030-01-01') RETURNING id"
        )
        holder = (
            "INSERT INTO loyalty_holders (account_id, card_id, short_code, token, first_name, last_name, "
            "email, phone, gender, city, custom_fields, points, stamps, cycle, voided, created_at, "
            "updated_at) VALUES (:a, :c, :short, :token, '', '', :email, '', '', '', '{}', 0, 0, 0, "
            "false, '2030-01-01', '2030-01-01')"
        )
        with database.engine.begin() as conn:
            card_id = conn.execute(text(card), {"a": owner_id}).scalar_one()
            for number, email in enumerate(["JOSÉ@Example.com", "", "ana@example.com"]):
                params = {"a": owner_id, "c": card_id, "short": f"KEY00{number}", "token": f"t{number}"}
                conn.execute(text(holder), {**params, "email": email})
        upgrade(scratch_url)
        with database.engine.connect() as conn:
            keys = conn.execute(text("SELECT email_key FROM loyalty_holders ORDER BY id")).scalars().all()
        assert keys == ["josé@example.com", "", "ana@example.com"]
    finally:
        database.dispose()


def test_the_card_page_shows_a_page_whatever_added_holds(http: httpx2.Client, account: TestAccount) -> None:
    """`?added=abc` answered the API's JSON error envelope instead of the holder's card page."""
    card = create_card(account, stamps_per_reward=8)
    path = "/" + create_holder(account, card["id"])["url"].split("/", 3)[3]
    for query, shown in (
        ("abc", None),
        ("-5", None),
        ("9" * 30, None),
        ("3", "Added 3 stamps."),
        ("500", "100"),
    ):
        page = http.get(f"{path}?added={query}")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        if shown is None:
            assert "Added " not in page.text
        else:
            assert shown in page.text


# --- the join form's key, after the review of the whole change -----------------------------------


def test_refused_joins_still_count_toward_the_join_limit(settings: Settings, account: TestAccount) -> None:
    """Making the form's nonce its idempotency key counted the join inside the savepoint that a
    refusal rolls back: one form sent again and again learned which emails hold the card ("already
    has this card") without ever meeting the join limit. A refused join counts again."""
    card = create_card(account, stamps_per_reward=8)
    create_holder(account, card["id"], email="known@example.com")
    with (
        served_with(settings, joins_per_address_per_hour=3) as (server, _runtime),
        httpx2.Client(base_url=server.url, timeout=30) as phone,
    ):
        token = form_token(phone.get(f"/l/{card['code']}").text)
        fields = {"form_token": token, "first_name": "X", "email": "known@example.com"}
        answers = [phone.post(f"/l/{card['code']}/join", data=fields) for _ in range(5)]
    assert [a.status_code for a in answers] == [422, 422, 422, 429, 429]
    assert "already has this card" in answers[0].text
    assert answers[3].headers["Retry-After"]


def test_a_join_form_is_fingerprinted_under_the_server_key(
    http: httpx2.Client, account: TestAccount, runtime: Runtime
) -> None:
    """The join's record kept a plain SHA-256 of the name and email typed: a copy of the table told,
    by hashing guesses, who joined which card (the API's fingerprints are keyed)."""
    card = create_card(account, stamps_per_reward=8)
    fields = {"first_name": "Eva", "email": "eva.secret@example.com"}
    data = {"form_token": form_token(http.get(f"/l/{card['code']}").text), **fields}
    assert http.post(f"/l/{card['code']}/join", data=data).status_code == 303
    values = {"first_name": "Eva", "last_name": "", "email": "eva.secret@example.com", "phone": ""}
    guess = hashlib.sha256(json.dumps([card["id"], values], sort_keys=True).encode()).hexdigest()
    with runtime.db.read() as session:
        hashes = session.scalars(
            text("SELECT request_hash FROM idempotency_records WHERE account_id = :a"), {"a": account.id}
        ).all()
    assert hashes, "the join keeps its key"
    assert guess not in hashes


def test_join_answers_are_kept_by_no_cache(http: httpx2.Client, account: TestAccount) -> None:
    """The join page (its form token), the join's answer (the holder's name, email and card
    address) and the redirect to a remembered card carry Cache-Control: no-store and nosniff."""
    card = create_card(account, stamps_per_reward=8)
    page = http.get(f"/l/{card['code']}")
    data = {"form_token": form_token(page.text), "first_name": "Eva", "email": "eva.cache@example.com"}
    joined = http.post(f"/l/{card['code']}/join", data=data, headers={"Accept": "application/json"})
    assert joined.status_code == 201, joined.text
    again = http.get(f"/l/{card['code']}")
    assert again.status_code == 303
    for answer in (page, joined, again):
        assert answer.headers.get("cache-control") == "no-store", answer.request.url
        assert answer.headers.get("x-content-type-options") == "nosniff"
