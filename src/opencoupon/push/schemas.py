from __future__ import annotations

from opencoupon.kit.params import Str, V3Request


class CouponPushSingle(V3Request):
    campaign: Str
    couponsession: Str
    message: Str


class CouponPushAll(V3Request):
    campaign: Str
    message: Str


class LoyaltyPushSingle(V3Request):
    loyaltycard: Str
    user: Str
    message: Str


class LoyaltyPushAll(V3Request):
    loyaltycard: Str
    message: Str
