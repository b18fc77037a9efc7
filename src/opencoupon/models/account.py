from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from opencoupon.db.base import Base


class Account(Base):
    """A business. A master account (parent_id NULL) may own subaccounts (parent_id set)."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(40), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    company_name: Mapped[str] = mapped_column(String(200), default="")
    username: Mapped[str] = mapped_column(String(100), default="")
    country: Mapped[str] = mapped_column(String(2), default="")
    language: Mapped[str] = mapped_column(String(8), default="en")
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    package: Mapped[str] = mapped_column(String(40), default="")
    # trial / customer
    plan_status: Mapped[str] = mapped_column(String(20), default="customer")
    expiry_date: Mapped[dt.date | None] = mapped_column(Date)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    max_campaigns: Mapped[int] = mapped_column(Integer, default=0)
    webhook_endpoint: Mapped[str] = mapped_column(Text, default="")
    access_dashboard: Mapped[bool] = mapped_column(Boolean, default=True)
    access_directory: Mapped[bool] = mapped_column(Boolean, default=False)
    branding: Mapped[str] = mapped_column(Text, default="{}")
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    login_count: Mapped[int] = mapped_column(Integer, default=0)
    # Moved on by a secret rotation after a leak (grace 0): a dashboard session opened through an
    # SSO link holds the value it was opened under and ends once this moves past it.
    sso_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Moved on whenever the account is, or was until now, unusable on the dashboard (blocked,
    # expired, without dashboard access): every dashboard session holds the value it began under,
    # so a block ends them for good, even a stolen cookie that made no request meanwhile.
    sessions_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)

    @property
    def is_subaccount(self) -> bool:
        return self.parent_id is not None


class ApiSecret(Base):
    """An API client secret: HMAC at rest for lookup; encrypted copy only where the vendor API
    must show it again (subaccount info shows api_secret to the master)."""

    __tablename__ = "api_secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    secret_digest: Mapped[str] = mapped_column(String(64), unique=True)
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # Set when rotated out: the secret keeps working until then (grace period).
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class OneTimeToken(Base):
    """SSO and password-reset tokens: digest only, single use (consumed by conditional UPDATE)."""

    __tablename__ = "one_time_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    page: Mapped[str] = mapped_column(String(40), default="")
    target: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
