"""Demo data: a paid coupon book with categories, campaigns and users in every payment state."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from opencoupon.directories import repository, service
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import hash_password
from opencoupon.models import Account, Campaign, Category, Directory
from opencoupon.runtime import Runtime

DEMO_USER_PASSWORD = "demo-password"
PAYMENT_URL = "https://payments.example.com/opencoupon-demo"

_CAMPAIGNS = [
    # name, description, category path, featured
    (
        "Two pizzas for one",
        "Any pizza on the menu, Monday to Thursday.",
        ("Food", "Pizza", "Napoletana"),
        True,
    ),
    ("Free espresso", "With any pastry before 10 am.", ("Food", "Coffee"), False),
    ("20% off a haircut", "Cut and blow-dry at Salon Nova.", ("Beauty",), False),
    ("Cinema: kids go free", "One child ticket free with every adult ticket.", ("Leisure",), True),
]

_USERS = [
    # email, first name, payment status, expiry relative to now (None: no end)
    ("paid@demo.opencoupon.local", "Paula", "completed", dt.timedelta(days=365)),
    ("lifetime@demo.opencoupon.local", "Lars", "completed", None),
    ("expired@demo.opencoupon.local", "Emma", "completed", -dt.timedelta(days=3)),
    ("pending@demo.opencoupon.local", "Pieter", "pending", None),
    ("cancelled@demo.opencoupon.local", "Carla", "cancelled", None),
]


def _category(
    session: Session, account: Account, path: tuple[str, ...], made: dict[tuple[str, ...], Category]
) -> int:
    now = utcnow()
    parent: Category | None = None
    for depth in range(1, len(path) + 1):
        key = path[:depth]
        if key not in made:
            made[key] = Category(
                account_id=account.id,
                parent_id=parent.id if parent else None,
                level=depth,
                name=key[-1],
                position=len(made),
                created_at=now,
                updated_at=now,
            )
            session.add(made[key])
            session.flush()
        parent = made[key]
    assert parent is not None
    return parent.id


def seed(session: Session, runtime: Runtime, account: Account, subaccount: Account) -> dict[str, Any]:
    now = utcnow()
    directory = Directory(
        account_id=account.id,
        code=service.new_code(session, repository.directory_code_taken),
        name="Demo City Coupon Book",
        description="A paid coupon book: register, pay on the business's own page, and the coupons unlock.",
        access="payment",
        payment_url=PAYMENT_URL,
        membership_days=365,
        created_at=now,
        updated_at=now,
    )
    session.add(directory)
    session.flush()
    categories: dict[tuple[str, ...], Category] = {}
    campaign_ids = []
    for position, (name, description, path, featured) in enumerate(_CAMPAIGNS):
        campaign = Campaign(
            account_id=account.id,
            code=service.new_code(session, repository.campaign_code_taken),
            name=name,
            title=name,
            description=description,
            status="active",
            kind="coupon",
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
        session.flush()
        category_id = _category(session, account, path, categories)
        campaign.category_id = category_id
        row = service.add_item(session, directory, "campaign", campaign.id, now)
        row.category_id, row.featured, row.position = category_id, featured, position
        campaign_ids.append(ids.public_id("cam_", campaign.id))
    users = {}
    for email, first_name, status, offset in _USERS:
        user = service.register_user(
            session,
            directory,
            email=email,
            password_hash=hash_password(DEMO_USER_PASSWORD),
            now=now,
            source="demo",
            first_name=first_name,
            last_name="Demo",
        )
        if status != "pending":
            expires = (now + offset).replace(second=0, microsecond=0) if offset is not None else None
            service.set_payment(session, directory, user, status, expires, now, source="demo")
        users[email] = {"ID": service.reg_id(user), "payment_status": status}
    session.flush()
    return {
        "directory": {
            "ID": service.dir_id(directory),
            "url": runtime.url(service.directory_path(directory)),
            "campaigns": campaign_ids,
            "users_password": DEMO_USER_PASSWORD,
            "users": users,
        }
    }
