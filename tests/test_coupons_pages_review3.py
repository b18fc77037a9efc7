"""Consumer pages, third review: one session per device when it opens a coupon several times at
once, and a claim racing a validation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx2
from sqlalchemy import func, select
from sqlalchemy.orm.attributes import set_committed_value

from conftest import LiveServer
from coupons_fixtures import PIN, Acct, bulk_sessions, create_campaign, csrf_token
from opencoupon.coupons import service
from opencoupon.errors import ApiError
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, CouponSession, Event
from opencoupon.runtime import Runtime

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
NO_COOKIES = "Your browser did not send cookies: allow cookies for this site and try again."


def _pk(campaign: dict[str, Any]) -> int:
    return int(campaign["id"].removeprefix("cam_"))


def _error(answer: httpx2.Response) -> tuple[int, str]:
    """The code and text of a page's JSON refusal."""
    errors = answer.json()["status"]["errors"]
    return errors["error_code"][0], errors["error_message_description"][0]


def _opens_and_sessions(runtime: Runtime, campaign: dict[str, Any]) -> tuple[int, int]:
    with runtime.db.read() as s:
        opens = s.scalar(select(Campaign.opens_count).where(Campaign.id == _pk(campaign)))
        sessions = s.scalar(
            select(func.count()).select_from(CouponSession).where(CouponSession.campaign_id == _pk(campaign))
        )
    return int(opens or 0), int(sessions or 0)


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Each call in its own thread, all released together; the answers in the calls' order."""
    barrier = threading.Barrier(len(calls))
    answers: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        answers[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _post_status(
    url: str, cookies: dict[str, str], path: str, data: dict[str, str], headers: dict[str, str]
) -> int:
    with httpx2.Client(base_url=url, timeout=30, cookies=cookies) as tab:
        return tab.post(path, data=data, headers=headers).status_code


def _opened_at(url: str, device: str, code: str) -> str:
    """Where GET /p/{code} sends a browser holding this device cookie."""
    with httpx2.Client(base_url=url, timeout=30, cookies={"oc_device": device}) as tab:
        answer = tab.get(f"/p/{code}")
        assert answer.status_code == 303, answer.text
        return str(answer.headers["location"])


# ---------------------------------------------------------------- one device, one session


def test_one_device_opening_a_coupon_several_times_at_once_gets_one_session(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        assert phone.get(f"/p/{create_campaign(account)['code']}").status_code == 303
        device = phone.cookies["oc_device"]
    # A few rounds: eight requests at once do not always meet inside the opening transaction.
    for _ in range(4):
        campaign = create_campaign(account)
        locations = _at_once([partial(_opened_at, live_server.url, device, campaign["code"])] * 8)
        assert len(set(locations)) == 1, locations
        assert _opens_and_sessions(runtime, campaign) == (1, 1)


# ---------------------------------------------------------------- claim racing a validation


def test_a_claim_that_read_the_coupon_before_a_validation_is_refused(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, claim_fields="firstname", validations_per_session=3)
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    path = f"/p/{campaign['code']}/{code}"
    with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
        token = csrf_token(phone, path)
        assert (
            phone.post(f"{path}/validate", data={"csrf": token, "pin": PIN}, headers=JSON).status_code == 200
        )
    refused = None
    with runtime.db.transaction() as s:
        row = s.scalar(select(CouponSession).where(CouponSession.code == code))
        found = s.get(Campaign, _pk(campaign))
        assert row is not None
        assert found is not None
        # The row as a claim read it just before the validation committed.
        set_committed_value(row, "validation_count", 0)
        set_committed_value(row, "validated_at", None)
        try:
            service.claim(s, runtime, found, row, utcnow(), claimtype="form")
        except ApiError as err:
            refused = err
    assert refused is not None
    assert (refused.code, refused.description) == (308, "This coupon has already been validated.")
    with runtime.db.read() as s:
        assert s.scalar(select(CouponSession.claimed_at).where(CouponSession.code == code)) is None


def test_a_claim_and_a_validation_at_once_never_claim_a_used_coupon(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    campaign = create_campaign(account, claim_fields="firstname", validations_per_session=3)
    codes = bulk_sessions(runtime, campaign["id"], 16)
    for round_, code in enumerate(codes):
        path = f"/p/{campaign['code']}/{code}"
        with httpx2.Client(base_url=live_server.url, timeout=30) as phone:
            token = csrf_token(phone, path)
            cookies = dict(phone.cookies)

        claim, validate = (
            partial(
                _post_status,
                live_server.url,
                cookies,
                f"{path}/{action}",
                {"csrf": token, **data},
                # Each its own address: the wrong-PIN limit of one address is no part of this.
                {**JSON, "X-Forwarded-For": f"10.77.{round_}.{index}"},
            )
            for index, (action, data) in enumerate(
                (("claim", {"firstname": "Ada"}), ("validate", {"pin": PIN})), start=1
            )
        )
        claimed, validated = _at_once([claim, validate])
        assert validated == 200
        with runtime.db.read() as s:
            kinds = list(
                s.scalars(
                    select(Event.type)
                    .where(Event.session == code, Event.type.in_(["coupon_claimed", "coupon_validated"]))
                    .order_by(Event.id)
                )
            )
        # Claimed first and then validated is fine; validated and then claimed must not happen.
        assert kinds in (["coupon_claimed", "coupon_validated"], ["coupon_validated"]), (round_, kinds)
        assert claimed == (200 if kinds[0] == "coupon_claimed" else 409), (round_, claimed, kinds)
