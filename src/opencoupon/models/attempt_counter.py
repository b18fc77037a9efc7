from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from opencoupon.db.base import Base


class AttemptCounter(Base):
    """Attempts (wrong PINs, sign-ins) counted under one key in one window, shared by every API
    process through the database (opencoupon.kit.lockout).

    `key` is "<purpose>:<keyed digest>": the purpose in clear, the campaign, client address or
    email only as the server keyring's digest. A window starts at the first attempt under the key
    and ends at `expires_at`; the worker's housekeeping deletes rows whose window is over."""

    __tablename__ = "attempt_counters"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
