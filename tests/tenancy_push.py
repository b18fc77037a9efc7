"""Tenancy matrix: push notifications (coupon and loyalty) and their fan-outs."""

from __future__ import annotations

import matrix_factories as f
from tenancy import TenancyCase

CASES = [
    TenancyCase(
        "coupon/pushnotification/all",
        "/v3/coupon/pushnotification/all",
        "campaign",
        f.campaign,
        extra={"message": "m"},
    ),
    TenancyCase(
        "coupon/pushnotification/single campaign",
        "/v3/coupon/pushnotification/single",
        "campaign",
        f.campaign_of_session,
        extra={"couponsession": "{session}", "message": "m"},
    ),
    TenancyCase(
        "coupon/pushnotification/single session",
        "/v3/coupon/pushnotification/single",
        "couponsession",
        f.session,
        extra={"campaign": "{campaign}", "message": "m"},
        missing_id=f.MISSING_SESSION,
    ),
    TenancyCase(
        "coupon/pushnotification/single short",
        "/v3/coupon/pushnotification/single",
        "couponsession",
        f.short_session,
        extra={"campaign": "{campaign}", "message": "m"},
        missing_id=f.MISSING_SHORT,
    ),
    TenancyCase(
        "loyalty/pushnotification/all",
        "/v3/loyalty/pushnotification/all",
        "loyaltycard",
        f.card,
        extra={"message": "m"},
    ),
    TenancyCase(
        "loyalty/pushnotification/single card",
        "/v3/loyalty/pushnotification/single",
        "loyaltycard",
        f.card_of_holder,
        extra={"user": "{user}", "message": "m"},
    ),
    TenancyCase(
        "loyalty/pushnotification/single user",
        "/v3/loyalty/pushnotification/single",
        "user",
        f.holder,
        extra={"loyaltycard": "{card}", "message": "m"},
    ),
    TenancyCase("push fan-out (v4)", "/v4/push/fanouts/{id}", None, f.fanout, method="GET"),
]
