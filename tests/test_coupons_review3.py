"""Third review of the coupons area: an imported list keeps its own cursor (codes handed out before
it do not skip its first codes), session codes in any letter case on the API, empty numbers not
given, no claim after a partial validation, and `expiry_date` a date only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from conftest import LiveServer, TestAccount
from coupons_fixtures import create_campaign, csrf_token, open_session, session_status
from helpers import assert_ok
from opencoupon.accounts import service as accounts
from opencoupon.config import Settings
from opencoupon.coupons import repository, service
from opencoupon.coupons.schemas import CampaignCreate
from opencoupon.coupons.sessions import new_session
from opencoupon.db.migrate import downgrade, upgrade
from opencoupon.kit.clock import utcnow
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime


def _patch(account: TestAccount, campaign: dict[str, Any], **fields: Any) -> httpx2.Response:
    return account.client.patch(f"/v4/campaigns/{campaign['id']}", json=fields, headers=account.headers)


def _codes_of_new_sessions(account: TestAccount, live_server: LiveServer, code: str, count: int) -> list[str]:
    sessions = [open_session(live_server, code) for _ in range(count)]
    return [str(session_status(account, s)["own_validation_code"]) for s in sessions]


def _usage(account: TestAccount, campaign: dict[str, Any]) -> tuple[str, str]:
    info = assert_ok(account.call("/v3/coupon/info", campaign=campaign["id"], show_usage_stats=True))
    usage = info["coupon_info"]["usage_stats"]
    return usage["custom_validation_codes"], usage["claimed_custom_validation_codes"]


# ---------------------------------------------------------------- 1. an imported list's cursor


def test_a_list_given_after_generated_codes_starts_at_its_first_code(
    account: TestAccount, live_server: LiveServer
) -> None:
    """The count of codes handed out was also the list's cursor: after 3 generated codes a list of
    4 handed out its fourth first (and a list shorter than the count, none at all)."""
    campaign = create_campaign(account, custom_code_mode="generated")
    generated = _codes_of_new_sessions(account, live_server, campaign["code"], 3)
    assert all(generated)
    patched = _patch(account, campaign, custom_codes=["AAA1", "BBB2", "CCC3", "DDD4"])
    assert patched.status_code == 200, patched.text
    assert _codes_of_new_sessions(account, live_server, campaign["code"], 1) == ["AAA1"]
    # The list's own codes handed out (1 of 4), not every code handed out (4).
    assert _usage(account, campaign) == ("4", "1")
    answer = account.client.get(f"/v4/campaigns/{campaign['id']}", headers=account.headers).json()
    assert (answer["custom_codes_total"], answer["custom_codes_issued"]) == (4, 4)


def test_a_fresh_list_after_a_used_up_one_is_handed_out_from_its_start(
    account: TestAccount, live_server: LiveServer
) -> None:
    campaign = create_campaign(account, custom_codes=["A1", "A2"])
    assert _codes_of_new_sessions(account, live_server, campaign["code"], 2) == ["A1", "A2"]
    assert _codes_of_new_sessions(account, live_server, campaign["code"], 1) == [""]  # used up
    patched = _patch(account, campaign, custom_codes=["B1", "B2", "B3"])
    assert patched.status_code == 200, patched.text
    assert _codes_of_new_sessions(account, live_server, campaign["code"], 4) == ["B1", "B2", "B3", ""]
    assert _usage(account, campaign) == ("3", "3")


def test_the_same_list_given_again_with_codes_added_continues_where_it_was(
    account: TestAccount, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new list starts after its leading codes that sessions already hold, looked up in
    chunks (two codes a query here) and no further than the first code not held."""
    monkeypatch.setattr(repository, "HELD_CODES_CHUNK", 2, raising=False)
    campaign = create_campaign(account, custom_codes=["A1", "A2", "A3"])
    assert _codes_of_new_sessions(account, live_server, campaign["code"], 3) == ["A1", "A2", "A3"]
    patched = _patch(account, campaign, custom_codes=["A1", "A2", "A3", "A4", "A5"])
    assert patched.status_code == 200, patched.text
    assert _usage(account, campaign) == ("5", "3")
    assert _codes_of_new_sessions(account, live_server, campaign["code"], 1) == ["A4"]
    # A code held further in is still skipped: A4 and A1 are held, the cursor stops before X9.
    patched = _patch(account, campaign, custom_codes=["A1", "A2", "X9", "A4", "Y8"])
    assert patched.status_code == 200, patched.text
    assert _codes_of_new_sessions(account, live_server, campaign["code"], 3) == ["X9", "Y8", ""]


@pytest.fixture(params=["sqlite", "postgresql"])
def scratch_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty scratch database: a SQLite file, and a PostgreSQL one when the suite runs there."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'scratch.db'}"
    return str(request.getfixturevalue("scratch_postgres"))


def test_migration_0016_places_existing_lists_after_their_leading_held_codes(
    scratch_url: str, tmp_path: Path
) -> None:
    """Existing lists get the cursor a list given now gets: after their leading codes held."""
    url = scratch_url
    upgrade(url)
    scratch = Runtime.from_settings(
        Settings(database_url=url, secret_key="k" * 40, var_dir=tmp_path, rate_limit_per_second=0)
    )
    try:
        with scratch.db.transaction() as session:
            owner, _secret = accounts.create_account(session, scratch.keyring, email="cursor@example.com")
            ctx = ApiContext(session=session, account=owner, runtime=scratch, now=utcnow())
            partly = service.create_campaign(
                ctx, CampaignCreate(name="Partly", custom_codes=["A", "B", "C", "D"])
            )
            whole = service.create_campaign(ctx, CampaignCreate(name="Whole", custom_codes=["X", "Y"]))
            fresh = service.create_campaign(ctx, CampaignCreate(name="Fresh", custom_codes=["N1", "N2"]))
            plain = service.create_campaign(ctx, CampaignCreate(name="Plain", custom_code_mode="generated"))
            for campaign, held in ((partly, ["A", "B", "D"]), (whole, ["X", "Y"]), (fresh, ["Z"])):
                for code in held:
                    new_session(session, campaign, custom_validation_code=code)
            fresh.custom_codes_issued = 7  # as if generated codes had been handed out before
            plain.custom_codes_issued = 3
            ids = [c.id for c in (partly, whole, fresh, plain)]
        downgrade(url, "0015")
        upgrade(url)
        with scratch.db.read() as session:
            found = [
                session.execute(
                    select(Campaign.custom_codes_position, Campaign.custom_codes_issued).where(
                        Campaign.id == i
                    )
                ).one()
                for i in ids
            ]
        assert [tuple(row) for row in found] == [(2, 0), (2, 0), (0, 7), (0, 3)]
    finally:
        scratch.db.dispose()


# ---------------------------------------------------------------- 2. session codes in any case


def test_the_api_finds_a_session_by_its_code_in_any_letter_case(
    account: TestAccount, live_server: LiveServer
) -> None:
    """Codes are issued in lower case; typed in upper case (a full code or its short form) on
    couponsession/data, update and update/multiple they answered 505 though the staff page took them."""
    campaign = create_campaign(account, validations_per_session=3)
    code = open_session(live_server, campaign["code"])
    assert code == code.lower()
    assert code != code.upper()
    short = code[:6]
    for given in (code.upper(), short.upper()):
        found = assert_ok(account.call("/v3/couponsession/data", couponsession=given))
        assert found["session"] == code
        changed = assert_ok(account.call("/v3/couponsession/update", couponsession=given, validate=True))
        assert changed["session"] == code
    many = assert_ok(
        account.call("/v3/couponsession/update/multiple", couponsessions=[code.upper()], validate=True)
    )
    assert many["amount_succeeded"] == "1", many
    assert session_status(account, code)["validations"] == "3"


# ---------------------------------------------------------------- 3. empty numbers not given


def test_numbers_sent_empty_are_not_given_and_booleans_are_not_numbers(account: TestAccount) -> None:
    """`stats_days`, `expiry_minutes` and `expiry_days` were plain ints: empty answered 300, and
    `true` was taken as 1 (day)."""
    campaign = create_campaign(account, expiry_mode="after_open", expiry_minutes=90)
    info = assert_ok(
        account.call("/v3/coupon/info", campaign=campaign["id"], show_usage_stats="1", stats_days="")
    )
    assert len(info["coupon_info"]["usage_stats"]["per_day_since"]) == 10  # the default window
    for empty in ({"expiry_minutes": ""}, {"expiry_days": ""}):
        patched = _patch(account, campaign, expiry_mode="after_open", **empty)
        assert patched.status_code == 200, patched.text
        assert patched.json()["expiry_minutes"] == 90  # kept: not given
    for field in ("expiry_days", "expiry_minutes"):
        refused = _patch(account, campaign, **{field: True})
        assert refused.status_code == 422, refused.text
        assert refused.json()["status"]["errors"]["error_code"] == [300]
    after = account.client.get(f"/v4/campaigns/{campaign['id']}", headers=account.headers).json()
    assert after["expiry_minutes"] == 90


# ---------------------------------------------------------------- 4. no claim after a validation


def _validated_once_of_two(account: TestAccount, phone: httpx2.Client) -> tuple[str, str]:
    """A coupon opened on `phone`, of a campaign allowing two validations, validated once by the API:
    its page's path and its code."""
    campaign = create_campaign(account, validations_per_session=2, claim_fields="firstname")
    opened = phone.get(f"/p/{campaign['code']}")
    assert opened.status_code == 303, opened.text
    path = str(opened.headers["location"])
    assert f'action="{path}/claim"' in phone.get(path).text  # offered while not validated
    code = path.rsplit("/", 1)[1]
    assert_ok(account.call("/v3/couponsession/update", couponsession=code, validate=True))
    return path, code


def _refused_as_validated(answer: httpx2.Response) -> None:
    assert answer.status_code == 409, answer.text
    errors = answer.json()["status"]["errors"]
    assert (errors["error_code"], errors["error_message_description"]) == (
        [308],
        ["This coupon has already been validated."],
    )


def test_the_api_does_not_claim_a_coupon_validated_once_of_several(
    account: TestAccount, live_server: LiveServer
) -> None:
    """With two validations allowed, a coupon validated once is still "open": the API's claim took
    it (claimed "1") though a coupon used at the counter is not claimed afterwards."""
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        _path, code = _validated_once_of_two(account, phone)
    _refused_as_validated(account.call("/v3/couponsession/update", couponsession=code, claim=True))
    status = session_status(account, code)
    assert (status["claimed"], status["validations"]) == ("0", "1")
    # The second validation allowed still goes through.
    assert_ok(account.call("/v3/couponsession/update", couponsession=code, validate=True))


def test_the_claim_form_is_neither_offered_nor_taken_once_the_coupon_is_validated(
    account: TestAccount, live_server: LiveServer
) -> None:
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        path, code = _validated_once_of_two(account, phone)
        assert f'action="{path}/claim"' not in phone.get(path).text
        form = phone.post(
            f"{path}/claim",
            data={"csrf": csrf_token(phone, path), "firstname": "Ada"},
            headers={"Accept": "application/json"},
        )
        _refused_as_validated(form)
    assert session_status(account, code)["claimed"] == "0"


# ---------------------------------------------------------------- 5. a malformed campaign


def test_a_malformed_campaign_answers_301_and_an_unknown_one_502(
    account: TestAccount, live_server: LiveServer
) -> None:
    """As docs/coupons.md now says (it said 502 for a malformed one too)."""
    campaign = create_campaign(account)
    code = open_session(live_server, campaign["code"])
    for given, expected in (("abc", 301), ("cam_x1", 301), ("cam_999999", 502)):
        answer = account.call("/v3/couponsession/data", couponsession=code, campaign=given)
        assert answer.json()["status"]["errors"]["error_code"] == [expected], (given, answer.text)
    malformed = account.call("/v3/couponsession/data", couponsession=code, campaign="abc")
    errors = malformed.json()["status"]["errors"]
    assert (malformed.status_code, errors["error_message_description"]) == (
        422,
        ["Invalid character in parameter: campaign."],
    )


# ---------------------------------------------------------------- 6. expiry_date is a date only


def test_an_expiry_date_with_a_time_is_refused_not_cut(account: TestAccount) -> None:
    """`expiry_date` names a day (valid through its end, local time): "2027-01-01 10:00" was taken
    as 2027-01-01, the time silently dropped."""
    for given in ("2027-01-01 10:00", "2027-01-01 10:00:00", "2027-01-01T10:00"):
        refused = account.client.post(
            "/v4/campaigns",
            json={"name": "Timed", "expiry_mode": "fixed_date", "expiry_date": given},
            headers=account.headers,
        )
        assert refused.status_code == 422, (given, refused.text)
        errors = refused.json()["status"]["errors"]
        assert errors["error_code"] == [303], given
        assert errors["error_message_description"] == [
            "Invalid format in parameter: expiry_date. Required format: yyyy-MM-dd"
        ]
    campaign = create_campaign(account, expiry_mode="fixed_date", expiry_date="2027-01-01")
    assert campaign["expiry_date"] == "2027-01-01"
    refused = _patch(account, campaign, expiry_date="2027-02-01 23:59")
    assert refused.json()["status"]["errors"]["error_code"] == [303], refused.text
    after = account.client.get(f"/v4/campaigns/{campaign['id']}", headers=account.headers).json()
    assert after["expiry_date"] == "2027-01-01"
