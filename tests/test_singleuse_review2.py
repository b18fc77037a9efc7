"""Second review of single-use links: large batches take turns (memory), and the dashboard's
recipient import (a bulk write that holds no lock for long, reading the file as the CLI does)."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import LiveServer, TestAccount
from dashboard_fixtures import signed_in, singleuse_campaign
from foundation_fixtures import csrf_from
from helpers import assert_error, assert_ok, race
from opencoupon.models import CouponSession, Event
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
    """Each call in its own thread, all released together; the answers in the calls' order."""
    return race(len(calls), lambda index: calls[index]())


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


def test_a_caller_without_credentials_never_waits_for_a_turn(
    runtime: Runtime, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn is taken after authentication: a large call without valid credentials is answered
    401 at once, never queued ahead of the account's own batches (nor answered 429)."""
    monkeypatch.setattr(bulkgate, "GATED_AMOUNT", 100)
    monkeypatch.setattr(bulkgate, "WAIT_SECONDS", 0.0)
    campaign = make_campaign(runtime, account.id)
    assert asyncio.run(bulkgate.BULK_CALLS.enter(1.0))  # another large batch is running
    try:
        stranger = account.client.post(
            MANY,
            json={"campaign": campaign.public_id, "amount": 5000},
            headers={"X-Client-Id": "nobody", "X-Client-Secret": "wrong"},
        )
        assert stranger.status_code == 401, stranger.text
        busy = account.call(MANY, campaign=campaign.public_id, amount=5000)
        assert_error(busy, 429, 429)
    finally:
        bulkgate.BULK_CALLS.leave()
    assert _count(runtime, campaign.id) == 0


# --- the dashboard's recipient import -------------------------------------------------------

PAGE = "/dashboard/singleuse"
CREATE = "/v3/singleuse/create"


def _import(web: Any, campaign: str, text: str) -> Any:
    token = csrf_from(web.get(PAGE).text)
    return web.post(
        f"{PAGE}/import",
        data={"campaign": campaign, "csrf_token": token},
        files={"file": ("r.csv", text.encode(), "text/csv")},
        timeout=300,
    )


def _links_of(runtime: Runtime, campaign: str) -> list[CouponSession]:
    with runtime.db.read() as session:
        rows = session.scalars(
            select(CouponSession)
            .where(CouponSession.campaign_id == int(campaign.removeprefix("cam_")))
            .order_by(CouponSession.id)
        )
        return list(rows)


def test_a_large_import_holds_no_other_write_up(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    """The import is written in bulk: another campaign's link waits for it about as long as for an
    API batch of as many links (it waited for the whole import, a millisecond or more per
    recipient, 30 or more times as long)."""
    count = 5000
    cid, other = singleuse_campaign(account), singleuse_campaign(account)
    batch_took = 0.0
    for _ in range(2):  # the slower of two, against the load of the moment
        started = time.perf_counter()
        assert_ok(account.call(MANY, campaign=singleuse_campaign(account), amount=count))
        batch_took = max(batch_took, time.perf_counter() - started)
    lines = ["firstname,email,phone,customid"]
    lines += [f"N{i},p{i}@example.com,+3261{i:06d},C{i}" for i in range(count)]
    lines.append("N0 again,p0@example.com,,")  # someone already in the file keeps the link
    waits: list[float] = []
    importing = threading.Event()
    done = threading.Event()

    def other_writes() -> None:
        importing.wait()
        while not done.is_set():
            started = time.perf_counter()
            assert_ok(account.call(CREATE, campaign=other))
            waits.append(time.perf_counter() - started)
            time.sleep(0.02)

    writer = threading.Thread(target=other_writes)
    writer.start()
    with signed_in(live_server.url, account.email) as web:
        started = time.perf_counter()
        importing.set()
        answer = _import(web, cid, "\n".join(lines) + "\n")
        took = time.perf_counter() - started
        done.set()
        writer.join()
        assert answer.status_code == 303, answer.text[:500]
        page = web.get(answer.headers["location"]).text
        assert "1 recipients already had a link" in page
        rows = list(csv.DictReader(io.StringIO(web.get(answer.headers["location"] + "/links.csv").text)))
    print(
        f"import of {count} took {took:.2f} s, other writes waited at most {max(waits):.2f} s;"
        f" an API batch of {count} took {batch_took:.2f} s"
    )
    assert len(rows) == count + 1
    assert rows[0]["single_use_code"] == rows[-1]["single_use_code"]
    links = _links_of(runtime, cid)
    assert len(links) == count
    assert [(x.firstname, x.email, x.customid) for x in links[:2]] == [
        ("N0", "p0@example.com", "C0"),
        ("N1", "p1@example.com", "C1"),
    ]
    assert {x.code for x in links} == {r["single_use_code"] for r in rows}
    with runtime.db.read() as session:
        made = session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.type == "singleuse_created", Event.campaign == cid)
        )
    assert made == count  # one event per new link, as /v3/singleuse/create emits
    # Ratios, not times: both move with the machine's load.
    assert waits
    assert max(waits) < 12 * batch_took, (max(waits), batch_took)


def test_the_import_reads_the_columns_the_cli_reads(
    runtime: Runtime, live_server: LiveServer, account: TestAccount
) -> None:
    cid = singleuse_campaign(account)
    with signed_in(live_server.url, account.email) as web:
        # Header names as the CLI matches them; customvalcode and autovalcode honoured.
        text = (
            "First Name,E-mail,Custom ID,customvalcode,Auto_ValCode\n"
            "Ann,ann@example.com,C-1,BAR-1,\n"
            "Bob,,,,yes\n"
        )
        assert _import(web, cid, text).status_code == 303
        first, second = _links_of(runtime, cid)
        assert (first.firstname, first.email, first.customid) == ("Ann", "ann@example.com", "C-1")
        assert first.custom_validation_code == "BAR-1"
        assert second.firstname == "Bob"
        assert second.custom_validation_code
        assert len(second.custom_validation_code) == 12
        # A custom code the campaign already uses, and a row wider than the header, are refused
        # naming their line; nothing of the file is imported.
        taken = _import(web, cid, "firstname,customvalcode\nCid,FREE-1\nDee,BAR-1\n")
        assert taken.status_code == 422
        assert "Line 3: Invalid value in parameter: customvalcode. This custom validation code" in taken.text
        wide = _import(web, cid, "firstname,email\nEve,eve@example.com\nFay,fay@example.com,extra\n")
        assert wide.status_code == 422
        assert "Line 3: 3 cells but the header names 2 columns. Nothing was imported." in wide.text
    assert len(_links_of(runtime, cid)) == 2
