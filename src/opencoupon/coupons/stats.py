"""Usage statistics kept up to date in the same transaction as each change, so reading them never
scans sessions: per-day rows in campaign_daily_stats (UTC days) plus the campaign's counters."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import event, func, inspect, select, update
from sqlalchemy.orm import Session

from opencoupon.coupons import hotpath
from opencoupon.db import raw
from opencoupon.models import Campaign, CouponSession, Validation


def bump_day(
    session: Session, campaign_id: int, day: dt.date, *, opens: int = 0, claims: int = 0, validations: int = 0
) -> None:
    """Add to one campaign-day row, creating it on first use (an upsert, safe under races)."""
    raw.execute(
        session,
        hotpath.BUMP_DAY,
        {
            "campaign_id": campaign_id,
            "day": day,
            "opens": opens,
            "claims": claims,
            "validations": validations,
        },
    )


def add_counters(session: Session, campaign_id: int, *, opens: int = 0, claims: int = 0) -> None:
    values = {}
    if opens:
        values["opens_count"] = Campaign.opens_count + opens
    if claims:
        values["claims_count"] = Campaign.claims_count + claims
    if values:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


_COUNTED_KEY = "coupons_removals_counted"


def on_session_removed(session: Session, row: CouponSession) -> None:
    """Take a removed session out of the statistics (call in the transaction that sets removed_at).

    The campaign's validation-limit counter is left alone: a validation that happened still used
    up one of the campaign's allowed validations. Setting `removed_at` through the ORM calls this
    by itself (see `_count_removals`); calling it again for the same session does nothing."""
    counted: set[int] = session.info.setdefault(_COUNTED_KEY, set())
    if row.id in counted:
        return
    counted.add(row.id)
    add_counters(
        session, row.campaign_id, opens=-1 if row.opened_at else 0, claims=-1 if row.claimed_at else 0
    )
    if row.opened_at is not None:
        bump_day(session, row.campaign_id, row.opened_at.date(), opens=-1)
    if row.claimed_at is not None:
        bump_day(session, row.campaign_id, row.claimed_at.date(), claims=-1)
    days = session.execute(
        select(func.date(Validation.created_at), func.count())
        .where(Validation.session_id == row.id)
        .group_by(func.date(Validation.created_at))
    ).all()
    for day, count in days:
        day_value = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))
        bump_day(session, row.campaign_id, day_value, validations=-int(count))


def totals(session: Session, campaign_id: int) -> tuple[int, int, int]:
    """All-time opens, claims and validations: a sum over day rows, never over sessions."""
    row = session.execute(hotpath.STAT_TOTALS, {"campaign_id": campaign_id}).one()
    return int(row[0]), int(row[1]), int(row[2])


def per_day(session: Session, campaign_id: int, since: dt.date) -> list[tuple[dt.date, int, int, int]]:
    """(day, opens, claims, validations) from `since` on, oldest first: one row per day."""
    rows = session.execute(hotpath.STAT_DAYS, {"campaign_id": campaign_id, "since": since}).all()
    return [(day, opens, claims, validations) for day, opens, claims, validations in rows]


@event.listens_for(Session, "before_flush")
def _count_removals(session: Session, _context: Any, _instances: Any) -> None:
    """A session whose `removed_at` is set through the ORM leaves the statistics in the same flush,
    whichever capability removed it (single-use links are removed by another package)."""
    for obj in list(session.dirty):
        if not isinstance(obj, CouponSession):
            continue
        history = inspect(obj).attrs.removed_at.history
        was = history.deleted[0] if history.deleted else None
        if history.added and history.added[0] is not None and was is None:
            on_session_removed(session, obj)
