"""Campaigns for single-use tests, inserted through the ORM (the campaign API is another
capability's)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest

from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime

_serial = itertools.count(1)


@dataclass
class CampaignRef:
    id: int
    code: str
    account_id: int

    @property
    def public_id(self) -> str:
        return f"cam_{self.id}"


def make_campaign(runtime: Runtime, account_id: int, name: str = "Personal offer") -> CampaignRef:
    now = utcnow()
    with runtime.db.transaction() as session:
        campaign = Campaign(
            account_id=account_id,
            code=ids.random_code(6),
            name=f"{name} {next(_serial)}",
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
        session.flush()
        return CampaignRef(campaign.id, campaign.code, account_id)


@pytest.fixture
def su_campaign(runtime: Runtime, account: Any) -> CampaignRef:
    return make_campaign(runtime, account.id)


@pytest.fixture
def su_other_campaign(runtime: Runtime, other_account: Any) -> CampaignRef:
    return make_campaign(runtime, other_account.id, "Someone else's offer")
