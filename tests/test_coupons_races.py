"""Exactly once, shown by racing real threads against the live server: the API, the staff page and
the consumer's phone validating the same session at the same moment, and a campaign limit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select

from conftest import LiveServer
from coupons_fixtures import PIN, Acct, bulk_sessions, create_campaign, csrf_token
from opencoupon.models import Campaign, CouponSession, DailyStat, Event, Validation
from opencoupon.runtime import Runtime

JSON = {"Accept": "application/json"}


def _race(calls: list[Callable[[], httpx2.Response]]) -> list[httpx2.Response]:
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # a transport error must fail the test, not hang it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(isinstance(r, httpx2.Response) for r in results), results
    return results


def _outcomes(responses: list[httpx2.Response]) -> tuple[int, list[httpx2.Response]]:
    wins = [r for r in responses if r.status_code == 200]
    refusals = [r for r in responses if r.status_code != 200]
    for r in refusals:
        assert r.status_code == 409, r.text
        assert r.json()["status"]["errors"]["error_code"] == [308], r.text
    return len(wins), refusals


def _counts(runtime: Runtime, campaign_id: str) -> dict[str, int]:
    pk = int(campaign_id.removeprefix("cam_"))
    with runtime.db.read() as s:
        return {
            "records": s.scalar(
                select(func.count()).select_from(Validation).where(Validation.campaign_id == pk)
            )
            or 0,
            "events": s.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.campaign == campaign_id, Event.type == "coupon_validated")
            )
            or 0,
            "counter": s.scalar(select(Campaign.validations_count).where(Campaign.id == pk)) or 0,
            "daily": s.scalar(select(func.sum(DailyStat.validations)).where(DailyStat.campaign_id == pk))
            or 0,
            "sessions": s.scalar(
                select(func.sum(CouponSession.validation_count)).where(CouponSession.campaign_id == pk)
            )
            or 0,
        }


# R1 asks for 50 trials; CI runs 5 (about a second each), bench/bench_races.py runs the 50.
@pytest.mark.slow
@pytest.mark.parametrize("trial", range(5))
def test_32_concurrent_validations_of_one_session_give_exactly_one(
    trial: int, account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account)
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    session_path = f"/p/{campaign['code']}/{code}"
    staff_path = f"/p/{campaign['code']}/staff"
    clients: list[httpx2.Client] = []
    calls: list[Callable[[], httpx2.Response]] = []
    try:
        for i in range(32):
            client = httpx2.Client(base_url=live_server.url, timeout=60)
            clients.append(client)
            if i % 4 == 0:
                token = csrf_token(client, staff_path)
                form = {"csrf": token, "pin": PIN, "code": code[:6]}
                calls.append(lambda c=client, f=form: c.post(staff_path, data=f, headers=JSON))
            elif i % 4 == 1:
                token = csrf_token(client, session_path)
                form = {"csrf": token, "pin": PIN}
                calls.append(
                    lambda c=client, f=form: c.post(f"{session_path}/validate", data=f, headers=JSON)
                )
            else:
                calls.append(
                    lambda c=client: c.post(
                        "/v3/couponsession/update",
                        json={"couponsession": code, "validate": True},
                        headers=account.headers,
                    )
                )
        responses = _race(calls)
    finally:
        for client in clients:
            client.close()
    wins, refusals = _outcomes(responses)
    assert wins == 1
    assert len(refusals) == 31
    assert _counts(runtime, campaign["id"]) == {
        "records": 1,
        "events": 1,
        "counter": 1,
        "daily": 1,
        "sessions": 1,
    }


@pytest.mark.slow
def test_150_concurrent_validations_against_a_limit_of_100_give_exactly_100(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, max_validations=100)
    codes = bulk_sessions(runtime, campaign["id"], 150)
    clients = [httpx2.Client(base_url=live_server.url, timeout=60) for _ in range(30)]
    try:
        calls = [
            (
                lambda c=clients[i % 30], code=code: c.post(
                    "/v3/couponsession/update",
                    json={"couponsession": code, "validate": True},
                    headers=account.headers,
                )
            )
            for i, code in enumerate(codes)
        ]
        responses = _race(calls)
    finally:
        for client in clients:
            client.close()
    wins, refusals = _outcomes(responses)
    assert wins == 100
    assert len(refusals) == 50
    assert all("limit" in r.json()["status"]["errors"]["error_message_description"][0] for r in refusals)
    assert _counts(runtime, campaign["id"]) == {
        "records": 100,
        "events": 100,
        "counter": 100,
        "daily": 100,
        "sessions": 100,
    }


def test_concurrent_creates_stop_at_the_campaign_limit(account: Acct, subaccount: Acct) -> None:
    """12 concurrent campaign creates by a subaccount whose master set max_campaigns 3: exactly 3
    are made, the others are refused (309); on PostgreSQL the count-then-insert holds the
    account's row, so two creates cannot both see room for one more."""
    limit = 3
    updated = account.call("/v4/subaccount/update", subaccount=f"sub_{subaccount.id}", max_campaigns=limit)
    assert updated.status_code == 200, updated.text
    clients = [httpx2.Client(base_url=subaccount.client.base_url, timeout=60) for _ in range(12)]
    try:
        answers = _race(
            [
                lambda c=c, i=i: c.post(
                    "/v4/campaigns", json={"name": f"Race {i}"}, headers=subaccount.headers
                )
                for i, c in enumerate(clients)
            ]
        )
    finally:
        for c in clients:
            c.close()
    made = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    assert len(made) == limit, [a.text for a in answers]
    for a in refused:
        assert a.status_code == 422, a.text
        assert a.json()["status"]["errors"]["error_code"] == [309], a.text
    listed = subaccount.call("/v3/coupon/list").json()["coupon_info"]
    assert len(listed) == limit


def test_a_batch_and_single_validations_of_its_sessions_racing_each_validate_once(
    account: Acct, runtime: Runtime, live_server: LiveServer
) -> None:
    """update/multiple validates its sessions in one transaction while single calls validate the
    same sessions from the other end: no call fails (on PostgreSQL a batch holding the campaign
    row while waiting for a session row a single call holds, which waits for the campaign row,
    would deadlock), and each session is validated exactly once."""
    campaign = create_campaign(account)
    codes = bulk_sessions(runtime, campaign["id"], 24)

    def client() -> httpx2.Client:
        return httpx2.Client(base_url=live_server.url, timeout=60, headers=account.headers)

    def batch() -> httpx2.Response:
        with client() as c:
            return c.post(
                "/v3/couponsession/update/multiple", json={"couponsessions": codes, "validate": True}
            )

    def single(code: str) -> Callable[[], httpx2.Response]:
        def call() -> httpx2.Response:
            with client() as c:
                return c.post("/v3/couponsession/update", json={"couponsession": code, "validate": True})

        return call

    responses = _race([batch, batch, *(single(code) for code in reversed(codes[4:]))])
    assert all(r.status_code in (200, 409) for r in responses), [
        r.text for r in responses if r.status_code >= 500
    ]
    singles = sum(r.status_code == 200 for r in responses[2:])
    batched = sum(int(r.json()["amount_succeeded"]) for r in responses[:2] if r.status_code == 200)
    assert singles + batched == 24
    assert _counts(runtime, campaign["id"])["records"] == 24


def test_claims_and_removals_racing_leave_the_statistics_equal_to_the_rows(
    account: Acct, runtime: Runtime, live_server: LiveServer
) -> None:
    """Each of 12 single-use links is claimed and removed at the same moment: whichever wins, the
    campaign's claim counter and its daily claims count exactly the claimed links still there."""
    campaign = create_campaign(account)
    links = bulk_sessions(runtime, campaign["id"], 12, source="single_use")

    def call(path: str, body: dict[str, Any]) -> Callable[[], httpx2.Response]:
        def run() -> httpx2.Response:
            with httpx2.Client(base_url=live_server.url, timeout=60, headers=account.headers) as c:
                return c.post(path, json=body)

        return run

    calls = []
    for link in links:
        calls.append(call("/v3/couponsession/update", {"couponsession": link, "claim": True}))
        calls.append(call("/v3/singleuse/remove", {"single_use_code": link}))
    responses = _race(calls)
    assert all(r.status_code in (200, 409) for r in responses), [r.text for r in responses]
    pk = int(campaign["id"].removeprefix("cam_"))
    with runtime.db.read() as s:
        kept_claims = s.scalar(
            select(func.count())
            .select_from(CouponSession)
            .where(
                CouponSession.campaign_id == pk,
                CouponSession.claimed_at.is_not(None),
                CouponSession.removed_at.is_(None),
            )
        )
        counter = s.scalar(select(Campaign.claims_count).where(Campaign.id == pk))
        daily = s.scalar(
            select(func.coalesce(func.sum(DailyStat.claims), 0)).where(DailyStat.campaign_id == pk)
        )
        removed = s.scalar(
            select(func.count())
            .select_from(CouponSession)
            .where(CouponSession.campaign_id == pk, CouponSession.removed_at.is_not(None))
        )
    assert removed == 12
    assert (counter, daily) == (kept_claims, kept_claims) == (0, 0)
