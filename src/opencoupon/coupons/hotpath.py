"""The statements every validation and session lookup runs, built once.

The session lookup and a validation's writes are plain SQL run on the driver (db/raw.py); the
statistics reads are SQLAlchemy statements built once with typed bind parameters. All work on
SQLite and PostgreSQL alike (both have RETURNING and ON CONFLICT ... DO UPDATE)."""

from __future__ import annotations

from sqlalchemy import Date, bindparam, func, select

from opencoupon.db.raw import RawStatement
from opencoupon.db.raw import columns as raw_columns
from opencoupon.models import Campaign, CouponSession, DailyStat

# A session and its campaign in one round trip, loaded with db.raw.load_one.
SESSION_BY_CODE = RawStatement(
    f"SELECT {raw_columns(CouponSession, 's')}, {raw_columns(Campaign, 'c')} "
    "FROM coupon_sessions s JOIN campaigns c ON c.id = s.campaign_id WHERE s.code = :code"
)

CAMPAIGN_BY_ID = select(Campaign).where(Campaign.id == bindparam("id"), Campaign.deleted_at.is_(None))

STAT_TOTALS = select(
    func.coalesce(func.sum(DailyStat.opens), 0),
    func.coalesce(func.sum(DailyStat.claims), 0),
    func.coalesce(func.sum(DailyStat.validations), 0),
).where(DailyStat.campaign_id == bindparam("campaign_id"))

STAT_DAYS = (
    select(DailyStat.day, DailyStat.opens, DailyStat.claims, DailyStat.validations)
    .where(
        DailyStat.campaign_id == bindparam("campaign_id"),
        DailyStat.day >= bindparam("since", type_=Date()),
        # A day whose only activity was undone (a removed session's open) had none.
        (DailyStat.opens + DailyStat.claims + DailyStat.validations) > 0,
    )
    .order_by(DailyStat.day)
)

# The writes of a validation run on the raw driver (db/raw.py).
VALIDATE_SESSION = RawStatement(
    "UPDATE coupon_sessions SET validation_count = validation_count + 1, validated_at = :now, "
    "updated_at = :now, validation_value = COALESCE(:money, validation_value), "
    "value = COALESCE(:value, value) "
    "WHERE id = :id AND validation_count < :allowed AND removed_at IS NULL "
    "AND link_status != 'voided' AND locked = :no "
    "RETURNING validation_count"
)

COUNT_CAMPAIGN_VALIDATION = RawStatement(
    "UPDATE campaigns SET validations_count = validations_count + 1 "
    "WHERE id = :id AND (max_validations IS NULL OR validations_count < max_validations)"
)

INSERT_VALIDATION = RawStatement(
    "INSERT INTO validations (account_id, campaign_id, session_id, ordinal, method, validation_value, "
    "created_at) VALUES (:account_id, :campaign_id, :session_id, :ordinal, :method, :money, :now)"
)

BUMP_DAY = RawStatement(
    "INSERT INTO campaign_daily_stats (campaign_id, day, opens, claims, validations) "
    "VALUES (:campaign_id, :day, :opens, :claims, :validations) "
    "ON CONFLICT (campaign_id, day) DO UPDATE SET "
    "opens = campaign_daily_stats.opens + excluded.opens, "
    "claims = campaign_daily_stats.claims + excluded.claims, "
    "validations = campaign_daily_stats.validations + excluded.validations"
)
