"""Directories (coupon books): categories, the items a directory holds, and its registered users."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opencoupon.db.base import Base


class Category(Base):
    """A campaign category, at most three levels deep (level 1 has no parent). Public ID `cat_<id>`."""

    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), index=True)
    level: Mapped[int] = mapped_column(Integer, default=1)
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class Directory(Base):
    """A coupon book / marketplace. Public ID `dir_<id>`; consumer URL `/d/<code>`.

    Soft-deleted (deleted_at) so a `dir_` ID, which payment providers keep, is never reused."""

    __tablename__ = "directories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # public / login / payment
    access: Mapped[str] = mapped_column(String(16), default="public")
    payment_url: Mapped[str] = mapped_column(Text, default="")
    # Default membership length in days for paid access granted without an end (v4 access call).
    membership_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class DirectoryItem(Base):
    """A campaign or loyalty card in a directory. `item_id` has no foreign key: it points at
    campaigns or loyalty cards depending on `kind`."""

    __tablename__ = "directory_items"
    __table_args__ = (
        UniqueConstraint("directory_id", "kind", "item_id"),
        Index("ix_directory_items_kind_item", "kind", "item_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    directory_id: Mapped[int] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    # campaign / loyalty_card
    kind: Mapped[str] = mapped_column(String(16))
    item_id: Mapped[int] = mapped_column(Integer)
    category_id: Mapped[int | None] = mapped_column(
        ForeignKey("categories.id", ondelete="SET NULL"), index=True
    )
    featured: Mapped[bool] = mapped_column(Boolean, default=False)
    # active (shown in the directory) / inactive (hidden)
    status: Mapped[str] = mapped_column(String(16), default="active")
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class DirectoryUser(Base):
    """A consumer registered in one directory. Public ID `reg_<id>`."""

    __tablename__ = "directory_users"
    __table_args__ = (
        UniqueConstraint("directory_id", "email"),
        Index("ix_directory_users_directory_created", "directory_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    directory_id: Mapped[int] = mapped_column(ForeignKey("directories.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    birth_date: Mapped[dt.date | None] = mapped_column(Date)
    address: Mapped[str] = mapped_column(String(300), default="")
    zip: Mapped[str] = mapped_column(String(20), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    custom_1: Mapped[str] = mapped_column(String(300), default="")
    custom_2: Mapped[str] = mapped_column(String(300), default="")
    custom_3: Mapped[str] = mapped_column(String(300), default="")
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    # pending / completed / cancelled (only enforced in payment directories)
    payment_status: Mapped[str] = mapped_column(String(16), default="pending")
    # Paid access ends at this moment (naive UTC); NULL = no end.
    payment_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    payment_updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
