"""Demo data: a coupon campaign with sessions in every state."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from opencoupon.coupons import service, stats
from opencoupon.coupons.schemas import CampaignCreate
from opencoupon.coupons.sessions import new_session, session_path
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import token
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Account
from opencoupon.runtime import Runtime

DEMO_PIN = "1234"


def seed(session: Session, runtime: Runtime, account: Account, subaccount: Account) -> dict[str, Any]:
    now = utcnow()
    ctx = ApiContext(session=session, account=account, runtime=runtime, now=now)
    campaign = service.create_campaign(
        ctx,
        CampaignCreate(
            name="Demo: free coffee",
            title="A free coffee with any pastry",
            subtitle="Demo Coffee Co.",
            description="Show this coupon at the counter.",
            terms="One coupon per visit.",
            pin=DEMO_PIN,
            tags=["demo", "coffee"],
            expiry_mode="after_claim",
            expiry_days=30,
            claim_fields=["firstname", "lastname", "email"],
            required_fields=["email"],
            custom_code_mode="generated",
        ),
    )
    sessions: dict[str, str] = {}

    def opened(label: str, when: dt.datetime = now) -> Any:
        """A session opened on the coupon's page, as a phone opens it (with its custom code)."""
        row = service.open_new(session, runtime, campaign, token(24), when)
        sessions[label] = runtime.url(session_path(campaign, row))
        return row

    def link(label: str, **kwargs: Any) -> Any:
        row = new_session(session, campaign, source="single_use", now=now, **kwargs)
        sessions[label] = runtime.url(session_path(campaign, row))
        return row

    opened("open")
    claimed = opened("claimed")
    details = {"firstname": "Ada", "lastname": "Lovelace", "email": "ada@example.com"}
    service.claim(session, runtime, campaign, claimed, now, claimtype="form", details=details)
    validated = opened("validated")
    grace = {"firstname": "Grace", "lastname": "Hopper", "email": "grace@example.com"}
    service.claim(session, runtime, campaign, validated, now, claimtype="form", details=grace)
    service.validate(session, runtime, campaign, validated, now, method="api")
    voided = link("voided", link_status="normal", customid="CRM-42")
    service.void(session, runtime, campaign, voided, now)
    locked = opened("locked")
    service.set_lock(session, locked, True, now)
    # Expired by the campaign's own rule: claimed longer ago than its 30 days.
    month_ago = now - dt.timedelta(days=31)
    expired = opened("expired", month_ago)
    linus = {"firstname": "Linus", "email": "linus@example.com"}
    service.claim(session, runtime, campaign, expired, month_ago, claimtype="form", details=linus)
    removed = opened("removed")
    removed.removed_at = now
    stats.on_session_removed(session, removed)
    link("not_opened_single_use", firstname="Alan", email="alan@example.com")
    session.flush()
    return {
        "coupon_campaign": {
            "ID": service.campaign_public_id(campaign),
            "url": runtime.url(f"/p/{campaign.code}"),
            "staff_page": runtime.url(f"/p/{campaign.code}/staff"),
            "staff_pin": DEMO_PIN,
            "sessions": sessions,
        }
    }
