"""Hostile request bodies and parameters get a clear error in the envelope, fast, never a 500:
found by a fuzzing pass (repeated keys, deep nesting, JSON decoded from a parameter's text after
the request's character check, numbers no integer holds, money written as Python but not people
write it)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from conftest import TestAccount
from coupons_fixtures import bulk_sessions, create_campaign
from helpers import assert_error, assert_ok
from loyalty_fixtures import create_card
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime

DEEP = "[" * 1200 + "]" * 1200


def test_a_key_repeated_many_times_is_parsed_in_linear_time(
    http: httpx2.Client, account: TestAccount
) -> None:
    """Each repeat copied the whole list: 200,000 repeats (a 400 KB body, before credentials are
    even read) held the event loop, and every other client, for about 20 s."""
    body = "&".join(["tags=a"] * 130_000)
    started = time.monotonic()
    refused = http.post(
        "/v3/coupon/list", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert refused.status_code == 401
    answered = http.post(
        "/v3/coupon/list",
        content=body,
        headers={**account.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_ok(answered)
    # Linear: well under a second each here; quadratic took minutes for the two.
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("path", ["/v3/coupon/list", "/v4/campaigns"])
def test_a_deeply_nested_json_body_is_code_300(http: httpx2.Client, account: TestAccount, path: str) -> None:
    assert_error(http.post(path, content=DEEP, headers={"Content-Type": "application/json"}), 422, 300)
    nested = '{"name": ' + "[" * 500 + "]" * 500 + "}"
    assert_error(
        http.post(path, content=nested, headers={**account.headers, "Content-Type": "application/json"}),
        422,
        300,
    )


@pytest.mark.parametrize("path", ["/v3/coupon/list", "/v4/loyalty/loyalty-cards"])
def test_nested_form_keys_are_bounded_in_depth_and_number(
    http: httpx2.Client, account: TestAccount, path: str
) -> None:
    """`a[0][b]=1` keys nest as PHP nests them: past 32 levels, or past 20,000 such keys in one
    form (each may make 31 containers), the call answers 300, quickly."""
    form = {**account.headers, "Content-Type": "application/x-www-form-urlencoded"}
    deep = "name=x&rewards" + "[0]" * 32 + "=1"
    assert_error(http.post(path, content=deep, headers=form), 422, 300)
    assert_error(http.get(path + "?rewards" + "[0]" * 32 + "=1", headers=account.headers), 422, 300)
    many = "&".join(f"u[{i}][x]=1" for i in range(20_001))
    started = time.monotonic()
    assert_error(http.post(path, content=many, headers=form), 422, 300)
    assert time.monotonic() - started < 10
    # 31 levels are read (and what a call does not take is ignored or refused as any value is).
    at_limit = "tags" + "[0]" * 31 + "=1"
    answered = http.post("/v3/coupon/list", content=at_limit, headers=form)
    assert answered.status_code in (200, 422), answered.text
    assert answered.json()["status"]["status"] in ("OK", "failed")


def test_a_deeply_nested_list_in_a_parameters_text_is_plain_text(account: TestAccount) -> None:
    """Decoding it overflowed the stack (a 500); it is not a JSON list, so it is one value."""
    listed = account.client.get("/v3/coupon/list", params={"tags": DEEP}, headers=account.headers)
    assert assert_ok(listed)["coupon_info"] == []
    batch = assert_ok(account.call("/v3/couponsession/update/multiple", couponsessions=DEEP, claim=True))
    assert (batch["amount_of_results"], batch["amount_failed"]) == ("1", "1")


def test_a_list_given_as_json_text_is_checked_for_unstorable_characters(
    account: TestAccount, runtime: Runtime
) -> None:
    """`tags=["x\\u0000y"]` was decoded after the character check and stored a NUL, which
    PostgreSQL refuses: a database that cannot be moved. Refused as a real list is (301)."""
    name = "NUL tags"
    for fields in (
        {"tags": '["t\\u0000"]'},
        {"custom_code_mode": "imported", "custom_codes": '["AB\\u0000CD"]'},
    ):
        response = account.client.post(
            "/v4/campaigns", json={"name": name, **fields}, headers=account.headers
        )
        assert_error(response, 422, 301)
    form = account.client.post(
        "/v4/campaigns", data={"name": name, "tags": '["x\\u0000y"]'}, headers=account.headers
    )
    assert_error(form, 422, 301)
    with runtime.db.read() as session:
        assert session.scalars(select(Campaign.id).where(Campaign.name == name)).all() == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"pagination": '{"page": Infinity}'}, 300),
        ({"pagination": '{"page": 1e309}'}, 300),
        ({"filter": '{"first_name": "\\ud800"}'}, 301),
        ({"filter": '{"first_name": "a\\u0000"}'}, 301),
        ({"filter": DEEP}, 300),
    ],
)
def test_loyalty_stats_filter_and_pagination_text_is_checked(
    account: TestAccount, query: dict[str, str], code: int
) -> None:
    card = create_card(account, type="points")
    response = account.client.get(
        f"/v4/loyalty/loyalty-cards/{card['id']}/stats", params=query, headers=account.headers
    )
    assert_error(response, 422, code)


@pytest.mark.parametrize("money", ["-0", "1_000", "1e3", "12.5.0", "+3"])
def test_validation_value_is_money_as_people_write_it(
    account: TestAccount, runtime: Runtime, money: str
) -> None:
    campaign = create_campaign(account)
    [code] = bulk_sessions(runtime, campaign["id"], 1)
    assert_error(
        account.call("/v3/couponsession/update", couponsession=code, validation_value=money), 422, 300
    )
    for written, stored in (("12", "12.00"), ("12,5", "12.50"), (".50", "0.50"), (" 3.25 ", "3.25")):
        answer = assert_ok(
            account.call("/v3/couponsession/update", couponsession=code, validation_value=written)
        )
        assert answer["data"]["status"]["validation_value"] == stored


@pytest.mark.parametrize("digits", [20, 5000])
def test_an_id_with_more_digits_than_any_id_is_not_found(account: TestAccount, digits: int) -> None:
    """Well formed, just not anyone's: not found (502), as `cam_0` is; it was "invalid character"."""
    assert_error(account.call("/v3/coupon/info", campaign="cam_" + "9" * digits), 404, 502)
    assert_error(account.call("/v3/coupon/info", campaign="cam_9x"), 422, 301)


@pytest.mark.parametrize("number", [2**31, 2**31 + 5, 2**62, 10**17])
def test_an_id_beyond_the_id_columns_is_not_found_on_every_database(
    account: TestAccount, number: int
) -> None:
    """The ID columns are int4 on PostgreSQL: `sub_2147483648` answered 300 "value too large" there
    (and 404 on SQLite). It is the same not-found answer as an unknown ID in range, per object kind."""
    for unknown in (2**31 - 1, number):  # the largest ID a column holds, then one it cannot
        answers = [
            account.call("/v4/subaccount", subaccount=f"sub_{unknown}"),
            account.call("/v3/coupon/info", campaign=f"cam_{unknown}"),
            account.call("/v3/loyalty/info", loyaltycard=str(unknown)),
            account.call("/v3/directory/info", directory=f"dir_{unknown}"),
            account.client.get(f"/v4/webhooks/whe_{unknown}", headers=account.headers),
            account.client.get(f"/v4/campaigns/cam_{unknown}", headers=account.headers),
        ]
        bodies = [
            assert_error(answer, 404, code)
            for answer, code in zip(answers, [510, 502, 507, 507, 509, 502], strict=True)
        ]
        if unknown == 2**31 - 1:
            in_range = bodies
        else:
            assert bodies == in_range  # same code, same message


def test_a_huge_validation_value_is_refused_at_once(account: TestAccount, runtime: Runtime) -> None:
    """A long run of digits and one letter: the money pattern backtracked quadratically, holding
    the event loop (60,000 digits: 9 s for every client of the server)."""
    campaign = create_campaign(account)
    [code] = bulk_sessions(runtime, campaign["id"], 1)
    started = time.monotonic()
    refused = account.call(
        "/v3/couponsession/update", couponsession=code, validation_value="1" * 200_000 + "x"
    )
    assert_error(refused, 422, 300)
    assert time.monotonic() - started < 10  # linear: milliseconds; quadratic: minutes
    assert_ok(account.call("/v3/couponsession/update", couponsession=code, validation_value="12."))


@pytest.mark.parametrize("item", [None, True, {}, [1]])
def test_a_list_item_that_is_not_a_text_or_a_number_is_code_300(account: TestAccount, item: Any) -> None:
    """`tags: [null]` listed the coupons tagged "None" and `[{}]` those tagged "{}" (and a campaign
    created with them kept those words as tags): only texts and numbers are list items."""
    listed = account.client.post("/v3/coupon/list", json={"tags": ["a", item]}, headers=account.headers)
    assert_error(listed, 422, 300)
    as_text = account.client.post(
        "/v4/campaigns", data={"name": "odd tags", "tags": json.dumps(["a", item])}, headers=account.headers
    )
    assert_error(as_text, 422, 300)
    assert assert_ok(account.call("/v3/coupon/list", tags=["a", 2]))["coupon_info"] == []
