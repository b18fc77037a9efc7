"""Helpers for the loyalty tests: reward campaigns made through the ORM (the coupons capability
owns their API), cards and holders made through the real API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from conftest import TestAccount
from helpers import assert_ok
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, CouponSession, Event, LoyaltyLedgerEntry, LoyaltyRewardGrant
from opencoupon.runtime import Runtime

CARDS = "/v4/loyalty/loyalty-cards"


def reward_campaign(runtime: Runtime, account_id: int, name: str = "Free coffee") -> str:
    """A coupon campaign to use as a reward; its public ID (`cam_…`)."""
    now = utcnow()
    with runtime.db.transaction() as session:
        campaign = Campaign(
            account_id=account_id,
            code=ids.random_code(ids.SHORT_CODE_LENGTH),
            name=name,
            kind="reward",
            status="active",
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
        session.flush()
        return f"cam_{campaign.id}"


def create_card(account: TestAccount, **fields: Any) -> dict[str, Any]:
    body = {"name": "Coffee card", "type": "stamp", **fields}
    response = account.client.post(CARDS, json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def create_holder(account: TestAccount, card_id: int, **fields: Any) -> dict[str, Any]:
    body = {"email": f"h{ids.random_code(8)}@example.com", "password": "secret-pass", **fields}
    user: dict[str, Any] = assert_ok(
        account.call("/v3/loyaltyusers/create", loyaltycard=str(card_id), **body)
    )["user"]
    return user


def update(account: TestAccount, card_id: int, user: str, **fields: Any) -> Any:
    return account.call("/v3/loyaltyusers/update", loyaltycard=str(card_id), user=user, **fields)


def ledger_of(runtime: Runtime, holder_id: int) -> list[tuple[int, int, str]]:
    with runtime.db.read() as session:
        rows = session.scalars(
            select(LoyaltyLedgerEntry)
            .where(LoyaltyLedgerEntry.holder_id == holder_id)
            .order_by(LoyaltyLedgerEntry.id)
        ).all()
        return [(r.delta, r.balance_after, r.kind) for r in rows]


def grants_of(runtime: Runtime, holder_id: int) -> list[tuple[int, int, int | None]]:
    with runtime.db.read() as session:
        rows = session.scalars(
            select(LoyaltyRewardGrant)
            .where(LoyaltyRewardGrant.holder_id == holder_id)
            .order_by(LoyaltyRewardGrant.id)
        ).all()
        return [(r.reward_id, r.cycle, r.coupon_session_id) for r in rows]


def reward_sessions(runtime: Runtime, campaign: str) -> list[CouponSession]:
    with runtime.db.read() as session:
        return list(
            session.scalars(
                select(CouponSession).where(CouponSession.campaign_id == int(campaign.removeprefix("cam_")))
            ).all()
        )


def event_count(runtime: Runtime, account_id: int, type_: str) -> int:
    with runtime.db.read() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.account_id == account_id, Event.type == type_)
            )
            or 0
        )
