"""Web Push: the server's VAPID key, browser subscriptions, and durable fan-outs."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opencoupon.db.base import Base


class VapidKey(Base):
    """The application server key pair (one row, name "default"), generated on first use."""

    __tablename__ = "vapid_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    # The raw 32-byte private scalar, base64url, encrypted with the server key.
    private_key_encrypted: Mapped[str] = mapped_column(Text)
    # Uncompressed P-256 point, base64url: what browsers pass to pushManager.subscribe().
    public_key: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class PushSubscription(Base):
    """One browser's subscription for one coupon session or one loyalty card holder."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (
        UniqueConstraint("target_kind", "target_key", "endpoint_digest"),
        Index("ix_push_subscriptions_group", "target_kind", "group_id", "id"),
        # Every target one browser subscription serves (opt-out, a renewed subscription).
        Index("ix_push_subscriptions_endpoint", "endpoint_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    # coupon_session / loyalty_holder
    target_kind: Mapped[str] = mapped_column(String(20))
    # The campaign ID (coupon_session) or loyalty card ID (loyalty_holder): "all" sends to a group.
    group_id: Mapped[int] = mapped_column(Integer)
    # The session code, or the holder's public ID.
    target_key: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(Text)
    # SHA-256 of the endpoint URL, for the unique key (URLs are long).
    endpoint_digest: Mapped[str] = mapped_column(String(64))
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class PushFanout(Base):
    """A push to every subscription of a group (or of one target): a durable job with progress."""

    __tablename__ = "push_fanouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    target_kind: Mapped[str] = mapped_column(String(20))
    group_id: Mapped[int] = mapped_column(Integer)
    # Empty: every subscription of the group; otherwise one target's subscriptions.
    target_key: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(String(200), default="")
    url: Mapped[str] = mapped_column(Text, default="")
    # queued / running / done
    status: Mapped[str] = mapped_column(String(16), default="queued")
    queued: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    # The last subscription ID handled: a restarted job resumes after it.
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    # The highest subscription ID when the push was queued: later subscriptions are not part of
    # it (NULL: queued before this bound existed, no bound).
    last_subscription_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class PushRetry(Base):
    """A subscription of a fan-out to try again: its push service answered 429 or 5xx, or not in
    time (RFC 8030: temporary). `tries` made so far; due at `run_at`."""

    __tablename__ = "push_retries"
    __table_args__ = (
        UniqueConstraint("fanout_id", "subscription_id"),
        Index("ix_push_retries_due", "fanout_id", "run_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fanout_id: Mapped[int] = mapped_column(ForeignKey("push_fanouts.id", ondelete="CASCADE"))
    # No foreign key: a subscription deleted meanwhile (opted out) is simply not found again.
    subscription_id: Mapped[int] = mapped_column(Integer)
    tries: Mapped[int] = mapped_column(Integer)
    run_at: Mapped[dt.datetime] = mapped_column(DateTime)
