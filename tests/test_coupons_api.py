"""The v3 Campaign calls and /v4/campaigns, over real HTTP against the live server."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx2
from sqlalchemy import func, select

from conftest import LiveServer, make_account
from coupons_fixtures import Acct, bulk_sessions, create_campaign, open_session, session_status
from directories_fixtures import create_category
from helpers import assert_error, assert_ok
from opencoupon.coupons import stats
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account, Campaign, CouponSession, Event, Validation
from opencoupon.runtime import Runtime


def _set_zone(runtime: Runtime, account_id: int, name: str) -> None:
    with runtime.db.transaction() as s:
        row = s.get(Account, account_id)
        assert row is not None
        row.timezone = name


def _events(runtime: Runtime, campaign_id: str, kind: str) -> list[dict[str, object]]:
    with runtime.db.read() as s:
        rows = s.scalars(select(Event).where(Event.campaign == campaign_id, Event.type == kind)).all()
        return [json.loads(r.data) for r in rows]


def test_create_campaign_answers_201_with_id_code_and_url(account: Acct) -> None:
    body = create_campaign(account, title="Free coffee", tags="summer, coffee", status="inactive")
    assert body["id"].startswith("cam_")
    assert len(body["code"]) == 6
    assert body["url"] == f"http://testserver.local/p/{body['code']}"
    assert body["tags"] == ["summer", "coffee"]
    assert body["status"] == "inactive"
    assert body["pin_set"] is True
    assert "pin" not in body


def test_campaign_crud_and_validation_errors(account: Acct) -> None:
    created = create_campaign(account)
    cid = created["id"]
    got = account.client.get(f"/v4/campaigns/{cid}", headers=account.headers)
    assert got.status_code == 200
    assert got.json()["code"] == created["code"]
    patched = account.client.patch(
        f"/v4/campaigns/{cid}", json={"title": "New", "max_validations": 5}, headers=account.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "New"
    assert patched.json()["max_validations"] == 5
    listed = account.client.get("/v4/campaigns", headers=account.headers).json()
    assert [c["id"] for c in listed] == [cid]
    bad = account.client.post(
        "/v4/campaigns", json={"name": "X", "expiry_mode": "sometimes"}, headers=account.headers
    )
    assert_error(bad, 422, 302)
    missing = account.client.post("/v4/campaigns", json={"title": "no name"}, headers=account.headers)
    assert_error(missing, 422, 200)
    no_date = account.client.post(
        "/v4/campaigns", json={"name": "X", "expiry_mode": "fixed_date"}, headers=account.headers
    )
    assert_error(no_date, 422, 200)
    deleted = account.client.delete(f"/v4/campaigns/{cid}", headers=account.headers)
    assert deleted.status_code == 200
    assert_error(account.client.get(f"/v4/campaigns/{cid}", headers=account.headers), 404, 502)
    assert account.client.get("/v4/campaigns", headers=account.headers).json() == []


def test_foreign_campaigns_and_sessions_answer_like_missing_ones(
    account: Acct, other_account: Acct, live_server: LiveServer
) -> None:
    mine = create_campaign(account)
    session = open_session(live_server, mine["code"])
    missing_id = "cam_999999999"
    for cid in (mine["id"], missing_id):
        foreign = other_account.client.get(f"/v4/campaigns/{cid}", headers=other_account.headers)
        body = assert_error(foreign, 404, 502)
        assert body["status"]["errors"]["error_message_description"] == ["Campaign ID not found."]
        patch = other_account.client.patch(
            f"/v4/campaigns/{cid}", json={"name": "x"}, headers=other_account.headers
        )
        assert_error(patch, 404, 502)
        assert_error(
            other_account.client.delete(f"/v4/campaigns/{cid}", headers=other_account.headers), 404, 502
        )
        assert_error(other_account.call("/v3/coupon/info", campaign=cid), 404, 502)
        assert_error(other_account.call("/v3/campaign/data", campaign=cid), 404, 502)
        assert_error(other_account.call("/v3/campaign/search", campaign=cid, search="x"), 404, 502)
    for code in (session, "zzzzzzzzzzzzzzzzzzzzz", session[:6]):
        body = assert_error(other_account.call("/v3/couponsession/data", couponsession=code), 404, 505)
        assert body["status"]["errors"]["error_message_description"] == ["Couponsession not found."]
        assert_error(
            other_account.call("/v3/couponsession/update", couponsession=code, validate=True), 404, 505
        )
    assert other_account.call("/v3/coupon/list").json()["coupon_info"] == []
    assert session_status(account, session)["validated"] == "0"


def test_v4_campaign_list_filters_as_coupon_list(account: Acct) -> None:
    category = create_category(account, "Drinks")["id"]
    a = create_campaign(account, name="A", tags="summer,Coffee", folder="f1")
    b = create_campaign(account, name="B", tags="winter", status="inactive", category=category)

    def listed(**query: str) -> list[str]:
        response = account.client.get("/v4/campaigns", params=query, headers=account.headers)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()]

    assert listed() == [a["id"], b["id"]]
    assert listed(tags="coffee,nothing") == [a["id"]]
    assert listed(category=category) == [b["id"]]
    assert listed(only_active="1") == [a["id"]]
    assert listed(folder="f1") == [a["id"]]
    assert listed(folder="nope") == []
    unknown = account.client.get("/v4/campaigns", params={"category": "cat_999999"}, headers=account.headers)
    assert unknown.status_code == 404


def test_master_reaches_subaccount_campaigns(account: Acct, subaccount: Acct) -> None:
    sub_campaign = create_campaign(subaccount, name="Shop coupon")
    info = assert_ok(account.call("/v3/coupon/info", campaign=sub_campaign["id"]))
    assert info["coupon_info"]["subaccount"] == f"sub_{subaccount.id}"
    master_campaign = create_campaign(account)
    assert_error(subaccount.call("/v3/coupon/info", campaign=master_campaign["id"]), 404, 502)


def test_coupon_list_filters(account: Acct) -> None:
    category = create_category(account, "Food")["id"]
    a = create_campaign(account, name="A", tags="summer,coffee", folder="f1")
    b = create_campaign(account, name="B", tags="winter", status="inactive", category=category)
    listed = assert_ok(account.call("/v3/coupon/list"))["coupon_info"]
    assert [c["ID"] for c in listed] == [a["id"], b["id"]]
    assert {"ID", "code", "name", "title", "status", "url"} <= set(listed[0])
    assert [c["ID"] for c in account.call("/v3/coupon/list", only_active="true").json()["coupon_info"]] == [
        a["id"]
    ]
    assert [c["ID"] for c in account.call("/v3/coupon/list", tags="winter").json()["coupon_info"]] == [
        b["id"]
    ]
    assert [c["ID"] for c in account.call("/v3/coupon/list", folder="f1").json()["coupon_info"]] == [a["id"]]
    assert [c["ID"] for c in account.call("/v3/coupon/list", category=category).json()["coupon_info"]] == [
        b["id"]
    ]
    assert_error(account.call("/v3/coupon/list", folder="nope"), 404, 515)
    # A folder that exists but whose campaigns the other filters leave out is an empty list, not 515.
    create_campaign(account, name="C", status="inactive", folder="f2")
    for filters in ({"only_active": "true"}, {"category": category}):
        assert assert_ok(account.call("/v3/coupon/list", folder="f2", **filters))["coupon_info"] == []
    # Form-encoded, as PHP clients send it.
    form = account.client.post("/v3/coupon/list", data={"only_active": "1"}, headers=account.headers)
    assert [c["ID"] for c in assert_ok(form)["coupon_info"]] == [a["id"]]


def test_a_campaign_category_is_one_the_caller_may_reach(account: Acct, other_account: Acct) -> None:
    """A campaign's category, and coupon/list's category filter, must name a category of the
    caller (or of its subaccounts): a missing one or another account's answers 516, as in the
    directory calls, and nothing is stored."""
    mine = create_category(account, "Food")["id"]
    theirs = create_category(other_account, "Drinks")["id"]
    for category in ("cat_99999999", theirs):
        refused = account.client.post(
            "/v4/campaigns", json={"name": "X", "category": category}, headers=account.headers
        )
        assert_error(refused, 404, 516)
        assert_error(account.call("/v3/coupon/list", category=category), 404, 516)
    assert assert_ok(account.call("/v3/coupon/list"))["coupon_info"] == []
    campaign = create_campaign(account, name="Y", category=mine)
    url = f"/v4/campaigns/{campaign['id']}"
    patched = account.client.patch(url, json={"category": theirs}, headers=account.headers)
    assert_error(patched, 404, 516)
    assert account.client.get(url, headers=account.headers).json()["category"] == mine
    listed = assert_ok(account.call("/v3/coupon/list", category=mine))["coupon_info"]
    assert [c["ID"] for c in listed] == [campaign["id"]]
    assert_error(other_account.call("/v3/coupon/list", category=mine), 404, 516)


def test_a_subaccounts_campaign_takes_only_a_category_its_account_may_hold(
    account: Acct, subaccount: Acct, runtime: Runtime, live_server: LiveServer
) -> None:
    """The master reaches every subaccount's categories, but a subaccount's campaign may only hold
    that subaccount's own: the campaign's answers go to the subaccount. A master's or a sibling's
    category answers 516 as a missing one, and nothing is stored. A master's campaign may hold its
    subaccounts' categories (as a master's directory may)."""
    sibling = make_account(runtime, live_server, parent_id=account.id)
    own = create_category(subaccount, "Shop shelf")["id"]
    masters = create_category(account, "Master shelf")["id"]
    siblings = create_category(sibling, "Sibling shelf")["id"]
    campaign = create_campaign(subaccount, name="Shop coupon", category=own)
    url = f"/v4/campaigns/{campaign['id']}"
    for foreign in (masters, siblings):
        assert_error(account.client.patch(url, json={"category": foreign}, headers=account.headers), 404, 516)
    assert account.client.get(url, headers=account.headers).json()["category"] == own
    assert subaccount.client.get(url, headers=subaccount.headers).json()["category"] == own
    assert assert_ok(account.call("/v3/coupon/list", category=masters))["coupon_info"] == []
    assert assert_ok(account.call("/v3/coupon/list", category=siblings))["coupon_info"] == []
    for value, stored in (("", None), (own, own)):
        patched = account.client.patch(url, json={"category": value}, headers=account.headers)
        assert patched.status_code == 200, patched.text
        assert patched.json()["category"] == stored
    # Down the tree is fine: the master's own campaign holds a subaccount's category.
    mine = create_campaign(account, name="Group coupon", category=siblings)
    assert mine["category"] == siblings
    sibling.client.close()


def test_coupon_info_usage_stats_follow_each_change(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, custom_codes="AAA111,BBB222,CCC333")
    info = assert_ok(account.call("/v3/coupon/info", campaign=campaign["id"]))["coupon_info"]
    assert "usage_stats" not in info
    sessions = [open_session(live_server, campaign["code"]) for _ in range(3)]
    assert_ok(account.call("/v3/couponsession/update", couponsession=sessions[0], claim=True))
    assert_ok(account.call("/v3/couponsession/update", couponsession=sessions[1], validate=True))
    usage = account.call("/v3/coupon/info", campaign=campaign["id"], show_usage_stats="true").json()
    got = usage["coupon_info"]["usage_stats"]
    today = utcnow().date().isoformat()
    assert got["opens"] == "3"
    assert got["claims"] == "1"
    assert got["validations"] == "1"
    assert got["custom_validation_codes"] == "3"
    assert got["claimed_custom_validation_codes"] == "3"
    assert got["per_day"] == [{"date": today, "opens": "3", "claims": "1", "validations": "1"}]
    old = (utcnow().date() - dt.timedelta(days=200)).isoformat()
    with runtime.db.transaction() as s:
        stats.bump_day(s, int(campaign["id"][4:]), dt.date.fromisoformat(old), opens=5)
    default = account.call("/v3/coupon/info", campaign=campaign["id"], show_usage_stats=True).json()
    assert default["coupon_info"]["usage_stats"]["opens"] == "8"
    assert [d["date"] for d in default["coupon_info"]["usage_stats"]["per_day"]] == [today]
    year = account.call(
        "/v3/coupon/info", campaign=campaign["id"], show_usage_stats=True, stats_days=365
    ).json()
    assert [d["date"] for d in year["coupon_info"]["usage_stats"]["per_day"]] == [old, today]
    bad = account.call("/v3/coupon/info", campaign=campaign["id"], show_usage_stats=True, stats_days=0)
    assert_error(bad, 422, 300)
    # A removed session leaves the statistics (what the single-use removal call does).
    with runtime.db.transaction() as s:
        row = s.scalar(select(CouponSession).where(CouponSession.code == sessions[1]))
        assert row is not None
        row.removed_at = utcnow()
        stats.on_session_removed(s, row)
    got = account.call("/v3/coupon/info", campaign=campaign["id"], show_usage_stats=True).json()
    assert got["coupon_info"]["usage_stats"]["opens"] == "7"
    assert got["coupon_info"]["usage_stats"]["validations"] == "0"
    # Removing through the ORM alone (as another capability may) also leaves the statistics.
    with runtime.db.transaction() as s:
        row = s.scalar(select(CouponSession).where(CouponSession.code == sessions[0]))
        assert row is not None
        row.removed_at = utcnow()
    got = account.call("/v3/coupon/info", campaign=campaign["id"], show_usage_stats=True).json()
    assert got["coupon_info"]["usage_stats"]["opens"] == "6"
    assert got["coupon_info"]["usage_stats"]["claims"] == "0"


def test_session_data_has_vendor_shape(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account)
    code = open_session(live_server, campaign["code"])
    body = assert_ok(account.call("/v3/couponsession/data", couponsession=code))
    assert body["campaign"] == campaign["id"]
    assert body["session"] == code
    assert body["session_url"] == f"http://testserver.local/p/{campaign['code']}/{code}"
    assert body["sequenceid"].isdigit()
    status = body["data"]["status"]
    assert status["opened"] == "1"
    assert len(status["open_date_utc"]) == 19
    assert status["claimed"] == "0"
    assert status["claim_date_utc"] == ""
    for key in ("created_date_utc", "played_date_utc", "validation_date_utc", "voided_date_utc", "locked"):
        assert key in status
    # The 6-character short form finds the same session.
    short = assert_ok(account.call("/v3/couponsession/data", couponsession=code[:6]))
    assert short["session"] == code
    assert_error(account.call("/v3/couponsession/data"), 422, 200)
    assert_error(account.call("/v3/couponsession/data", couponsession="ab$cd"), 422, 301)


def test_prefilled_details_show_in_session_data(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account)
    (code,) = bulk_sessions(
        runtime,
        campaign["id"],
        1,
        source="single_use",
        firstname="Ada",
        lastname="L",
        email="ada@example.com",
        phone="+441234",
        customid="CRM-1",
        custom_validation_code="BAR-77",
    )
    body = assert_ok(account.call("/v3/couponsession/data", couponsession=code))
    assert body["customid"] == "CRM-1"
    assert body["data"]["user"]["firstname"] == "Ada"
    assert body["data"]["user"]["email"] == "ada@example.com"
    assert body["data"]["user"]["phone"] == "+441234"
    assert body["data"]["status"]["own_validation_code"] == "BAR-77"
    assert body["data"]["status"]["opened"] == "0"


def test_ambiguous_short_code_needs_the_campaign(account: Acct, runtime: Runtime) -> None:
    first = create_campaign(account, name="one")
    second = create_campaign(account, name="two")
    (code,) = bulk_sessions(runtime, first["id"], 1)
    (other,) = bulk_sessions(runtime, second["id"], 1)
    with runtime.db.transaction() as s:
        row = s.scalar(select(CouponSession).where(CouponSession.code == other))
        assert row is not None
        row.short_code = code[:6]
    body = assert_error(account.call("/v3/couponsession/data", couponsession=code[:6]), 422, 300)
    assert "campaign" in body["status"]["errors"]["error_message_description"][0]
    narrowed = assert_ok(
        account.call("/v3/couponsession/data", couponsession=code[:6], campaign=second["id"])
    )
    assert narrowed["session"] == other


def test_update_claim_validate_void_and_activate(
    account: Acct, runtime: Runtime, live_server: LiveServer
) -> None:
    campaign = create_campaign(account)
    code = open_session(live_server, campaign["code"])
    claimed = assert_ok(account.call("/v3/couponsession/update", couponsession=code, claim="true"))
    assert claimed["data"]["status"]["claimed"] == "1"
    assert claimed["data"]["status"]["claimtype"] == "api"
    validated = assert_ok(
        account.call(
            "/v3/couponsession/update",
            couponsession=code,
            validate=True,
            validation_value="12.5",
            value="table 4",
        )
    )
    status = validated["data"]["status"]
    assert status["validated"] == "1"
    assert status["validation_value"] == "12.50"
    assert status["value"] == "table 4"
    again = assert_error(
        account.call("/v3/couponsession/update", couponsession=code, validate=True), 409, 308
    )
    assert "already been validated" in again["status"]["errors"]["error_message_description"][0]
    assert_error(
        account.call("/v3/couponsession/update", couponsession=code, validation_value="abc"), 422, 300
    )
    # `value` is stored in a 200-character column: longer is a bad value, never a database error.
    too_long = account.call("/v3/couponsession/update", couponsession=code, value="v" * 201)
    assert_error(too_long, 422, 300)
    assert session_status(account, code)["value"] == "table 4"
    voided = assert_ok(account.call("/v3/couponsession/update", couponsession=code, void=True))
    assert voided["data"]["status"]["voided"] == "1"
    assert len(_events(runtime, campaign["id"], "coupon_claimed")) == 1
    assert len(_events(runtime, campaign["id"], "coupon_validated")) == 1
    assert len(_events(runtime, campaign["id"], "coupon_voided")) == 1
    assert len(_events(runtime, campaign["id"], "coupon_opened")) == 1
    event = _events(runtime, campaign["id"], "coupon_validated")[0]
    assert event["couponsession"] == code
    assert event["validation_value"] == "12.50"


def test_voided_single_use_link_cannot_be_validated_until_activated(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account)
    (code,) = bulk_sessions(runtime, campaign["id"], 1, source="single_use", link_status="voided")
    body = assert_error(account.call("/v3/couponsession/update", couponsession=code, validate=True), 409, 308)
    assert "voided" in body["status"]["errors"]["error_message_description"][0]
    activated = assert_ok(account.call("/v3/couponsession/update", couponsession=code, void="false"))
    assert activated["data"]["status"]["link_status"] == "activated"
    assert activated["data"]["status"]["voided"] == "0"
    assert activated["data"]["status"]["voided_date_utc"] == ""
    assert_ok(account.call("/v3/couponsession/update", couponsession=code, validate=True))


def test_removed_and_locked_sessions_refuse_validation(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account)
    removed, locked = bulk_sessions(runtime, campaign["id"], 2)
    with runtime.db.transaction() as s:
        row = s.scalar(select(CouponSession).where(CouponSession.code == removed))
        assert row is not None
        row.removed_at = utcnow()
    body = assert_error(
        account.call("/v3/couponsession/update", couponsession=removed, validate=True), 409, 308
    )
    assert "no longer available" in body["status"]["errors"]["error_message_description"][0]
    assert account.call("/v3/campaign/data", campaign=campaign["id"]).json()["amount_of_results"] == "1"
    assert_ok(account.call("/v3/couponsession/update", couponsession=locked, lock=True))
    assert_error(account.call("/v3/couponsession/update", couponsession=locked, validate=True), 409, 308)
    assert_ok(account.call("/v3/couponsession/update", couponsession=locked, lock=False))
    assert_ok(account.call("/v3/couponsession/update", couponsession=locked, validate=True))


def test_multiple_validations_per_session_and_campaign_limit(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account, validations_per_session=3, max_validations=4)
    first, second = bulk_sessions(runtime, campaign["id"], 2)
    for n in range(1, 4):
        body = assert_ok(account.call("/v3/couponsession/update", couponsession=first, validate=True))
        assert body["data"]["status"]["validations"] == str(n)
    assert_error(account.call("/v3/couponsession/update", couponsession=first, validate=True), 409, 308)
    assert_ok(account.call("/v3/couponsession/update", couponsession=second, validate=True))
    limit = assert_error(
        account.call("/v3/couponsession/update", couponsession=second, validate=True), 409, 308
    )
    assert "limit" in limit["status"]["errors"]["error_message_description"][0]
    with runtime.db.read() as s:
        ordinals = s.scalars(
            select(Validation.ordinal).join(CouponSession).where(CouponSession.code == first)
        )
        assert sorted(ordinals) == [1, 2, 3]
        count = s.scalar(select(Campaign.validations_count).where(Campaign.code == campaign["code"]))
        assert count == 4
    assert session_status(account, second)["validations"] == "1"


def test_update_multiple_reports_each_session(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account)
    a, b, c = bulk_sessions(runtime, campaign["id"], 3)
    assert_ok(account.call("/v3/couponsession/update", couponsession=b, validate=True))
    body = assert_ok(
        account.call(
            "/v3/couponsession/update/multiple",
            couponsessions=[a, b, "nosuchsession1234567", c],
            validate=True,
        )
    )
    results = {r["couponsession"]: r for r in body["results"]}
    assert results[a]["status"] == "OK"
    assert results[a]["session"]["data"]["status"]["validated"] == "1"
    assert results[b]["status"] == "failed"
    assert results[b]["errors"]["error_code"] == [308]
    assert results["nosuchsession1234567"]["errors"]["error_code"] == [505]
    assert results[c]["status"] == "OK"
    assert body["amount_succeeded"] == "2"
    assert body["amount_failed"] == "2"
    assert session_status(account, c)["validated"] == "1"
    # Comma-separated form value, and the batch bound.
    form = account.client.post(
        "/v3/couponsession/update/multiple",
        data={"couponsessions": f"{a},{c}", "void": "1"},
        headers=account.headers,
    )
    assert assert_ok(form)["amount_succeeded"] == "2"
    too_many = [f"s{i:020d}" for i in range(101)]
    assert_error(
        account.call("/v3/couponsession/update/multiple", couponsessions=too_many, claim=True), 422, 309
    )


def test_update_multiple_leaves_a_session_refused_by_the_campaign_limit_untouched(
    account: Acct, runtime: Runtime
) -> None:
    """Each session of a batch runs in a savepoint, but a validation is raw statements only and
    SQLAlchemy sends a savepoint only when a connection is asked for: the refused session was left
    validated with no validation record, no event and no count (never to be validated again)."""
    campaign = create_campaign(account, max_validations=1)
    first, refused, also_refused = bulk_sessions(runtime, campaign["id"], 3)
    assert_ok(account.call("/v3/couponsession/update", couponsession=first, validate=True))
    body = assert_ok(
        account.call(
            "/v3/couponsession/update/multiple", couponsessions=[refused, also_refused], validate=True
        )
    )
    assert [r["errors"]["error_code"] for r in body["results"]] == [[308], [308]]
    for code in (refused, also_refused):
        status = session_status(account, code)
        assert (status["validated"], status["validations"], status["validation_date_utc"]) == ("0", "0", "")
    with runtime.db.read() as session:
        campaign_id = int(campaign["id"].removeprefix("cam_"))
        counted = session.scalar(select(Campaign.validations_count).where(Campaign.id == campaign_id))
        validated = session.scalar(
            select(func.count())
            .select_from(CouponSession)
            .where(CouponSession.campaign_id == campaign_id, CouponSession.validation_count > 0)
        )
    assert (counted, validated) == (1, 1)


def test_usage_data_pages_and_date_filters(
    account: Acct, runtime: Runtime, live_server: LiveServer, clock_offset: object
) -> None:
    campaign = create_campaign(account)
    codes = bulk_sessions(runtime, campaign["id"], 4)
    opened = open_session(live_server, campaign["code"])
    assert_ok(account.call("/v3/couponsession/update", couponsession=codes[0], claim=True))
    assert_ok(account.call("/v3/couponsession/update", couponsession=codes[1], validate=True))
    data = assert_ok(account.call("/v3/campaign/data", campaign=campaign["id"]))
    assert data["amount_of_results"] == "5"
    assert data["page_size"] == "5000"
    assert [d["session"] for d in data["data"]] == [*codes, opened]
    item = data["data"][0]
    assert {"sequenceid", "session", "status"} <= set(item)
    assert item["status"]["claimed"] == "1"
    assert [
        d["session"] for d in account.call("/v3/campaign/opens", campaign=campaign["id"]).json()["data"]
    ] == [opened]
    assert [
        d["session"] for d in account.call("/v3/campaign/claims", campaign=campaign["id"]).json()["data"]
    ] == [codes[0]]
    validations = account.call("/v3/campaign/validations", campaign=campaign["id"]).json()
    assert [d["session"] for d in validations["data"]] == [codes[1]]
    assert (
        account.call("/v3/campaign/data", campaign=campaign["id"], page=2).json()["amount_of_results"] == "0"
    )
    today = utcnow().date()
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    for start in (today.isoformat(), f"{today} 00:00", f"{today} 00-00"):
        got = account.call(
            "/v3/campaign/data", campaign=campaign["id"], start_date=start, end_date=today.isoformat()
        )
        assert got.json()["amount_of_results"] == "5", got.text
    later = account.call("/v3/campaign/data", campaign=campaign["id"], start_date=tomorrow).json()
    assert later["amount_of_results"] == "0"
    for bad in ("25-11-2026", "2026-11-25T10:00", "yesterday"):
        assert_error(account.call("/v3/campaign/data", campaign=campaign["id"], start_date=bad), 422, 303)
    assert_error(
        account.call("/v3/campaign/claims", campaign=campaign["id"], end_date="2026/01/01"), 422, 303
    )
    assert_error(account.call("/v3/campaign/data", campaign=campaign["id"], page=0), 422, 300)
    # An empty `page` (a form field left blank) is not given: the first page.
    blank = assert_ok(account.call("/v3/campaign/data", campaign=campaign["id"], page=""))
    assert (blank["page"], blank["amount_of_results"]) == ("1", "5")
    assert_error(account.call("/v3/campaign/data"), 422, 200)
    assert_error(account.call("/v3/campaign/data", campaign="cam_x1"), 422, 301)


def test_search_by_code_customid_phone_and_email(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account)
    other = create_campaign(account, name="Other")
    (a,) = bulk_sessions(runtime, campaign["id"], 1, customid="CRM-9", email="ada@example.com", phone="+3212")
    (b,) = bulk_sessions(runtime, other["id"], 1, custom_validation_code="BAR-1", email="ada@example.com")
    for term in ("CRM-9", "+3212"):
        found = assert_ok(account.call("/v3/couponsession/search", search=term))
        assert [d["session"] for d in found["data"]] == [a]
    both = account.call("/v3/couponsession/search", search="ADA@example.com").json()
    assert [d["session"] for d in both["data"]] == [a, b]
    assert both["amount_of_results"] == "2"
    assert [
        d["session"] for d in account.call("/v3/couponsession/search", search="BAR-1").json()["data"]
    ] == [b]
    scoped = assert_ok(account.call("/v3/campaign/search", campaign=other["id"], search="ada@example.com"))
    assert [d["session"] for d in scoped["data"]] == [b]
    assert account.call("/v3/couponsession/search", search="nobody").json()["amount_of_results"] == "0"
    assert_error(account.call("/v3/couponsession/search"), 422, 200)


def test_search_answers_by_pages_of_100(account: Acct, runtime: Runtime) -> None:
    """A customer with more than 100 sessions can be listed in full, a page at a time."""
    campaign = create_campaign(account)
    email = f"regular-{utcnow():%H%M%S%f}@example.com"
    codes = bulk_sessions(runtime, campaign["id"], 105, email=email)
    first = assert_ok(account.call("/v3/couponsession/search", search=email))
    assert (first["page"], first["page_size"], first["amount_of_results"]) == ("1", "100", "100")
    second = assert_ok(account.call("/v3/campaign/search", campaign=campaign["id"], search=email, page=2))
    assert (second["page"], second["amount_of_results"]) == ("2", "5")
    assert [d["session"] for d in first["data"] + second["data"]] == codes
    assert_error(account.call("/v3/couponsession/search", search=email, page=0), 422, 300)


def test_every_validation_has_one_record_and_one_event(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account, validations_per_session=2)
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    for _ in range(3):
        account.call("/v3/couponsession/update", couponsession=code, validate=True)
    with runtime.db.read() as s:
        records = s.scalar(
            select(func.count()).select_from(Validation).join(CouponSession).where(CouponSession.code == code)
        )
    assert records == 2
    assert len(_events(runtime, campaign["id"], "coupon_validated")) == 2


def test_an_empty_id_is_a_missing_parameter(account: Acct) -> None:
    """A form field sent empty (`campaign=`) is reported as missing, as the vendor's PHP does for
    an empty field, not as an invalid character."""
    for path, params in (
        ("/v3/coupon/info", {"campaign": ""}),
        ("/v3/campaign/data", {"campaign": " "}),
        ("/v3/couponsession/data", {"couponsession": ""}),
        ("/v3/couponsession/update", {"couponsession": "", "validate": "true"}),
    ):
        body = assert_error(account.call(path, **params), 422, 200)
        name = next(iter(params))
        assert body["status"]["errors"]["error_message_description"] == [f"Missing parameter: {name}"], path
    assert_error(account.call("/v3/coupon/info", campaign="cam_1x"), 422, 301)


def test_contradictory_campaign_settings_are_refused(account: Acct) -> None:
    def refused(response: httpx2.Response, words: str) -> None:
        assert response.status_code == 422, response.text
        errors = response.json()["status"]["errors"]
        assert errors["error_code"] == [300]
        assert words in errors["error_message_description"][0]

    def create(**fields: object) -> httpx2.Response:
        return account.client.post("/v4/campaigns", json={"name": "X", **fields}, headers=account.headers)

    refused(create(start_date="2027-03-10", end_date="2027-03-01"), "end date must be after the start date")
    refused(
        create(claim_fields="firstname,email", required_fields="phone"),
        "phone cannot be required without being asked",
    )
    refused(create(max_validations=-1), "0 or more, or empty for no limit")
    made = create(start_date="2027-03-01", claim_fields="phone", required_fields="phone")
    assert made.status_code == 201, made.text
    # A change is checked against what is saved already.
    path = f"/v4/campaigns/{made.json()['id']}"
    refused(account.client.patch(path, json={"end_date": "2027-02-01"}, headers=account.headers), "end date")
    refused(account.client.patch(path, json={"claim_fields": "email"}, headers=account.headers), "phone")
    fine = account.client.patch(path, json={"end_date": "2027-04-01"}, headers=account.headers)
    assert fine.status_code == 200, fine.text


def test_a_deleted_campaigns_session_makes_no_short_code_ambiguous(account: Acct, runtime: Runtime) -> None:
    gone = create_campaign(account, name="gone")
    live = create_campaign(account, name="live")
    (old,) = bulk_sessions(runtime, gone["id"], 1)
    (code,) = bulk_sessions(runtime, live["id"], 1)
    with runtime.db.transaction() as s:
        row = s.scalar(select(CouponSession).where(CouponSession.code == old))
        assert row is not None
        row.short_code = code[:6]
    assert account.client.delete(f"/v4/campaigns/{gone['id']}", headers=account.headers).status_code in (
        200,
        204,
    )
    assert assert_ok(account.call("/v3/couponsession/data", couponsession=code[:6]))["session"] == code


def test_a_campaign_that_is_not_the_callers_fails_the_whole_call(
    account: Acct, other_account: Acct, runtime: Runtime
) -> None:
    mine = create_campaign(account)
    foreign = create_campaign(other_account)
    (code,) = bulk_sessions(runtime, mine["id"], 1)
    for campaign in (foreign["id"], "cam_999999999"):
        assert_error(account.call("/v3/couponsession/data", couponsession=code, campaign=campaign), 404, 502)
        assert_error(
            account.call("/v3/couponsession/update", couponsession=code, campaign=campaign, validate=True),
            404,
            502,
        )
        assert_error(
            account.call(
                "/v3/couponsession/update/multiple", couponsessions=[code], campaign=campaign, validate=True
            ),
            404,
            502,
        )
    assert session_status(account, code)["validated"] == "0"
    # The right campaign narrows as before; a session of another campaign of mine is not in it.
    other = create_campaign(account, name="other")
    assert_error(account.call("/v3/couponsession/data", couponsession=code, campaign=other["id"]), 404, 505)
    assert assert_ok(account.call("/v3/couponsession/data", couponsession=code, campaign=mine["id"]))


def test_update_multiple_updates_a_session_named_twice_once(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account, validations_per_session=2)
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    body = assert_ok(
        account.call("/v3/couponsession/update/multiple", couponsessions=[code, code[:6]], validate=True)
    )
    assert (body["amount_of_results"], body["amount_succeeded"], body["amount_failed"]) == ("1", "1", "0")
    assert session_status(account, code)["validations"] == "1"


def test_an_empty_search_is_a_missing_parameter(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account)
    bulk_sessions(runtime, campaign["id"], 3)  # no customid, phone or email: "" would match them all
    for blank in ("", "   "):
        body = assert_error(account.call("/v3/couponsession/search", search=blank), 422, 200)
        assert body["status"]["errors"]["error_message_description"] == ["Missing parameter: search"]
        assert_error(account.call("/v3/campaign/search", campaign=campaign["id"], search=blank), 422, 200)


def test_an_empty_flag_is_not_given(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account)
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    listed = account.client.post("/v3/coupon/list", data={"only_active": ""}, headers=account.headers)
    assert campaign["id"] in json.dumps(assert_ok(listed))
    info = account.client.post(
        "/v3/coupon/info", data={"campaign": campaign["id"], "show_usage_stats": ""}, headers=account.headers
    )
    assert_ok(info)
    untouched = account.client.post(
        "/v3/couponsession/update",
        data={"couponsession": code, "validate": "", "lock": "", "value": "note"},
        headers=account.headers,
    )
    assert assert_ok(untouched)["data"]["status"]["validated"] == "0"
    assert session_status(account, code)["locked"] == "0"


def test_an_update_that_asks_for_nothing_is_refused(account: Acct, runtime: Runtime) -> None:
    """A misspelt flag (`validate_session=1`) must not answer OK while nothing changes; the
    past-tense names an integration may use for the flags are taken as the flags."""
    campaign = create_campaign(account)
    code, other = bulk_sessions(runtime, campaign["id"], 2)
    for call in ("/v3/couponsession/update", "/v3/couponsession/update/multiple"):
        body = {"couponsession": code, "couponsessions": [code], "validate_session": "1", "validate": ""}
        refused = assert_error(account.call(call, **body), 422, 200)
        assert "validate" in refused["status"]["errors"]["error_message_description"][0]
    assert session_status(account, code)["validated"] == "0"
    done = assert_ok(account.call("/v3/couponsession/update", couponsession=code, claimed="1", validated="1"))
    assert (done["data"]["status"]["claimed"], done["data"]["status"]["validated"]) == ("1", "1")
    assert_ok(account.call("/v3/couponsession/update", couponsession=code, locked="true"))
    assert session_status(account, code)["locked"] == "1"
    # The flag itself wins over its alias.
    assert_ok(
        account.call("/v3/couponsession/update", couponsession=other, claim=False, claimed=True, value="x")
    )
    assert session_status(account, other)["claimed"] == "0"


def test_claim_is_refused_as_validation_is(account: Acct, runtime: Runtime) -> None:
    """A locked session, an inactive campaign's session and a validated one cannot be claimed."""
    campaign = create_campaign(account)
    locked, inactive, validated = bulk_sessions(runtime, campaign["id"], 3)
    assert_ok(account.call("/v3/couponsession/update", couponsession=locked, lock=True))
    assert_ok(account.call("/v3/couponsession/update", couponsession=validated, validate=True))
    body = assert_error(account.call("/v3/couponsession/update", couponsession=locked, claim=True), 409, 308)
    assert body["status"]["errors"]["error_message_description"] == ["This coupon is locked."]
    body = assert_error(
        account.call("/v3/couponsession/update", couponsession=validated, claim=True), 409, 308
    )
    assert body["status"]["errors"]["error_message_description"] == [
        "This coupon has already been validated."
    ]
    # Unlocking and claiming in one call works: the lock is lifted first.
    assert_ok(account.call("/v3/couponsession/update", couponsession=locked, lock=False, claim=True))
    patched = account.client.patch(
        f"/v4/campaigns/{campaign['id']}", json={"status": "inactive"}, headers=account.headers
    )
    assert patched.status_code == 200
    body = assert_error(
        account.call("/v3/couponsession/update", couponsession=inactive, claim=True), 409, 308
    )
    assert body["status"]["errors"]["error_message_description"] == ["This campaign is not active."]
    assert session_status(account, inactive)["claimed"] == "0"
    assert len(_events(runtime, campaign["id"], "coupon_claimed")) == 1


def test_a_campaign_limit_can_be_removed_and_zero_is_a_limit(account: Acct) -> None:
    campaign = create_campaign(account, max_validations=5)
    path = f"/v4/campaigns/{campaign['id']}"
    assert (
        account.client.patch(path, json={"max_validations": ""}, headers=account.headers).status_code == 200
    )
    assert account.client.get(path, headers=account.headers).json()["max_validations"] is None
    assert (
        account.client.patch(path, data={"max_validations": "0"}, headers=account.headers).status_code == 200
    )
    info = assert_ok(account.call("/v3/coupon/info", campaign=campaign["id"]))["coupon_info"]
    assert info["max_validations"] == "0"
    assert (
        account.client.patch(path, data={"max_validations": ""}, headers=account.headers).status_code == 200
    )
    info = assert_ok(account.call("/v3/coupon/info", campaign=campaign["id"]))["coupon_info"]
    assert info["max_validations"] == ""


def test_campaign_values_beyond_their_columns_are_refused(account: Acct, runtime: Runtime) -> None:
    """Too long, too large, too early: 300 (HTTP 422), never a database error, on create and
    update alike; nothing stored."""
    campaign = create_campaign(account, name="Kept", max_validations=5)
    path = f"/v4/campaigns/{campaign['id']}"
    _set_zone(runtime, account.id, "Asia/Tokyo")  # a day before 0001-01-01 in UTC
    for fields in (
        {"name": "n" * 201},
        {"title": "t" * 301},
        {"subtitle": "s" * 301},
        {"folder": "f" * 101},
        {"max_validations": 2**31},
        {"max_validations": 10**20},
        {"validations_per_session": 2**31},
        {"start_date": "0001-01-01"},
        {"end_date": "1899-12-31 10:00"},
        {"validation_methods": []},
        {"validation_methods": ""},
    ):
        assert_error(
            account.client.post("/v4/campaigns", json={"name": "x", **fields}, headers=account.headers),
            422,
            300,
        )
        assert_error(account.client.patch(path, json=fields, headers=account.headers), 422, 300)
    stored = account.client.get(path, headers=account.headers).json()
    assert (stored["name"], stored["max_validations"]) == ("Kept", 5)
    assert_error(account.client.post("/v4/campaigns", json={"name": " "}, headers=account.headers), 422, 200)
    assert_error(account.client.patch(path, json={"name": ""}, headers=account.headers), 422, 200)


def test_a_code_list_given_to_a_generated_campaign_is_used(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account, custom_code_mode="generated")
    path = f"/v4/campaigns/{campaign['id']}"
    assert (
        account.client.patch(path, json={"custom_codes": ["A1", "A2"]}, headers=account.headers).status_code
        == 200
    )
    code = open_session(live_server, campaign["code"])
    assert session_status(account, code)["own_validation_code"] == "A1"


def test_a_deleted_campaigns_link_cannot_be_removed(account: Acct, runtime: Runtime) -> None:
    campaign = create_campaign(account)
    (link,) = bulk_sessions(runtime, campaign["id"], 1, source="single_use")
    assert account.client.delete(f"/v4/campaigns/{campaign['id']}", headers=account.headers).status_code in (
        200,
        204,
    )
    assert_error(account.call("/v3/singleuse/remove", single_use_code=link), 404, 513)
    assert not _events(runtime, campaign["id"], "singleuse_removed")


def test_a_day_whose_only_open_was_undone_is_not_listed(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account)
    (link,) = bulk_sessions(runtime, campaign["id"], 1, source="single_use")
    with httpx2.Client(base_url=live_server.url) as phone:
        assert phone.get(f"/p/{campaign['code']}/{link}").status_code == 200

    def stats_of() -> dict[str, Any]:
        info = account.call("/v3/coupon/info", campaign=campaign["id"], show_usage_stats=True)
        return dict(assert_ok(info)["coupon_info"]["usage_stats"])

    assert [d["opens"] for d in stats_of()["per_day"]] == ["1"]
    assert_ok(account.call("/v3/singleuse/remove", single_use_code=link))
    assert stats_of()["per_day"] == []
    assert stats_of()["opens"] == "0"


def test_claim_and_lock_in_one_call_claims_then_locks(account: Acct, runtime: Runtime) -> None:
    """What re-opens a session comes first and what closes it last; a claimed session claimed
    again changes nothing and succeeds, locked or not."""
    campaign = create_campaign(account)
    code, other = bulk_sessions(runtime, campaign["id"], 2)
    done = assert_ok(account.call("/v3/couponsession/update", couponsession=code, claim=True, lock=True))
    assert (done["data"]["status"]["claimed"], done["data"]["status"]["locked"]) == ("1", "1")
    again = assert_ok(account.call("/v3/couponsession/update", couponsession=code, claim=True))
    assert again["data"]["status"]["claim_date_utc"] == done["data"]["status"]["claim_date_utc"]
    refused = account.call("/v3/couponsession/update", couponsession=code, validate=True)
    assert_error(refused, 409, 308)
    unlocked = assert_ok(
        account.call("/v3/couponsession/update", couponsession=code, lock=False, validate=True)
    )
    assert unlocked["data"]["status"]["validated"] == "1"
    # A flag set to false asks for nothing: alone, it is refused like no flag at all.
    for flags in ({"claim": False}, {"validate": False}, {"claim": False, "validate": "0"}):
        assert_error(account.call("/v3/couponsession/update", couponsession=other, **flags), 422, 200)
