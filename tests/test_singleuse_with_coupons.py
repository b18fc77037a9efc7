"""Single-use links as the coupons capability serves them: pre-filled data in session data,
voided links that validate only once activated, removed links that stop working and leave the
usage data. These run once the coupons capability (consumer pages, couponsession calls) is
present in the tree."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import assert_error, assert_ok
from singleuse_fixtures import CampaignRef

pytest.importorskip("opencoupon.coupons.router", reason="needs the coupons capability")


def _data(account: Any, code: str) -> dict[str, Any]:
    return assert_ok(account.call("/v3/couponsession/data", couponsession=code))


def test_prefill_shows_in_session_data_and_on_the_page(account: Any, su_campaign: CampaignRef) -> None:
    link = assert_ok(
        account.call(
            "/v3/singleuse/create",
            campaign=su_campaign.public_id,
            firstname="Ada",
            lastname="Lovelace",
            email="ada@example.com",
            phone="+3247000",
            customid="CRM-1",
            customvalcode="BAR-1",
        )
    )
    code = link["single_use_code"]
    data = _data(account, code)
    assert data["session"] == code
    assert data["customid"] == "CRM-1"
    user = data["data"]["user"]
    assert (user["firstname"], user["lastname"], user["email"], user["phone"]) == (
        "Ada",
        "Lovelace",
        "ada@example.com",
        "+3247000",
    )
    assert data["data"]["status"]["own_validation_code"] == "BAR-1"
    page = account.client.get(f"/p/{su_campaign.code}/{code}", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "Ada" in page.text


def test_a_voided_link_validates_only_once_activated(account: Any, su_campaign: CampaignRef) -> None:
    [item] = assert_ok(
        account.call(
            "/v3/multiplesingleuse/create", campaign=su_campaign.public_id, amount=1, status="voided"
        )
    )["data"]
    code = item["single_use_code"]
    assert _data(account, code)["data"]["status"]["link_status"] == "voided"
    assert_error(account.call("/v3/couponsession/update", couponsession=code, validate=True), 409, 308)
    assert_ok(account.call("/v3/couponsession/update", couponsession=code, void=False))
    assert _data(account, code)["data"]["status"]["link_status"] == "activated"
    assert_ok(account.call("/v3/couponsession/update", couponsession=code, validate=True))
    assert _data(account, code)["data"]["status"]["validated"] == "1"


def test_a_removed_link_stops_working_and_leaves_the_usage_data(
    account: Any, su_campaign: CampaignRef
) -> None:
    items = assert_ok(account.call("/v3/multiplesingleuse/create", campaign=su_campaign.public_id, amount=2))[
        "data"
    ]
    gone, kept = items[0]["single_use_code"], items[1]["single_use_code"]
    assert_ok(account.call("/v3/singleuse/remove", single_use_code=gone))
    page = account.client.get(f"/p/{su_campaign.code}/{gone}", headers={"Accept": "text/html"})
    assert "no longer available" in page.text.lower()
    assert (
        account.call("/v3/couponsession/update", couponsession=gone, validate=True).json()["status"]["status"]
        == "failed"
    )
    listed = assert_ok(account.call("/v3/campaign/data", campaign=su_campaign.public_id))
    sessions = [entry["session"] for entry in listed["data"]]
    assert kept in sessions
    assert gone not in sessions


def test_a_removed_links_page_answers_no_personal_data_as_json(
    account: Any, su_campaign: CampaignRef
) -> None:
    """The HTML of a removed link hid the person's details, its JSON answer did not: whoever held
    the address of a link sent to the wrong person and then removed read their name, email, phone
    and validation code. Both say only that it is gone."""
    made = assert_ok(
        account.call(
            "/v3/singleuse/create",
            campaign=su_campaign.public_id,
            firstname="Ann",
            email="ann.removed@example.com",
            phone="+3212345678",
            customvalcode="SECRET-1",
        )
    )
    code = str(made["single_use_code"])
    assert_ok(account.call("/v3/singleuse/remove", single_use_code=code))
    page = account.client.get(f"/p/{su_campaign.code}/{code}", headers={"Accept": "application/json"})
    assert page.status_code == 200, page.text
    answer = page.json()
    assert answer["state"] == "removed"
    assert "no longer available" in answer["message"].lower()
    assert answer["data"]["status"]["removed"] == "1"
    for secret in ("Ann", "ann.removed@example.com", "3212345678", "SECRET-1"):
        assert secret not in page.text, secret
