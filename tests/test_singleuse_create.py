"""`/v3/singleuse/create` and `/v3/singleuse/remove`: one personal link at a time."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from helpers import assert_error, assert_ok
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import CouponSession, Event
from opencoupon.runtime import Runtime
from singleuse_fixtures import CampaignRef, make_campaign

CREATE = "/v3/singleuse/create"
REMOVE = "/v3/singleuse/remove"
BASE = "http://testserver.local"


def _row(runtime: Runtime, code: str) -> CouponSession:
    with runtime.db.transaction() as session:
        row = session.scalar(select(CouponSession).where(CouponSession.code == code))
        assert row is not None
        return row


def _links(runtime: Runtime, campaign_id: int) -> int:
    with runtime.db.transaction() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(CouponSession)
                .where(CouponSession.campaign_id == campaign_id)
            )
            or 0
        )


def _events(runtime: Runtime, type_: str, campaign_id: int) -> list[dict[str, Any]]:
    with runtime.db.transaction() as session:
        rows = session.scalars(
            select(Event)
            .where(Event.type == type_, Event.campaign == f"cam_{campaign_id}")
            .order_by(Event.id)
        ).all()
        return [json.loads(e.data) | {"_session": e.session} for e in rows]


def test_a_link_answers_the_vendor_fields_and_keeps_the_prefill(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    body = assert_ok(
        account.call(
            CREATE,
            campaign=su_campaign.public_id,
            firstname="Ada",
            lastname="Lovelace",
            email="Ada@Example.COM",
            phone="+32 470 12 34 56",
            customid="CRM-7",
            customvalcode="BAR-0001",
        )
    )
    code = body["single_use_code"]
    assert len(code) == ids.SESSION_CODE_LENGTH
    assert code.isalnum()
    assert body == {
        "status": {"status": "OK"},
        "campaign": su_campaign.public_id,
        "action": "single_use_code_created",
        "single_use_code": code,
        "single_use_url": f"{BASE}/p/{su_campaign.code}/{code}",
        "widget_validation_code": code[:6],
        "custom_validation_code": "BAR-0001",
        "customid": "CRM-7",
        "duplicate": "0",
    }
    row = _row(runtime, code)
    assert (row.source, row.link_status, row.short_code) == ("single_use", "normal", code[:6])
    assert (row.firstname, row.lastname, row.email, row.phone) == (
        "Ada",
        "Lovelace",
        "ada@example.com",
        "+32 470 12 34 56",
    )
    assert (row.customid, row.custom_validation_code, row.expires_at, row.removed_at) == (
        "CRM-7",
        "BAR-0001",
        None,
        None,
    )
    [event] = _events(runtime, "singleuse_created", su_campaign.id)
    assert event["single_use_code"] == code
    assert event["sequence_id"] == row.id
    assert event["single_use_url"] == body["single_use_url"]
    assert event["_session"] == code


def test_without_prefill_a_link_has_empty_fields(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    body = assert_ok(account.call(CREATE, campaign=su_campaign.public_id))
    assert (body["custom_validation_code"], body["customid"]) == ("", "")
    row = _row(runtime, body["single_use_code"])
    assert row.custom_validation_code is None
    assert (row.firstname, row.email, row.phone) == ("", "", "")


def test_form_encoded_call_with_string_booleans(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    response = account.client.post(
        CREATE,
        data={
            "campaign": su_campaign.public_id,
            "autovalcode": "1",
            "duplicate_check": "0",
            "firstname": "Bo",
        },
        headers=account.headers,
    )
    body = assert_ok(response)
    assert len(body["custom_validation_code"]) == 12
    assert _row(runtime, body["single_use_code"]).firstname == "Bo"


def test_autovalcode_draws_a_look_alike_free_code_unique_in_the_campaign(
    account: Any, su_campaign: CampaignRef
) -> None:
    codes = [
        assert_ok(account.call(CREATE, campaign=su_campaign.public_id, autovalcode=True))[
            "custom_validation_code"
        ]
        for _ in range(20)
    ]
    assert len(set(codes)) == 20
    assert all(len(c) == 12 and set(c) <= set(ids.UNAMBIGUOUS) for c in codes)
    assert not set("".join(codes)) & set("0O1IL")


def test_autovalcode_false_with_a_custom_code_is_fine(account: Any, su_campaign: CampaignRef) -> None:
    body = assert_ok(
        account.call(CREATE, campaign=su_campaign.public_id, customvalcode="X1", autovalcode=False)
    )
    assert body["custom_validation_code"] == "X1"


def test_customvalcode_and_autovalcode_together_are_refused(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    response = account.call(CREATE, campaign=su_campaign.public_id, customvalcode="ABC", autovalcode=True)
    body = assert_error(response, 422, 300)
    message = body["status"]["errors"]["error_message_description"][0]
    assert "customvalcode" in message
    assert "autovalcode" in message
    assert _links(runtime, su_campaign.id) == 0


def test_a_custom_code_is_unique_within_its_campaign_only(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    assert_ok(account.call(CREATE, campaign=su_campaign.public_id, customvalcode="GIFT-42"))
    body = assert_error(
        account.call(CREATE, campaign=su_campaign.public_id, customvalcode="GIFT-42"), 422, 300
    )
    assert "already used" in body["status"]["errors"]["error_message_description"][0]
    assert _links(runtime, su_campaign.id) == 1
    second = make_campaign(runtime, account.id)
    assert_ok(account.call(CREATE, campaign=second.public_id, customvalcode="GIFT-42"))


KEYS = {
    "email": ("ann@example.com", "bob@example.com"),
    "phone": ("+3247000001", "+3247000002"),
    "customid": ("CRM-1", "CRM-2"),
}


@pytest.mark.parametrize("key", sorted(KEYS))
def test_duplicate_check_gives_back_the_link_already_held(
    runtime: Runtime, account: Any, su_campaign: CampaignRef, key: str
) -> None:
    same, other = KEYS[key]
    first = assert_ok(account.call(CREATE, campaign=su_campaign.public_id, firstname="Ann", **{key: same}))
    again = assert_ok(
        account.call(
            CREATE, campaign=su_campaign.public_id, firstname="Someone", duplicate_check=True, **{key: same}
        )
    )
    assert again["single_use_code"] == first["single_use_code"]
    assert again["single_use_url"] == first["single_use_url"]
    assert again["duplicate"] == "1"
    assert _row(runtime, first["single_use_code"]).firstname == "Ann"
    assert _links(runtime, su_campaign.id) == 1
    assert len(_events(runtime, "singleuse_created", su_campaign.id)) == 1

    # Another value, or no duplicate_check, gets a new link.
    fresh = assert_ok(
        account.call(CREATE, campaign=su_campaign.public_id, duplicate_check=True, **{key: other})
    )
    unchecked = assert_ok(account.call(CREATE, campaign=su_campaign.public_id, **{key: same}))
    assert len({first["single_use_code"], fresh["single_use_code"], unchecked["single_use_code"]}) == 3
    assert fresh["duplicate"] == unchecked["duplicate"] == "0"


def test_duplicate_check_matches_any_given_key_and_ignores_case_of_email(
    account: Any, su_campaign: CampaignRef
) -> None:
    first = assert_ok(
        account.call(CREATE, campaign=su_campaign.public_id, email="Ann@Example.com", phone="+1")
    )
    by_email = assert_ok(
        account.call(CREATE, campaign=su_campaign.public_id, email="ann@example.COM", duplicate_check=True)
    )
    by_phone = assert_ok(
        account.call(
            CREATE, campaign=su_campaign.public_id, email="new@example.com", phone="+1", duplicate_check=True
        )
    )
    assert by_email["single_use_code"] == by_phone["single_use_code"] == first["single_use_code"]


def test_duplicate_check_stays_within_the_campaign_and_skips_removed_links(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    first = assert_ok(account.call(CREATE, campaign=su_campaign.public_id, customid="C-9"))
    second_campaign = make_campaign(runtime, account.id)
    elsewhere = assert_ok(
        account.call(CREATE, campaign=second_campaign.public_id, customid="C-9", duplicate_check=True)
    )
    assert elsewhere["single_use_code"] != first["single_use_code"]
    assert_ok(account.call(REMOVE, single_use_code=first["single_use_code"]))
    after = assert_ok(
        account.call(CREATE, campaign=su_campaign.public_id, customid="C-9", duplicate_check=True)
    )
    assert after["single_use_code"] != first["single_use_code"]
    assert after["duplicate"] == "0"


def test_duplicate_check_does_not_hand_back_a_voided_or_expired_link(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    """The docs say a *live* link comes back; a voided one, or one past its own expiry, was
    handed back as the person's link although it could not be used."""
    voided = assert_ok(account.call(CREATE, campaign=su_campaign.public_id, email="v@example.org"))
    assert_ok(account.call("/v3/couponsession/update", couponsession=voided["single_use_code"], void=True))
    again = assert_ok(
        account.call(CREATE, campaign=su_campaign.public_id, email="v@example.org", duplicate_check=True)
    )
    assert (again["duplicate"], again["single_use_code"] != voided["single_use_code"]) == ("0", True)
    expiring = assert_ok(account.call(CREATE, campaign=su_campaign.public_id, email="x@example.org"))
    with runtime.db.transaction() as session:
        row = session.scalar(select(CouponSession).where(CouponSession.code == expiring["single_use_code"]))
        assert row is not None
        row.expires_at = utcnow() - dt.timedelta(seconds=1)
    fresh = assert_ok(
        account.call(CREATE, campaign=su_campaign.public_id, email="x@example.org", duplicate_check=True)
    )
    assert (fresh["duplicate"], fresh["single_use_code"] != expiring["single_use_code"]) == ("0", True)
    # A live one (even used already) is still the person's.
    held = assert_ok(
        account.call(CREATE, campaign=su_campaign.public_id, email="x@example.org", duplicate_check=True)
    )
    assert (held["duplicate"], held["single_use_code"]) == ("1", fresh["single_use_code"])


def test_a_removed_link_changes_no_more_through_couponsession_update(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    """`void=false` on a removed (voided) link made it "activated" again: every change is refused
    as a claim or a validation is (308)."""
    code = assert_ok(account.call(CREATE, campaign=su_campaign.public_id))["single_use_code"]
    assert_ok(account.call("/v3/couponsession/update", couponsession=code, void=True))
    assert_ok(account.call(REMOVE, single_use_code=code))
    for flags in ({"void": False}, {"lock": True}, {"value": "x"}, {"void": True}):
        refused = assert_error(
            account.call("/v3/couponsession/update", couponsession=code, **flags), 409, 308
        )
        assert refused["status"]["errors"]["error_message_description"] == [
            "This coupon is no longer available."
        ]
    row = _row(runtime, code)
    assert (row.link_status, row.locked, row.value) == ("voided", False, "")


@pytest.mark.parametrize("field", ["amount", "code_length"])
def test_thousands_of_digits_are_a_clear_refusal(account: Any, su_campaign: CampaignRef, field: str) -> None:
    """int() refuses more than 4,300 digits: a 500 with its traceback."""
    params = {
        "campaign": su_campaign.public_id,
        "automated_codes": True,
        "code_type": "numeric",
        "code_length": 10,
    }
    answer = account.call("/v3/multiplesingleuse/create", **{**params, field: "1" * 5000})
    assert_error(answer, 422, 309 if field == "amount" else 300)


def test_duplicate_check_without_any_key_creates_a_link(account: Any, su_campaign: CampaignRef) -> None:
    one = assert_ok(account.call(CREATE, campaign=su_campaign.public_id, duplicate_check=True, firstname="A"))
    two = assert_ok(account.call(CREATE, campaign=su_campaign.public_id, duplicate_check=True, firstname="A"))
    assert one["single_use_code"] != two["single_use_code"]


@pytest.mark.parametrize("raw", ["2031-02-03:04:05:06", "2031-02-03 04:05:06"])
def test_expiry_date_in_both_vendor_formats(
    runtime: Runtime, account: Any, su_campaign: CampaignRef, raw: str
) -> None:
    body = assert_ok(account.call(CREATE, campaign=su_campaign.public_id, expiry_date=raw))
    assert _row(runtime, body["single_use_code"]).expires_at == dt.datetime(2031, 2, 3, 4, 5, 6)


@pytest.mark.parametrize(
    "raw", ["2031-02-03", "2031-02-03T04:05:06", "03/02/2031 04:05:06", "2031-13-03 04:05:06", "tomorrow"]
)
def test_expiry_date_in_another_format_is_303(
    runtime: Runtime, account: Any, su_campaign: CampaignRef, raw: str
) -> None:
    body = assert_error(account.call(CREATE, campaign=su_campaign.public_id, expiry_date=raw), 422, 303)
    assert "yyyy-MM-dd:HH:mm:ss" in body["status"]["errors"]["error_message_description"][0]
    assert _links(runtime, su_campaign.id) == 0


def test_expiry_date_in_the_past_is_refused(account: Any, su_campaign: CampaignRef) -> None:
    past = (utcnow() - dt.timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert_error(account.call(CREATE, campaign=su_campaign.public_id, expiry_date=past), 422, 300)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, 200),
        ({"campaign": "cam_x1"}, 301),
        ({"campaign": "cam_999999999"}, 502),
        ({"email": "not-an-email"}, 305),
        ({"firstname": "x" * 101}, 300),
        ({"customid": "x" * 201}, 300),
        ({"phone": "1" * 41}, 300),
        ({"customvalcode": "x" * 65}, 300),
        ({"customvalcode": "tab\there"}, 301),
        ({"autovalcode": "maybe"}, 300),
        ({"duplicate_check": "sometimes"}, 300),
    ],
)
def test_bad_parameters(account: Any, su_campaign: CampaignRef, params: dict[str, Any], code: int) -> None:
    if params and "campaign" not in params:
        params = {"campaign": su_campaign.public_id, **params}
    http_status = 404 if code == 502 else 422
    assert_error(account.call(CREATE, **params), http_status, code)


def test_another_accounts_campaign_answers_like_a_missing_one(
    runtime: Runtime, account: Any, su_other_campaign: CampaignRef
) -> None:
    foreign = assert_error(account.call(CREATE, campaign=su_other_campaign.public_id), 404, 502)
    missing = assert_error(account.call(CREATE, campaign="cam_999999999"), 404, 502)
    assert foreign == missing
    assert _links(runtime, su_other_campaign.id) == 0


def test_a_master_reaches_its_subaccounts_campaigns_but_not_the_reverse(
    runtime: Runtime, account: Any, subaccount: Any
) -> None:
    sub_campaign = make_campaign(runtime, subaccount.id)
    master_campaign = make_campaign(runtime, account.id)
    body = assert_ok(account.call(CREATE, campaign=sub_campaign.public_id))
    assert _row(runtime, body["single_use_code"]).account_id == subaccount.id
    assert_error(subaccount.call(CREATE, campaign=master_campaign.public_id), 404, 502)


# --- remove -----------------------------------------------------------------------------------


def test_remove_stops_the_link_once(runtime: Runtime, account: Any, su_campaign: CampaignRef) -> None:
    code = assert_ok(account.call(CREATE, campaign=su_campaign.public_id, customid="R-1"))["single_use_code"]
    body = assert_ok(account.call(REMOVE, single_use_code=code))
    row = _row(runtime, code)
    assert row.removed_at is not None
    assert body == {
        "status": {"status": "OK"},
        "campaign": su_campaign.public_id,
        "action": "single_use_code_removed",
        "single_use_code": code,
        "removed_date_utc": row.removed_at.strftime("%Y-%m-%d %H:%M:%S"),
    }
    [event] = _events(runtime, "singleuse_removed", su_campaign.id)
    assert (event["single_use_code"], event["sequence_id"], event["customid"]) == (code, row.id, "R-1")
    # Removing again answers the same and changes nothing.
    assert assert_ok(account.call(REMOVE, single_use_code=code)) == body
    assert len(_events(runtime, "singleuse_removed", su_campaign.id)) == 1


def test_remove_unknown_or_foreign_codes_is_513(
    runtime: Runtime, account: Any, other_account: Any, su_campaign: CampaignRef
) -> None:
    code = assert_ok(account.call(CREATE, campaign=su_campaign.public_id))["single_use_code"]
    foreign = assert_error(other_account.call(REMOVE, single_use_code=code), 404, 513)
    unknown = assert_error(other_account.call(REMOVE, single_use_code="a" * 21), 404, 513)
    assert foreign == unknown
    assert foreign["status"]["errors"]["error_message_description"] == ["Single use code not found."]
    assert _row(runtime, code).removed_at is None


def test_remove_does_not_touch_sessions_that_are_not_single_use_links(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    from opencoupon.coupons.sessions import new_session
    from opencoupon.models import Campaign

    with runtime.db.transaction() as session:
        web = new_session(session, session.get(Campaign, su_campaign.id), source="web")  # type: ignore[arg-type]
        code = web.code
    assert_error(account.call(REMOVE, single_use_code=code), 404, 513)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, 200),
        ({"single_use_code": ""}, 200),
        ({"single_use_code": "  "}, 200),
        ({"single_use_code": "abc-def!"}, 301),
    ],
)
def test_remove_bad_parameters(account: Any, params: dict[str, str], code: int) -> None:
    assert_error(account.call(REMOVE, **params), 422, code)


def test_demo_data_has_prefilled_links(runtime: Runtime, account: Any, subaccount: Any) -> None:
    from opencoupon.models import Account
    from opencoupon.singleuse import demo

    with runtime.db.transaction() as session:
        owner, sub = session.get(Account, account.id), session.get(Account, subaccount.id)
        assert owner is not None
        assert sub is not None
        result = demo.seed(session, runtime, owner, sub)
    assert len(result["single_use_links"]) == 3
    code = result["single_use_links"][0].rsplit("/", 1)[1]
    row = _row(runtime, code)
    assert (row.firstname, row.source, row.account_id) == ("Ada", "single_use", account.id)
    assert f"cam_{row.campaign_id}" == result["single_use_campaign"]


def test_concurrent_duplicate_checks_for_one_person_make_one_link(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    import threading

    codes: list[str] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        body = account.call(
            CREATE, campaign=su_campaign.public_id, email="race@example.com", duplicate_check=True
        )
        codes.append(assert_ok(body)["single_use_code"])

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(codes) == 8
    assert len(set(codes)) == 1
    assert _links(runtime, su_campaign.id) == 1


def test_invisible_and_control_characters_are_refused(account: Any, su_campaign: CampaignRef) -> None:
    """A code staff type may hold nothing invisible; a name no control or bidirectional override
    (which could make the coupon page show another name); a joiner in a name stays (Persian)."""
    campaign = su_campaign.public_id
    for odd in ("X\x9bY", "X\u200bY", "X\u202eY", "X\u200dY"):
        assert_error(account.call(CREATE, campaign=campaign, customvalcode=odd), 422, 301)
    for odd in ("X\x9bY", "X\u202eY", "X\u2028Y"):
        assert_error(account.call(CREATE, campaign=campaign, firstname=odd), 422, 301)
    made = assert_ok(account.call(CREATE, campaign=campaign, firstname="Mahnaz\u200cPour"))
    assert made["single_use_code"]
