"""Webhook endpoints, the body of each event as sent, one message per endpoint and event, and one
log row per delivery attempt."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from opencoupon.db.base import Base


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index("ix_webhook_endpoints_account", "account_id", "enabled"),
        # One endpoint mirroring the account's webhook_endpoint field (migration 0013).
        Index(
            "uq_webhook_endpoints_account_field",
            "account_id",
            unique=True,
            sqlite_where=text("source = 'account_field'"),
            postgresql_where=text("source = 'account_field'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(200), default="")
    # Comma-separated event types, or "*" for every type.
    events: Mapped[str] = mapped_column(Text, default="*")
    # api: made through /v4/webhooks; account_field: mirrors Account.webhook_endpoint.
    source: Mapped[str] = mapped_column(String(16), default="api")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Encrypted, not hashed: every delivery is signed with it.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # The previous secret during a rotation: deliveries carry both signatures until it expires.
    old_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    old_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # First failure since the last success; five days of failures disable the endpoint.
    failing_since: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Throttle (migration 0014): at most rate_limit messages a second (None: no limit).
    # throttle_next_at is the first free sending slot: deliveries reserve theirs by moving it on
    # (webhooks.tasks), so every worker process keeps to one schedule.
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    throttle_next_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class WebhookPayload(Base):
    """The exact text every delivery of an event sends (and signs), written once."""

    __tablename__ = "webhook_payloads"

    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    body: Mapped[str] = mapped_column(Text)


class WebhookMessage(Base):
    """One event for one endpoint: its delivery state across attempts and replays."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_messages_endpoint_created", "endpoint_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    # pending / succeeded / failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # All attempts ever, and attempts since the last (re)play: the retry schedule uses the latter.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    round_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # The sending slot its next attempt reserved on a throttled endpoint: a job that comes back
    # for it sends then, without reserving another (cleared when the attempt is recorded).
    throttled_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class WebhookAttempt(Base):
    """The delivery log: one row per HTTP attempt."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        UniqueConstraint("message_id", "attempt"),
        Index("ix_webhook_attempts_endpoint_created", "endpoint_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("webhook_messages.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    # 0 when no HTTP answer came (refused address, timeout, connection error).
    status_code: Mapped[int] = mapped_column(Integer, default=0)
    success: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    response_body: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
