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
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from opencoupon.db.base import Base


class CouponSession(Base):
    """One consumer's copy of a coupon. `code` is the 21-char session code; `short_code` its first
    6 characters (the widget validation code); `id` is the vendor's `sequenceid`."""

    __tablename__ = "coupon_sessions"
    __table_args__ = (
        UniqueConstraint("campaign_id", "short_code"),
        UniqueConstraint("campaign_id", "custom_validation_code"),
        CheckConstraint("validation_count >= 0", name="validation_count_nonneg"),
        Index("ix_coupon_sessions_account_short", "account_id", "short_code"),
        Index("ix_coupon_sessions_campaign_created", "campaign_id", "created_at"),
        Index("ix_coupon_sessions_campaign_customid", "campaign_id", "customid"),
        Index("ix_coupon_sessions_campaign_email", "campaign_id", "email"),
        Index("ix_coupon_sessions_campaign_phone", "campaign_id", "phone"),
        Index("ix_coupon_sessions_account_custom_code", "account_id", "custom_validation_code"),
        # Usage data lists sessions of one campaign by the date of each state (coupons capability).
        Index("ix_coupon_sessions_campaign_opened", "campaign_id", "opened_at"),
        Index("ix_coupon_sessions_campaign_claimed", "campaign_id", "claimed_at"),
        Index("ix_coupon_sessions_campaign_validated", "campaign_id", "validated_at"),
        # Custom validation codes are found in any letter case (coupons/repository.py).
        Index(
            "ix_coupon_sessions_campaign_custom_code_lower",
            "campaign_id",
            text("lower(custom_validation_code)"),
        ),
        # A person is looked up by email in any letter case (privacy/); only claimed sessions hold one.
        Index(
            "ix_coupon_sessions_email_lower",
            text("lower(email)"),
            sqlite_where=text("email <> ''"),
            postgresql_where=text("email <> ''"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(32), unique=True)
    short_code: Mapped[str] = mapped_column(String(8))
    # Cookie of the browser that opened it, so reopening on the same device gives the same session.
    device_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    # web / single_use / api / loyalty_reward / email / sms
    source: Mapped[str] = mapped_column(String(20), default="web")
    # normal / voided / activated (single-use batches)
    link_status: Mapped[str] = mapped_column(String(16), default="normal")
    opened_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    played_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    validated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    voided_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    removed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Wrong staff PINs typed on this session's page; the session locks after too many.
    pin_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    claimtype: Mapped[str] = mapped_column(String(20), default="")
    validation_count: Mapped[int] = mapped_column(Integer, default=0)
    validation_value: Mapped[Any] = mapped_column(Numeric(14, 2), nullable=True)
    value: Mapped[str] = mapped_column(String(200), default="")
    customid: Mapped[str] = mapped_column(String(200), default="")
    custom_validation_code: Mapped[str | None] = mapped_column(String(64))
    firstname: Mapped[str] = mapped_column(String(100), default="")
    lastname: Mapped[str] = mapped_column(String(100), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    birthday: Mapped[dt.date | None] = mapped_column(Date)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    consent: Mapped[bool] = mapped_column(Boolean, default=False)
    saved_to_passbook: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class Validation(Base):
    """One validation of a session (append-only; written with its coupon_validated event)."""

    __tablename__ = "validations"
    __table_args__ = (
        UniqueConstraint("session_id", "ordinal"),
        Index("ix_validations_campaign_created", "campaign_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    session_id: Mapped[int] = mapped_column(ForeignKey("coupon_sessions.id", ondelete="CASCADE"))
    # 1 for the first validation of the session, 2 for the second...: the unique key makes
    # double validation impossible even if a conditional update were ever skipped.
    ordinal: Mapped[int] = mapped_column(Integer)
    # api / pin / widget / custom_code / qr / dashboard
    method: Mapped[str] = mapped_column(String(20))
    validation_value: Mapped[Any] = mapped_column(Numeric(14, 2), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class DailyStat(Base):
    """Opens, claims and validations per campaign per day, kept up to date on each change so
    usage statistics never scan sessions."""

    __tablename__ = "campaign_daily_stats"
    __table_args__ = (UniqueConstraint("campaign_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    day: Mapped[dt.date] = mapped_column(Date)
    opens: Mapped[int] = mapped_column(Integer, default=0)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    validations: Mapped[int] = mapped_column(Integer, default=0)
