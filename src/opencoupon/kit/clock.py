"""One clock for the whole service, so tests can move time (OPENCOUPON_CLOCK_OFFSET is not used:
tests call `set_offset`)."""

from __future__ import annotations

import datetime as dt

_offset = dt.timedelta(0)


def utcnow() -> dt.datetime:
    """Naive UTC now (the database stores naive UTC everywhere)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None) + _offset


def set_offset(delta: dt.timedelta) -> None:
    global _offset
    _offset = delta


def get_offset() -> dt.timedelta:
    return _offset
