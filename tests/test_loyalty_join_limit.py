"""Loyalty card joins per client address: `POST /l/{code}/join` makes at most
OPENCOUPON_JOINS_PER_ADDRESS_PER_HOUR holders of a card an hour from one address, so one address
cannot fill a card with made-up holders. Other cards and other addresses go on."""

from __future__ import annotations

import secrets

import httpx2
from sqlalchemy import func, select

from conftest import TestAccount, served_with
from foundation_fixtures import browser_from
from loyalty_fixtures import create_card
from opencoupon.config import Settings
from opencoupon.models import LoyaltyHolder
from opencoupon.runtime import Runtime
from test_loyalty_pages import form_token


def _join(base_url: str, code: str, address: str = "127.0.0.1", accept: str = "text/html") -> httpx2.Response:
    """A new phone at `address` opens the join page and sends the form."""
    with browser_from(base_url, address, accept) as phone:
        page = phone.get(f"/l/{code}", headers={"Accept": "text/html"})
        assert page.status_code == 200, page.text
        email = f"join-{secrets.token_hex(6)}@example.com"
        return phone.post(
            f"/l/{code}/join", data={"form_token": form_token(page.text), "first_name": "Ana", "email": email}
        )


def _holders(runtime: Runtime, card_id: int) -> int:
    with runtime.db.read() as session:
        return int(session.scalar(select(func.count()).where(LoyaltyHolder.card_id == card_id)) or 0)


def test_one_address_joins_a_card_a_bounded_number_of_times(
    settings: Settings, runtime: Runtime, account: TestAccount
) -> None:
    card = create_card(account)
    other = create_card(account, name="Tea card")
    with served_with(settings, joins_per_address_per_hour=2) as (server, _runtime):
        joined = [_join(server.url, card["code"]) for _ in range(2)]
        assert [response.status_code for response in joined] == [303, 303]
        refused = _join(server.url, card["code"])
        assert refused.status_code == 429, refused.text
        assert "Too many cards were joined from this network" in refused.text
        assert 3500 <= int(refused.headers["retry-after"]) <= 3600
        as_json = _join(server.url, card["code"], accept="application/json")
        assert as_json.status_code == 429
        assert "Too many cards" in as_json.json()["error"]
        # Another card, and another address, are counted apart.
        assert _join(server.url, other["code"]).status_code == 303
        assert _join(server.url, card["code"], address="127.0.0.2").status_code == 303
    assert _holders(runtime, card["id"]) == 3


def test_the_join_limit_can_be_turned_off(settings: Settings, runtime: Runtime, account: TestAccount) -> None:
    card = create_card(account)
    with served_with(settings, joins_per_address_per_hour=0) as (server, _runtime):
        assert [_join(server.url, card["code"]).status_code for _ in range(4)] == [303] * 4
    assert _holders(runtime, card["id"]) == 4
