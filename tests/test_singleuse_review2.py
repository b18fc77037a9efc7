"""Second review of single-use links: large batches take turns (memory), and the dashboard's
recipient import (a bulk write that holds no lock for long, reading the file as the CLI does)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from helpers import assert_error, assert_ok
from opencoupon.models import CouponSession
from opencoupon.runtime import Runtime
from opencoupon.singleuse import bulkgate
from singleuse_fixtures import make_campaign

MANY = "/v3/multiplesingleuse/create"


def _count(runtime: Runtime, campaign_id: int) -> int:
    with runtime.db.transaction() as session:
        query = (
            select(func.count()).select_from(CouponSession).where(CouponSession.campaign_id == campaign_id)
        )
        return int(session.scalar(query) or 0)


def _at_once(calls: list[Any]) -> list[Any]:
    """Run the calls in threads released together; their answers in the calls' order."""
    answers: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        answers[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


# --- large batches take turns ---------------------------------------------------------------


def test_large_batches_sent_at_once_all_answer(
    runtime: Runtime, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulkgate, "GATED_AMOUNT", 100)  # these batches take turns
    campaigns = [make_campaign(runtime, account.id) for _ in range(4)]
    calls = [
        lambda c=c: account.call(
            MANY, campaign=c.public_id, amount=500, automated_codes=True, code_length=12, code_type="numeric"
        )
        for c in campaigns
    ]
    answers = _at_once(calls)
    items = [item for answer in answers for item in assert_ok(answer)["data"]]
    assert len({i["single_use_code"] for i in items}) == 2000
    assert len({i["sequence_id"] for i in items}) == 2000
    assert [_count(runtime, c.id) for c in campaigns] == [500] * 4


def test_a_large_batch_that_would_wait_too_long_is_answered_429(
    runtime: Runtime, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One large batch at a time per process: one that finds another running and may not wait
    (WAIT_SECONDS 0 here) is refused with Retry-After and creates nothing."""
    monkeypatch.setattr(bulkgate, "GATED_AMOUNT", 100)
    monkeypatch.setattr(bulkgate, "WAIT_SECONDS", 0.0)
    refused: list[Any] = []
    for _round in range(5):  # sent at once, they overlap (each takes a tenth of a second or more)
        campaigns = [make_campaign(runtime, account.id) for _ in range(3)]
        calls = [lambda c=c: account.call(MANY, campaign=c.public_id, amount=5000) for c in campaigns]
        answers = _at_once(calls)
        for campaign, answer in zip(campaigns, answers, strict=True):
            if answer.status_code == 429:
                refused.append(answer)
                assert _count(runtime, campaign.id) == 0
            else:
                assert len(assert_ok(answer)["data"]) == 5000
                assert _count(runtime, campaign.id) == 5000
        assert len(refused) < 3 * (_round + 1)  # one of each round ran
        if refused:
            break
    assert refused, "three large batches sent at once all ran at once"
    assert_error(refused[0], 429, 429)
    assert refused[0].headers["Retry-After"] == str(bulkgate.RETRY_AFTER_SECONDS)
    # A small batch never waits for a large one.
    small = make_campaign(runtime, account.id)
    assert len(assert_ok(account.call(MANY, campaign=small.public_id, amount=100))["data"]) == 100
