"""Loyalty push calls against real loyalty cards and holders. The loyalty models come from the
loyalty capability: until it is merged this module is skipped (targets.py is the one place that
looks cards and holders up)."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import httpx2
import pytest

from helpers import assert_error, assert_ok
from opencoupon import models
from opencoupon.kit.clock import utcnow
from opencoupon.runtime import Runtime
from test_push import Browser
from webhooks_fixtures import Receiver, drain

if TYPE_CHECKING:
    from conftest import TestAccount

pytestmark = pytest.mark.skipif(
    not hasattr(models, "LoyaltyCard") or not hasattr(models, "LoyaltyHolder"),
    reason="loyalty models not merged yet",
)


def _card_with_holder(runtime: Runtime, account_id: int) -> tuple[int, int, str]:
    card_model: Any = models.LoyaltyCard  # type: ignore[attr-defined]
    holder_model: Any = models.LoyaltyHolder  # type: ignore[attr-defined]
    now = utcnow()
    with runtime.db.transaction() as session:
        card = card_model(
            account_id=account_id,
            code=f"l{time.time_ns() % 10**9:09d}"[-8:],
            name="Coffee card",
            type="stamp",
            created_at=now,
            updated_at=now,
        )
        session.add(card)
        session.flush()
        token = secrets.token_urlsafe(16)
        holder = holder_model(
            account_id=account_id,
            card_id=card.id,
            short_code=secrets.token_hex(3).upper(),  # as the loyalty service makes them
            token=token,
            created_at=now,
            updated_at=now,
        )
        session.add(holder)
        session.flush()
        return int(card.id), int(holder.id), token


def test_loyalty_push_single_and_all(
    account: TestAccount, other_account: TestAccount, runtime: Runtime, http: httpx2.Client
) -> None:
    standin = Receiver().start()
    try:
        card_id, holder_id, token = _card_with_holder(runtime, account.id)
        browser = Browser()
        subscribed = http.post(
            "/push/subscriptions",
            json={
                "target": {"kind": "loyalty_holder", "code": token},
                "subscription": browser.subscription(standin.url + "/push/1"),
            },
        )
        assert subscribed.status_code == 201, subscribed.text
        one = assert_ok(
            account.call(
                "/v3/loyalty/pushnotification/single",
                loyaltycard=str(card_id),
                user=str(holder_id),
                message="1",
            )
        )
        assert one["queued"] == "1"
        # The holder's 6-character code works as loyaltyusers/update takes it.
        with runtime.db.read() as session:
            short_code = session.get(models.LoyaltyHolder, holder_id).short_code  # type: ignore[attr-defined]
        by_code = assert_ok(
            account.call(
                "/v3/loyalty/pushnotification/single", loyaltycard=str(card_id), user=short_code, message="3"
            )
        )
        assert by_code["queued"] == "1"
        every = assert_ok(
            account.call("/v3/loyalty/pushnotification/all", loyaltycard=str(card_id), message="2")
        )
        assert every["queued"] == "1"
        drain(runtime)
        got = standin.wait_for(3)
        assert sorted(browser.decrypt(r.raw)["body"] for r in got) == ["1", "2", "3"]
        assert_error(
            account.call(
                "/v3/loyalty/pushnotification/single", loyaltycard=str(card_id), user="999999", message="m"
            ),
            404,
            512,
        )
        assert_error(
            other_account.call("/v3/loyalty/pushnotification/all", loyaltycard=str(card_id), message="m"),
            404,
            508,
        )
    finally:
        standin.stop()
