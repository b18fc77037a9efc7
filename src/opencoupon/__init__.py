"""OpenCoupon: digital coupons, loyalty cards and coupon directories with a Coupontools-compatible API."""

__version__ = "0.1.0"
