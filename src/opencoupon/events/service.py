"""Events (CONTRACT §4): written in the same transaction as the change that caused them."""

from __future__ import annotations

import json
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Event
from opencoupon.worker.queue import enqueue_many

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
) -> str:
    """Record an event and queue its delivery, in the caller's transaction; its `evt_` ID.

    Core inserts rather than ORM objects: this runs on every validation and stamp."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type}")
    public_id = ids.event_id()
    now = utcnow()
    event_id = session.execute(
        _INSERT_EVENT,
        {
            "public_id": public_id,
            "account_id": account_id,
            "type": type,
            "campaign": campaign,
            "session": coupon_session,
            "data": json.dumps(data, default=str),
            "created_at": now,
        },
    ).scalar_one()
    enqueue_many(session, "event.dispatch", [{"event_id": event_id}])
    return public_id


_INSERT_EVENT = insert(cast(Table, Event.__table__)).returning(Event.__table__.c.id)
