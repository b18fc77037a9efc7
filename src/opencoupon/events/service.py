"""Events (CONTRACT §4): written in the same transaction as the change that caused them."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from opencoupon.db import raw
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.worker import queue

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
    # Records of a person were erased (privacy/): their IDs, so receivers forget their copies.
    "privacy_erased",
    # A webhook endpoint was disabled automatically (410 Gone, or 5 days of failures); webhooks/.
    "webhook_endpoint_disabled",
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

    Raw statements: this runs on every validation and stamp. The delivery job is queued only when
    the account has somewhere to deliver to (an enabled endpoint or the account's webhook URL
    field): the check runs in the same transaction, so an endpoint committed before this event
    always gets it, and events stay in the table for replays either way."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type}")
    public_id = ids.event_id()
    now = utcnow()
    event_id = raw.scalar(
        session,
        INSERT_EVENT,
        {
            "public_id": public_id,
            "account_id": account_id,
            "type": type,
            "campaign": campaign,
            "session": coupon_session,
            "data": json.dumps(data, default=str),
            "now": now,
        },
    )
    if raw.scalar(session, HAS_SUBSCRIBER, {"account_id": account_id, "yes": True}) is not None:
        queue.enqueue_fast(session, "event.dispatch", {"event_id": event_id})
    return public_id


# Public: bench/bench_validation.py replays these to measure a validation's floor.
INSERT_EVENT = raw.RawStatement(
    "INSERT INTO events (public_id, account_id, type, campaign, session, data, created_at) "
    "VALUES (:public_id, :account_id, :type, :campaign, :session, :data, :now) RETURNING id"
)
HAS_SUBSCRIBER = raw.RawStatement(
    "SELECT 1 FROM webhook_endpoints WHERE account_id = :account_id AND enabled = :yes "
    "UNION ALL SELECT 1 FROM accounts WHERE id = :account_id AND webhook_endpoint != '' LIMIT 1"
)
