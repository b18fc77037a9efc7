"""Every table, imported in one place so Alembic and the app see the whole schema.

Each capability adds its modules here (one module per table family)."""

from opencoupon.models.account import Account, ApiSecret, OneTimeToken
from opencoupon.models.campaign import Campaign
from opencoupon.models.coupon_session import CouponSession, DailyStat, Validation
from opencoupon.models.distribution import DistributionSend, EmailIntegration, SmsIntegration
from opencoupon.models.event import Event
from opencoupon.models.idempotency import IdempotencyRecord
from opencoupon.models.job import Job

__all__ = [
    "Account",
    "ApiSecret",
    "Campaign",
    "CouponSession",
    "DailyStat",
    "DistributionSend",
    "EmailIntegration",
    "Event",
    "IdempotencyRecord",
    "Job",
    "OneTimeToken",
    "SmsIntegration",
    "Validation",
]
