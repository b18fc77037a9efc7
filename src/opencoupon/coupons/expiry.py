"""When a coupon session stops being usable, evaluated in the owning account's time zone.

Modes: `fixed_date` (valid through the end of that local day), `after_open` (a window that starts
when the session is first opened; a session never opened does not expire by this rule),
`after_claim` (a window that starts at the claim; unclaimed sessions do not expire by this rule).
A per-session `expires_at` (single-use links) also applies; the earliest limit wins.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opencoupon.models import Campaign, CouponSession

UTC = ZoneInfo("UTC")


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def end_of_local_day(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The first UTC instant after `day` ends in `tz` (naive UTC)."""
    next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return next_midnight.astimezone(dt.UTC).replace(tzinfo=None)


def local_to_utc(value: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    return value.replace(tzinfo=tz).astimezone(dt.UTC).replace(tzinfo=None)


def utc_to_local(value: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC).astimezone(tz).replace(tzinfo=None)


def last_valid_moment(limit: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The last local moment a session with this limit (the first UTC instant it is expired) still
    works: a coupon valid until 31 March ends at 31 March 23:59:59, not 1 April 00:00."""
    return utc_to_local(limit - dt.timedelta(microseconds=1), tz)


def session_expiry(campaign: Campaign, row: CouponSession, tz: ZoneInfo) -> dt.datetime | None:
    limits: list[dt.datetime] = []
    if row.expires_at is not None:
        limits.append(row.expires_at)
    minutes = campaign.expiry_minutes
    if campaign.expiry_mode == "fixed_date" and campaign.expiry_date is not None:
        limits.append(end_of_local_day(campaign.expiry_date, tz))
    elif campaign.expiry_mode == "after_open" and minutes and row.opened_at is not None:
        # A session opened on the web is opened when it is made; a single-use link or a sent
        # coupon only when its page is first visited: until then its window has not started.
        # Nor before the campaign starts (a link sent ahead and looked at early).
        start = max(row.opened_at, campaign.start_at) if campaign.start_at else row.opened_at
        limits.append(start + dt.timedelta(minutes=minutes))
    elif campaign.expiry_mode == "after_claim" and minutes and row.claimed_at is not None:
        limits.append(row.claimed_at + dt.timedelta(minutes=minutes))
    return min(limits) if limits else None


def is_expired(campaign: Campaign, row: CouponSession, tz: ZoneInfo, now: dt.datetime) -> bool:
    limit = session_expiry(campaign, row, tz)
    return limit is not None and now >= limit
