"""Loyalty cards, their holders, the rewards they unlock and the append-only ledger.

Balances live on the holder row (for atomic `SET points = points + :d` updates) and every change
is also one ledger row carrying the balance after it. CHECK constraints keep every balance at zero
or above, whatever the Python code does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, validates

from opencoupon.db.base import Base

CARD_TYPES = ("stamp", "points", "membership")


def email_key(email: str) -> str:
    """An email as holders are matched by it, in any letter case: lowered by Python's rules, the
    same on both databases (SQLite's lower() folds ASCII letters only, so É and é stayed apart)."""
    return email.lower()


class LoyaltyCard(Base):
    """A stamp, points or membership card. Public ID: the integer `id`; consumer URL `/l/<code>`."""

    __tablename__ = "loyalty_cards"
    __table_args__ = (
        CheckConstraint("type IN ('stamp', 'points', 'membership')", name="type_known"),
        CheckConstraint("reward_goal IS NULL OR reward_goal > 0", name="reward_goal_positive"),
        CheckConstraint("expire_days IS NULL OR expire_days > 0", name="expire_days_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Stamps or points that complete one card (the last reward's threshold); NULL: no rewards.
    reward_goal: Mapped[int | None] = mapped_column(Integer)
    pin_digest: Mapped[str] = mapped_column(String(64), default="")
    # Collected stamps/points expire after this many days without a new collection.
    expire_days: Mapped[int | None] = mapped_column(Integer)
    # Fields the join form requires, comma-separated: first_name, last_name, email, phone.
    join_fields: Mapped[str] = mapped_column(String(100), default="first_name,email")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class LoyaltyReward(Base):
    """A reward of a card: at `threshold` stamps/points in a card cycle, a session of the coupon
    campaign is issued to the holder."""

    __tablename__ = "loyalty_rewards"
    __table_args__ = (CheckConstraint("threshold > 0", name="threshold_positive"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("loyalty_cards.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    threshold: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    # Replaced rewards stay (grants point at them) but are no longer reached.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class LoyaltyHolder(Base):
    """One person's card. Public ID: the integer `id` (a numeric string in v3); `short_code` is
    the 6 characters staff type at the counter; `token` is the secret of the holder's page."""

    __tablename__ = "loyalty_holders"
    __table_args__ = (
        UniqueConstraint("card_id", "short_code"),
        CheckConstraint("points >= 0", name="points_nonneg"),
        CheckConstraint("stamps >= 0", name="stamps_nonneg"),
        CheckConstraint("cycle >= 0", name="cycle_nonneg"),
        Index("ix_loyalty_holders_card_email", "card_id", "email"),
        Index("ix_loyalty_holders_card_email_key", "card_id", "email_key"),
        Index("ix_loyalty_holders_card_phone", "card_id", "phone"),
        Index("ix_loyalty_holders_account_id", "account_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # NULL until linked (`loyaltyusers/create` without a card, then `loyaltyusers/link`).
    card_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_cards.id", ondelete="CASCADE"))
    short_code: Mapped[str] = mapped_column(String(8))
    token: Mapped[str] = mapped_column(String(32), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    # email_key(email), kept by `_keep_email_key`: one person joins a card once per email. Text:
    # lowering may lengthen it ('İ'.lower() is two characters), past the email's 254.
    email_key: Mapped[str] = mapped_column(Text, default="", server_default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    gender: Mapped[str] = mapped_column(String(10), default="")
    birthday: Mapped[dt.date | None] = mapped_column(Date)
    city: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str | None] = mapped_column(String(200))
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    points: Mapped[int] = mapped_column(Integer, default=0)
    stamps: Mapped[int] = mapped_column(Integer, default=0)
    # Completed cards: rewards are granted once per (reward, cycle).
    cycle: Mapped[int] = mapped_column(Integer, default=0)
    voided: Mapped[bool] = mapped_column(Boolean, default=False)
    last_collected_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)

    @validates("email")
    def _keep_email_key(self, _name: str, email: str) -> str:
        # Every ORM write of the email (a join, a copy on link, a privacy erasure) keeps the key.
        self.email_key = email_key(email)
        return email


class LoyaltyLedgerEntry(Base):
    """One change of a holder's balance (append-only), with the balance after it."""

    __tablename__ = "loyalty_ledger"
    __table_args__ = (
        CheckConstraint("balance_after >= 0", name="balance_after_nonneg"),
        Index("ix_loyalty_ledger_holder_id", "holder_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    card_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_cards.id", ondelete="CASCADE"))
    holder_id: Mapped[int] = mapped_column(ForeignKey("loyalty_holders.id", ondelete="CASCADE"))
    # points / stamps
    unit: Mapped[str] = mapped_column(String(8))
    delta: Mapped[int] = mapped_column(Integer)
    balance_after: Mapped[int] = mapped_column(Integer)
    # collect / spend / completed (a full card traded for its reward) / expired / voided / unvoided
    kind: Mapped[str] = mapped_column(String(16))
    # api / staff / pin / dashboard
    source: Mapped[str] = mapped_column(String(16), default="api")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class LoyaltyRewardGrant(Base):
    """A reward reached by a holder. The unique key makes a second grant of the same reward in the
    same card cycle impossible, even under concurrent additions."""

    __tablename__ = "loyalty_reward_grants"
    __table_args__ = (UniqueConstraint("holder_id", "reward_id", "cycle"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    card_id: Mapped[int] = mapped_column(ForeignKey("loyalty_cards.id", ondelete="CASCADE"))
    holder_id: Mapped[int] = mapped_column(ForeignKey("loyalty_holders.id", ondelete="CASCADE"))
    reward_id: Mapped[int] = mapped_column(ForeignKey("loyalty_rewards.id", ondelete="CASCADE"))
    cycle: Mapped[int] = mapped_column(Integer)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    coupon_session_id: Mapped[int | None] = mapped_column(
        ForeignKey("coupon_sessions.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
