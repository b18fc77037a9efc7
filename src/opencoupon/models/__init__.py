"""Every table, imported in one place so Alembic and the app see the whole schema.

Each capability adds its modules here (one module per table family)."""

from opencoupon.models.account import Account, ApiSecret, OneTimeToken
from opencoupon.models.attempt_counter import AttemptCounter
from opencoupon.models.campaign import Campaign, CampaignCustomCode
from opencoupon.models.coupon_session import CouponSession, DailyStat, Validation
from opencoupon.models.directory import Category, Directory, DirectoryItem, DirectoryUser
from opencoupon.models.distribution import DistributionSend, EmailIntegration, SmsIntegration
from opencoupon.models.event import Event
from opencoupon.models.idempotency import IdempotencyRecord
from opencoupon.models.job import Job
from opencoupon.models.loyalty import (
    LoyaltyCard,
    LoyaltyHolder,
    LoyaltyLedgerEntry,
    LoyaltyReward,
    LoyaltyRewardGrant,
)
from opencoupon.models.push import PushFanout, PushRetry, PushSubscription, VapidKey
from opencoupon.models.singleuse_batch import SingleUseBatch
from opencoupon.models.webhook import WebhookAttempt, WebhookEndpoint, WebhookMessage, WebhookPayload

__all__ = [
    "Account",
    "ApiSecret",
    "AttemptCounter",
    "Campaign",
    "CampaignCustomCode",
    "Category",
    "CouponSession",
    "DailyStat",
    "Directory",
    "DirectoryItem",
    "DirectoryUser",
    "DistributionSend",
    "EmailIntegration",
    "Event",
    "IdempotencyRecord",
    "Job",
    "LoyaltyCard",
    "LoyaltyHolder",
    "LoyaltyLedgerEntry",
    "LoyaltyReward",
    "LoyaltyRewardGrant",
    "OneTimeToken",
    "PushFanout",
    "PushRetry",
    "PushSubscription",
    "SingleUseBatch",
    "SmsIntegration",
    "Validation",
    "VapidKey",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookMessage",
    "WebhookPayload",
]
