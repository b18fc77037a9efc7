from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Date, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from opencoupon.db.base import Base


class Campaign(Base):
    """A coupon campaign. Public ID `cam_<id>`; consumer URL `/p/<code>`."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint("validations_count >= 0", name="validations_count_nonneg"),
        CheckConstraint(
            "max_validations IS NULL OR validations_count <= max_validations", name="validations_within_limit"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(300), default="")
    subtitle: Mapped[str] = mapped_column(String(300), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    terms: Mapped[str] = mapped_column(Text, default="")
    image_url: Mapped[str] = mapped_column(Text, default="")
    # active / inactive
    status: Mapped[str] = mapped_column(String(16), default="active")
    # coupon / template (directory templates) / reward (issued by loyalty cards)
    kind: Mapped[str] = mapped_column(String(16), default="coupon")
    tags: Mapped[str] = mapped_column(Text, default="")
    folder: Mapped[str] = mapped_column(String(100), default="")
    category_id: Mapped[int | None] = mapped_column(Integer, index=True)
    start_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    end_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # none / fixed_date / after_open / after_claim
    expiry_mode: Mapped[str] = mapped_column(String(16), default="none")
    expiry_date: Mapped[dt.date | None] = mapped_column(Date)
    expiry_minutes: Mapped[int | None] = mapped_column(Integer)
    pin_digest: Mapped[str] = mapped_column(String(64), default="")
    # Which validation methods staff may use: pin, widget, custom_code, qr.
    validation_methods: Mapped[str] = mapped_column(String(100), default="pin,widget,custom_code,qr")
    validations_per_session: Mapped[int] = mapped_column(Integer, default=1)
    max_validations: Mapped[int | None] = mapped_column(Integer)
    validations_count: Mapped[int] = mapped_column(Integer, default=0)
    opens_count: Mapped[int] = mapped_column(Integer, default=0)
    claims_count: Mapped[int] = mapped_column(Integer, default=0)
    # Custom validation codes handed out to sessions so far (imported list or generated).
    custom_codes_issued: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The imported list's cursor: its codes handed out or skipped so far (the next is at position + 1).
    # Apart from the count above, which a new list (or generated codes before it) must not move.
    custom_codes_position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    require_claim: Mapped[bool] = mapped_column(Boolean, default=False)
    claim_form: Mapped[dict[str, Any]] = mapped_column(default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class CampaignCustomCode(Base):
    """One code of a campaign's imported custom validation code list; position 1 is handed out
    first. Kept out of the campaign row: a list can hold tens of thousands of codes, and every
    validation and consumer page loads the campaign (the list is read one code at a time)."""

    __tablename__ = "campaign_custom_codes"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
