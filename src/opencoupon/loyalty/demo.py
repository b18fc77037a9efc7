"""Demo data: a stamp card and a points card with holders, rewards as coupon campaigns."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.loyalty import service
from opencoupon.loyalty.schemas import CardCreate, RewardIn
from opencoupon.models import Account, Campaign
from opencoupon.runtime import Runtime

DEMO_PIN = "1234"


def _reward_campaign(session: Session, account: Account, name: str) -> Campaign:
    now = utcnow()
    campaign = Campaign(
        account_id=account.id,
        code=ids.random_code(ids.SHORT_CODE_LENGTH),
        name=name,
        title=name,
        kind="reward",
        status="active",
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    return campaign


def seed(session: Session, runtime: Runtime, account: Account, subaccount: Account) -> dict[str, Any]:
    now = utcnow()
    coffee = _reward_campaign(session, account, "Free coffee")
    cookie = _reward_campaign(session, account, "Free cookie")
    voucher = _reward_campaign(session, account, "5 EUR voucher")
    stamp = service.create_card(
        session,
        runtime,
        account.id,
        CardCreate(
            name="Coffee stamp card",
            type="stamp",
            reward_goal=10,
            rewards=[
                RewardIn(threshold=5, campaign=f"cam_{cookie.id}", name="Free cookie"),
                RewardIn(threshold=10, campaign=f"cam_{coffee.id}", name="Free coffee"),
            ],
            pin=DEMO_PIN,
        ),
        now,
    )
    points = service.create_card(
        session,
        runtime,
        account.id,
        CardCreate(
            name="Points club",
            type="points",
            reward_goal=500,
            rewards=[RewardIn(threshold=500, campaign=f"cam_{voucher.id}", name="5 EUR voucher")],
            pin=DEMO_PIN,
            expire_days=365,
            join_fields=["first_name", "email", "phone"],
        ),
        now,
    )
    people = [("Ada", "Lovelace", "ada@example.com", 7), ("Alan", "Turing", "alan@example.com", 3)]
    holders = []
    for first, last, email, amount in people:
        holder = service.create_holder(
            session,
            runtime,
            account.id,
            stamp,
            service.HolderFields(first_name=first, last_name=last, email=email),
            now,
        )
        service.change_balance(session, runtime, stamp, holder, amount, source="demo", now=now)
        member = service.create_holder(
            session,
            runtime,
            account.id,
            points,
            service.HolderFields(first_name=first, last_name=last, email=email, phone="+3212345678"),
            now,
        )
        service.change_balance(session, runtime, points, member, amount * 40, source="demo", now=now)
        holders.append(runtime.url(service.holder_path(stamp, holder)))
    return {
        "loyalty": {
            "stamp_card": {"id": stamp.id, "url": service.card_url(runtime, stamp)},
            "points_card": {"id": points.id, "url": service.card_url(runtime, points)},
            "staff_pin": DEMO_PIN,
            "holder_pages": holders,
        }
    }
