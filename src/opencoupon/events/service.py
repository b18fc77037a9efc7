"""Events (CONTRACT §4): written in the same transaction as the change that caused them."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Event
from opencoupon.worker.queue import enqueue

EVENT_TYPES = (
    "coupon_opened",
    "coupon_claimed",
    "coupon_validated",
    "coupon_voided",
    "singleuse_created",
    "singleuse_removed",
    "loyalty_user_created",
    "loyalty_points_changed",
    "loyalty_reward_reached",
    "directory_user_registered",
    "directory_payment_status_changed",
    "subaccount_created",
)


def emit(
    session: Session,
    account_id: int,
    type: str,
    data: dict[str, Any],
    *,
    campaign: str = "",
    coupon_session: str = "",
) -> Event:
    """Record an event and queue its delivery, in the caller's transaction."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type}")
    event = Event(
        public_id=ids.event_id(),
        account_id=account_id,
        type=type,
        campaign=campaign,
        session=coupon_session,
        data=json.dumps(data, default=str),
        created_at=utcnow(),
    )
    session.add(event)
    session.flush()
    enqueue(session, "event.dispatch", {"event_id": event.id})
    return event
