from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencoupon.models import Campaign


def campaigns_of(session: Session, account_id: int) -> Sequence[Campaign]:
    return session.scalars(
        select(Campaign)
        .where(Campaign.account_id == account_id, Campaign.deleted_at.is_(None))
        .order_by(Campaign.id)
    ).all()
