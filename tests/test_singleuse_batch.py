"""`/v3/multiplesingleuse/create`: up to 100,000 links in one call, all or nothing."""

from __future__ import annotations

import json
import string
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from helpers import assert_error, assert_ok
from opencoupon.kit import ids
from opencoupon.models import Campaign, CouponSession, Event, IdempotencyRecord
from opencoupon.runtime import Runtime
from opencoupon.singleuse import service
from singleuse_fixtures import CampaignRef, make_campaign

MANY = "/v3/multiplesingleuse/create"
CREATE = "/v3/singleuse/create"
BASE = "http://testserver.local"
LOOK_ALIKES = set("0O1IL")


def _rows(runtime: Runtime, campaign_id: int) -> list[CouponSession]:
    with runtime.db.transaction() as session:
        return list(
            session.scalars(
                select(CouponSession)
                .where(CouponSession.campaign_id == campaign_id)
                .order_by(CouponSession.id)
            )
        )


def _count(runtime: Runtime, campaign_id: int) -> int:
    with runtime.db.transaction() as session:
        query = (
            select(func.count()).select_from(CouponSession).where(CouponSession.campaign_id == campaign_id)
        )
        return int(session.scalar(query) or 0)


def _batch_events(runtime: Runtime, campaign_id: int) -> list[dict[str, Any]]:
    with runtime.db.transaction() as session:
        events = session.scalars(
            select(Event.data).where(
                Event.type == "singleuse_created", Event.campaign == f"cam_{campaign_id}"
            )
        ).all()
        return [json.loads(data) for data in events]


def test_default_batch_is_ten_links_in_the_vendor_shape(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    body = assert_ok(account.call(MANY, campaign=su_campaign.public_id))
    assert body["campaign"] == su_campaign.public_id
    assert body["action"] == "multiple_single_use_codes_created"
    items = body["data"]
    assert len(items) == 10
    rows = {row.code: row for row in _rows(runtime, su_campaign.id)}
    assert len(rows) == 10
    for item in items:
        code = item["single_use_code"]
        assert set(item) == {
            "single_use_code",
            "sequence_id",
            "single_use_url",
            "widget_validation_code",
            "custom_validation_code",
        }
        assert len(code) == ids.SESSION_CODE_LENGTH
        assert code.isalnum()
        assert isinstance(item["sequence_id"], int)
        assert item["sequence_id"] == rows[code].id
        assert item["single_use_url"] == f"{BASE}/p/{su_campaign.code}/{code}"
        assert item["widget_validation_code"] == code[:6] == rows[code].short_code
        assert item["custom_validation_code"] == ""
        row = rows[code]
        assert (row.source, row.link_status, row.custom_validation_code) == ("single_use", "normal", None)
        assert (row.account_id, row.validation_count, row.removed_at) == (account.id, 0, None)
    assert [i["sequence_id"] for i in items] == sorted(i["sequence_id"] for i in items)
    [event] = _batch_events(runtime, su_campaign.id)
    assert event["amount"] == 10
    assert event["status"] == "normal"
    assert sorted(event["single_use_codes"]) == sorted(rows)
    assert (event["first_sequence_id"], event["last_sequence_id"]) == (
        items[0]["sequence_id"],
        items[-1]["sequence_id"],
    )


def test_rows_written_in_bulk_read_back_like_any_session(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    """The driver-level insert fills every column as the ORM would (defaults, JSON, booleans)."""
    bulk_code = assert_ok(account.call(MANY, campaign=su_campaign.public_id, amount=1))["data"][0][
        "single_use_code"
    ]
    one_code = assert_ok(account.call(CREATE, campaign=su_campaign.public_id))["single_use_code"]
    by_code = {row.code: row for row in _rows(runtime, su_campaign.id)}
    bulk, one = by_code[bulk_code], by_code[one_code]
    for column in CouponSession.__table__.columns:
        if column.name in ("id", "code", "short_code", "created_at", "updated_at"):
            continue
        assert getattr(bulk, column.key) == getattr(one, column.key), column.name
    assert bulk.created_at == bulk.updated_at
    assert bulk.custom_fields == {}


@pytest.mark.parametrize("status", ["normal", "voided", "activated"])
def test_status_is_stored_on_every_link(
    runtime: Runtime, account: Any, su_campaign: CampaignRef, status: str
) -> None:
    assert_ok(account.call(MANY, campaign=su_campaign.public_id, amount=3, status=status))
    assert {row.link_status for row in _rows(runtime, su_campaign.id)} == {status}


def test_numeric_automated_codes_have_prefix_and_length(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    body = assert_ok(
        account.call(
            MANY,
            campaign=su_campaign.public_id,
            amount=50,
            automated_codes=True,
            code_prefix="XMAS-",
            code_length=10,
            code_type="numeric",
        )
    )
    codes = [item["custom_validation_code"] for item in body["data"]]
    assert len(set(codes)) == 50
    for code in codes:
        assert code.startswith("XMAS-")
        assert len(code) == 15
        assert code[5:].isdigit()
    stored = {row.code: row.custom_validation_code for row in _rows(runtime, su_campaign.id)}
    assert all(stored[item["single_use_code"]] == item["custom_validation_code"] for item in body["data"])


def test_alphanumeric_codes_leave_out_look_alikes(account: Any, su_campaign: CampaignRef) -> None:
    body = assert_ok(
        account.call(
            MANY,
            campaign=su_campaign.public_id,
            amount=3000,
            automated_codes="true",
            code_length=25,
            code_type="alphanumeric",
        )
    )
    symbols = set("".join(item["custom_validation_code"] for item in body["data"]))
    # 75,000 characters: every symbol of the alphabet shows up, and nothing else does.
    assert symbols == set(ids.UNAMBIGUOUS)
    assert not symbols & LOOK_ALIKES
    assert symbols <= set(string.ascii_uppercase + string.digits)


def test_automated_codes_off_ignores_the_code_parameters(account: Any, su_campaign: CampaignRef) -> None:
    body = assert_ok(
        account.call(
            MANY,
            campaign=su_campaign.public_id,
            amount=2,
            automated_codes=False,
            code_length=99,
            code_prefix="not used",
        )
    )
    assert [item["custom_validation_code"] for item in body["data"]] == ["", ""]


@pytest.mark.parametrize(
    ("params", "http_status", "code", "text"),
    [
        ({"amount": "0"}, 422, 300, "from 1 to 100000"),
        ({"amount": "-5"}, 422, 300, "from 1 to 100000"),
        ({"amount": "ten"}, 422, 300, "Digits only"),
        ({"amount": "1.5"}, 422, 300, "Digits only"),
        ({"amount": "100001"}, 422, 309, "At most 100000"),
        ({"amount": "9999999999999999999999"}, 422, 309, "At most 100000"),
        ({"status": "paused"}, 422, 302, "status"),
        ({"automated_codes": "perhaps"}, 422, 300, "automated_codes"),
        ({"automated_codes": True, "code_type": "numeric"}, 422, 200, "Missing parameter: code_length"),
        ({"automated_codes": True, "code_length": "12"}, 422, 200, "Missing parameter: code_type"),
        ({"automated_codes": True, "code_length": "9", "code_type": "numeric"}, 422, 300, "From 10 to 25"),
        ({"automated_codes": True, "code_length": "26", "code_type": "numeric"}, 422, 300, "From 10 to 25"),
        ({"automated_codes": True, "code_length": "x", "code_type": "numeric"}, 422, 300, "code_length"),
        ({"automated_codes": True, "code_length": "12", "code_type": "hex"}, 422, 302, "code_type"),
        (
            {"automated_codes": True, "code_length": "12", "code_type": "numeric", "code_prefix": "A B"},
            422,
            301,
            "code_prefix",
        ),
        (
            {"automated_codes": True, "code_length": "25", "code_type": "numeric", "code_prefix": "P" * 40},
            422,
            300,
            "at most 64",
        ),
        ({"campaign": "cam_nope"}, 422, 301, "campaign"),
        ({"campaign": "cam_999999999"}, 404, 502, "Campaign ID not found."),
    ],
)
def test_bad_parameters_are_refused_before_any_link_exists(
    runtime: Runtime,
    account: Any,
    su_campaign: CampaignRef,
    params: dict[str, Any],
    http_status: int,
    code: int,
    text: str,
) -> None:
    body = assert_error(
        account.call(MANY, **{"campaign": su_campaign.public_id, **params}), http_status, code
    )
    assert text.lower() in body["status"]["errors"]["error_message_description"][0].lower()
    assert _count(runtime, su_campaign.id) == 0
    assert _batch_events(runtime, su_campaign.id) == []


def test_both_missing_code_parameters_are_listed(account: Any, su_campaign: CampaignRef) -> None:
    body = assert_error(account.call(MANY, campaign=su_campaign.public_id, automated_codes=1), 422, 200)
    assert body["status"]["errors"]["error_code"] == [200, 200]
    assert body["status"]["errors"]["error_message_description"] == [
        "Missing parameter: code_length",
        "Missing parameter: code_type",
    ]


def test_missing_campaign_is_200(account: Any) -> None:
    assert_error(account.call(MANY, amount=1), 422, 200)


def test_another_accounts_campaign_is_502(
    runtime: Runtime, account: Any, su_other_campaign: CampaignRef
) -> None:
    assert_error(account.call(MANY, campaign=su_other_campaign.public_id, amount=1), 404, 502)
    assert _count(runtime, su_other_campaign.id) == 0


def test_a_crowded_code_space_is_refused_up_front(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    """Numeric codes of 10 digits allow 100,000 per campaign (1 in 100,000 of the space): with one
    already issued, asking for 100,000 more is refused before anything is written."""
    shape = {"automated_codes": True, "code_prefix": "N-", "code_length": 10, "code_type": "numeric"}
    assert_ok(account.call(MANY, campaign=su_campaign.public_id, amount=1, **shape))
    body = assert_error(account.call(MANY, campaign=su_campaign.public_id, amount=100_000, **shape), 422, 309)
    message = body["status"]["errors"]["error_message_description"][0]
    assert "Code space too small" in message
    assert "room for 99999 more" in message
    assert _count(runtime, su_campaign.id) == 1
    # Another shape has its own space; the same shape in another campaign too.
    assert_ok(account.call(MANY, campaign=su_campaign.public_id, amount=5, **{**shape, "code_length": 11}))
    assert_ok(account.call(MANY, campaign=su_campaign.public_id, amount=5, **{**shape, "code_prefix": "M-"}))
    other = make_campaign(runtime, account.id)
    assert_ok(account.call(MANY, campaign=other.public_id, amount=5, **shape))
    # An amount over the room is refused even when the space is empty.
    assert_error(account.call(MANY, campaign=other.public_id, amount=99_996, **shape), 422, 309)


def test_drawing_skips_codes_the_campaign_already_holds(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    first = assert_ok(account.call(MANY, campaign=su_campaign.public_id, amount=3))["data"]
    held = [item["single_use_code"] for item in first]
    draws = iter([[held[0], held[1], "zzzzzzaaaaaaaaaaaaaaa"], [held[2], "yyyyyyaaaaaaaaaaaaaaa"]])
    with runtime.db.transaction() as session:
        got = service.draw_unique(session, su_campaign.id, "short_code", 2, lambda n: next(draws)[: n + 1], 6)
    assert got == ["zzzzzzaaaaaaaaaaaaaaa", "yyyyyyaaaaaaaaaaaaaaa"]


def test_concurrent_batches_on_one_campaign_never_share_a_code(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    shape = {"automated_codes": True, "code_length": 10, "code_type": "numeric"}
    answers: list[Any] = []

    def batch() -> None:
        answers.append(account.call(MANY, campaign=su_campaign.public_id, amount=3000, **shape))

    threads = [threading.Thread(target=batch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    items = [item for response in answers for item in assert_ok(response)["data"]]
    assert len(items) == 12_000
    assert len({i["single_use_code"] for i in items}) == 12_000
    assert len({i["widget_validation_code"] for i in items}) == 12_000
    assert len({i["custom_validation_code"] for i in items}) == 12_000
    assert len({i["sequence_id"] for i in items}) == 12_000
    assert _count(runtime, su_campaign.id) == 12_000
    assert len(_batch_events(runtime, su_campaign.id)) == 4


def test_one_hundred_thousand_links_in_one_call_all_unique(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    shape = {"automated_codes": True, "code_length": 10, "code_type": "numeric", "code_prefix": "BIG"}
    body = assert_ok(
        account.call(MANY, campaign=su_campaign.public_id, amount=100_000, status="voided", **shape)
    )
    items = body["data"]
    assert len(items) == 100_000
    assert len({i["single_use_code"] for i in items}) == 100_000
    assert len({i["widget_validation_code"] for i in items}) == 100_000
    assert len({i["custom_validation_code"] for i in items}) == 100_000
    assert len({i["sequence_id"] for i in items}) == 100_000
    with runtime.db.transaction() as session:
        in_campaign = CouponSession.campaign_id == su_campaign.id
        counts = session.execute(
            select(
                func.count(),
                func.count(func.distinct(CouponSession.short_code)),
                func.count(func.distinct(CouponSession.custom_validation_code)),
                func.min(CouponSession.id),
                func.max(CouponSession.id),
            ).where(in_campaign, CouponSession.link_status == "voided")
        ).one()
        campaign_code = session.scalar(select(Campaign.code).where(Campaign.id == su_campaign.id))
    assert tuple(counts) == (
        100_000,
        100_000,
        100_000,
        min(i["sequence_id"] for i in items),
        max(i["sequence_id"] for i in items),
    )
    assert items[12_345]["single_use_url"] == f"{BASE}/p/{campaign_code}/{items[12_345]['single_use_code']}"
    [event] = _batch_events(runtime, su_campaign.id)
    assert event["amount"] == 100_000
    assert "single_use_codes" not in event
    # The code space of this shape is now full (1 in 100,000 of 10^10): one more is refused.
    assert_error(account.call(MANY, campaign=su_campaign.public_id, amount=1, **shape), 422, 309)
    assert _count(runtime, su_campaign.id) == 100_000


def test_a_large_answer_kept_for_an_idempotency_key_is_compressed_and_replayed_whole(
    runtime: Runtime, account: Any, su_campaign: CampaignRef
) -> None:
    """The answer of a bulk call is kept for 24 hours for retries. Encrypted as it was, it took
    more room than the JSON itself (21 MB of ciphertext for a 100,000-link call); compressed
    before it is encrypted it takes a fraction, and a retry still gets every link back."""
    headers = {**account.headers, "Idempotency-Key": f"bulk-{su_campaign.id}"}
    params = {"campaign": su_campaign.public_id, "amount": 3000}
    first = account.client.post(MANY, json=params, headers=headers)
    body = assert_ok(first)
    assert len(body["data"]) == 3000
    with runtime.db.transaction() as session:
        stored = session.scalar(
            select(IdempotencyRecord.response_body).where(
                IdempotencyRecord.account_id == account.id,
                IdempotencyRecord.key == headers["Idempotency-Key"],
            )
        )
    assert stored is not None
    assert len(stored) < len(first.content) / 2
    assert body["data"][0]["single_use_code"] not in stored  # still encrypted
    again = account.client.post(MANY, json=params, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == body
    assert _count(runtime, su_campaign.id) == 3000  # the retry made none
