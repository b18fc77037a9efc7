"""New coupon sessions per client address: `GET /p/{code}` opens at most
OPENCOUPON_OPENS_PER_ADDRESS_PER_HOUR new sessions of a campaign an hour from one address, so an
anonymous visitor cannot drain an imported custom-code list (every new session takes the next
code) or inflate the opens. A returning browser, other campaigns and other addresses go on."""

from __future__ import annotations

import httpx2

from conftest import LiveServer, TestAccount, served_with
from coupons_fixtures import create_campaign, session_status
from foundation_fixtures import browser_from
from helpers import assert_ok
from opencoupon.config import Settings


def _open(server: LiveServer, code: str, address: str = "127.0.0.1") -> httpx2.Response:
    with browser_from(server.url, address) as phone:
        return phone.get(f"/p/{code}")


def test_one_address_opens_a_bounded_number_of_new_sessions(settings: Settings, account: TestAccount) -> None:
    campaign = create_campaign(account)
    other = create_campaign(account, name="Tea")
    with served_with(settings, opens_per_address_per_hour=3) as (server, _runtime):
        with browser_from(server.url, "127.0.0.1") as returning:
            first = returning.get(f"/p/{campaign['code']}")
            assert first.status_code == 303, first.text
            opened = [first.headers["location"]]
            opened += [_open(server, campaign["code"]).headers["location"] for _ in range(2)]
            assert len(set(opened)) == 3

            refused = _open(server, campaign["code"])
            assert refused.status_code == 429, refused.text
            assert "Too many coupons were opened from this network" in refused.text
            assert 3500 <= int(refused.headers["retry-after"]) <= 3600
            with browser_from(server.url, "127.0.0.1", "application/json") as app:
                answer = app.get(f"/p/{campaign['code']}")
            assert answer.status_code == 429
            assert answer.json()["status"]["errors"]["error_code"] == [429]

            # The browser that opened the first session still gets it back.
            again = returning.get(f"/p/{campaign['code']}")
            assert (again.status_code, again.headers["location"]) == (303, opened[0])
        # Another campaign, and another address, are counted apart.
        assert _open(server, other["code"]).status_code == 303
        assert _open(server, campaign["code"], address="127.0.0.2").status_code == 303
    listed = assert_ok(account.call("/v3/campaign/opens", campaign=campaign["id"]))
    assert len(listed["data"]) == 4


def test_a_refused_open_takes_no_custom_code(settings: Settings, account: TestAccount) -> None:
    codes = [f"LIST-{i}" for i in range(1, 6)]
    campaign = create_campaign(account, custom_codes=codes)
    with served_with(settings, opens_per_address_per_hour=2) as (server, _runtime):
        locations = [_open(server, campaign["code"]) for _ in range(4)]
        assert [response.status_code for response in locations] == [303, 303, 429, 429]
        later = _open(server, campaign["code"], address="127.0.0.3")
        assert later.status_code == 303
    handed = []
    for response in [*locations[:2], later]:
        session = response.headers["location"].rsplit("/", 1)[1]
        assert_ok(account.call("/v3/couponsession/update", couponsession=session, claim=True))
        handed.append(session_status(account, session)["own_validation_code"])
    assert handed == codes[:3]


def test_the_limit_can_be_turned_off(settings: Settings, account: TestAccount) -> None:
    campaign = create_campaign(account)
    with served_with(settings, opens_per_address_per_hour=0) as (server, _runtime):
        assert [_open(server, campaign["code"]).status_code for _ in range(5)] == [303] * 5
