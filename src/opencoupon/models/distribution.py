"""Distribution: per-account email (SMTP) and SMS settings, and one row per message sent."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from opencoupon.db.base import Base


class EmailIntegration(Base):
    """An account's own SMTP server. The password is stored encrypted (Keyring), never shown."""

    __tablename__ = "email_integrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    # none / starttls / tls
    tls_mode: Mapped[str] = mapped_column(String(10))
    username: Mapped[str] = mapped_column(String(255), default="")
    password_encrypted: Mapped[str] = mapped_column(Text, default="")
    sender_name: Mapped[str] = mapped_column(String(200), default="")
    sender_email: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class SmsIntegration(Base):
    """An account's SMS provider (a Twilio-compatible REST API). The token is stored encrypted."""

    __tablename__ = "sms_integrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), unique=True)
    provider: Mapped[str] = mapped_column(String(20), default="twilio")
    base_url: Mapped[str] = mapped_column(String(500))
    account_sid: Mapped[str] = mapped_column(String(100))
    token_encrypted: Mapped[str] = mapped_column(Text)
    # Default sender: an E.164 number or an alphanumeric sender ID.
    sender: Mapped[str] = mapped_column(String(20), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class DistributionSend(Base):
    """One email or SMS: who asked, to whom, which session, and what the provider answered.

    `dedup_key` is set for sends that must happen at most once per recipient (check_unique and
    bulk sends): its unique index makes a concurrent duplicate fail instead of sending twice. It is
    cleared when a send fails for good, so the recipient can be tried again."""

    __tablename__ = "distribution_sends"
    __table_args__ = (
        Index("ix_distribution_sends_campaign_recipient", "campaign_id", "channel", "recipient_key"),
        Index("ix_distribution_sends_account_created", "account_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # The account whose credentials made the call (a master may send its subaccount's coupon).
    requested_by: Mapped[int | None] = mapped_column(Integer)
    # email / sms
    channel: Mapped[str] = mapped_column(String(8))
    # api / bulk
    origin: Mapped[str] = mapped_column(String(8), default="api")
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    directory_id: Mapped[int | None] = mapped_column(Integer)
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("coupon_sessions.id", ondelete="SET NULL"), index=True
    )
    recipient: Mapped[str] = mapped_column(String(254))
    # Lower-cased email or the E.164 number: what check_unique compares.
    recipient_key: Mapped[str] = mapped_column(String(254))
    recipient_name: Mapped[str] = mapped_column(String(200), default="")
    # Whom the email greets (a reused session may hold someone else's name).
    firstname: Mapped[str] = mapped_column(String(100), default="")
    subject: Mapped[str] = mapped_column(String(300), default="")
    # The SMS text as sent (email bodies are rendered when sent).
    body: Mapped[str] = mapped_column(Text, default="")
    sender: Mapped[str] = mapped_column(String(254), default="")
    # queued / sending / retrying / sent / failed
    status: Mapped[str] = mapped_column(String(10), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    dedup_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    provider_message_id: Mapped[str] = mapped_column(String(200), default="")
    provider_response: Mapped[str] = mapped_column(Text, default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    failed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
