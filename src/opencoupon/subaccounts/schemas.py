from __future__ import annotations

from typing import Literal

from opencoupon.kit.params import Str, V3Request


class SubaccountRef(V3Request):
    subaccount: Str


class SubaccountCreate(V3Request):
    email: Str
    password: Str | None = None
    package: Str | None = None
    status: Literal["trial", "customer"] | None = None
    first_name: Str | None = None
    last_name: Str | None = None
    company_name: Str | None = None
    username: Str | None = None
    country: Str | None = None
    language: Str | None = None
    timezone: Str | None = None
    expiry_date: Str | None = None
    max_campaigns: int | None = None
    webhook_endpoint: Str | None = None
    access_dashboard: bool | None = None
    access_directory: bool | None = None


class SubaccountUpdate(SubaccountCreate):
    subaccount: Str
    email: Str | None = None  # type: ignore[assignment]
    block: bool | None = None


class SubaccountSso(V3Request):
    subaccount: Str
    page: Literal["campaigns", "add_campaign", "update_campaign", "statistics", "distribution"] | None = None
    campaign: Str | None = None
