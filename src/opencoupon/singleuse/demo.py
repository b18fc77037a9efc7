"""Demo data: a few personal links, pre-filled for named recipients."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account, Campaign
from opencoupon.runtime import Runtime
from opencoupon.singleuse import service

RECIPIENTS = [
    ("Ada", "Lovelace", "ada@example.com", "CRM-1001"),
    ("Grace", "Hopper", "grace@example.com", "CRM-1002"),
    ("Katherine", "Johnson", "katherine@example.com", "CRM-1003"),
]


def _demo_campaign(session: Session, account: Account) -> Campaign:
    """The account's first campaign (the coupons demo makes some), or one of our own."""
    found = session.scalar(
        select(Campaign)
        .where(Campaign.account_id == account.id, Campaign.deleted_at.is_(None), Campaign.kind == "coupon")
        .order_by(Campaign.id)
        .limit(1)
    )
    if found is not None:
        return found
    now = utcnow()
    campaign = Campaign(
        account_id=account.id,
        code=ids.random_code(6),
        name="Personal welcome offer",
        title="A free coffee, just for you",
        description="Show this page at the counter. Valid once.",
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    return campaign


def seed(session: Session, runtime: Runtime, account: Account, subaccount: Account) -> dict[str, Any]:
    campaign = _demo_campaign(session, account)
    now = utcnow()
    base_url = runtime.settings.public_base_url
    links = []
    for firstname, lastname, email, customid in RECIPIENTS:
        result = service.create_link(
            session,
            campaign,
            service.Prefill(firstname=firstname, lastname=lastname, email=email, customid=customid),
            custom_code=None,
            autovalcode=True,
            duplicate_check=True,
            expires_at=None,
            now=now,
            base_url=base_url,
        )
        links.append(service.link_answer(base_url, campaign, result.link)["single_use_url"])
    return {"single_use_campaign": f"cam_{campaign.id}", "single_use_links": links}
