from __future__ import annotations

from opencoupon.kit.params import OptionalInt, Str, StrList, V3Request


class EndpointCreate(V3Request):
    url: Str
    events: StrList
    description: Str | None = None
    enabled: bool | None = None
    # Messages per second at most (1..10000); absent or empty: no limit.
    rate_limit: OptionalInt = None
    # A master account may register an endpoint for one of its subaccounts.
    subaccount: Str | None = None


class EndpointUpdate(V3Request):
    url: Str | None = None
    events: StrList | None = None
    description: Str | None = None
    enabled: bool | None = None
    # Given empty (""): the limit is removed; absent (JSON null too, as everywhere): unchanged.
    rate_limit: OptionalInt = None


class Rotate(V3Request):
    # How long the previous secret keeps signing alongside the new one.
    grace_hours: int | None = None


class DeliveryQuery(V3Request):
    event: Str | None = None
    limit: int | None = None
    before: Str | None = None


class Replay(V3Request):
    event: Str | None = None
    since: Str | None = None


class Verification(V3Request):
    webhook: Str
    session: Str | None = None
