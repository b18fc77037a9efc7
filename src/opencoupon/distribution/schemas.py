from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from opencoupon.kit.params import INT32_MAX, Str, V3Request


class SendEmail(V3Request):
    campaign: Str
    email: Str
    subject: Str | None = None
    firstname: Str | None = None
    lastname: Str | None = None
    check_unique: bool = False
    couponsession: Str | None = None


class SendSms(V3Request):
    campaign: Str
    phone: Str
    # The text; `{link}` marks where the coupon link goes (appended when absent).
    message: Str | None = Field(default=None, validation_alias=AliasChoices("message", "text", "body"))
    sender: Str | None = None
    firstname: Str | None = None
    lastname: Str | None = None
    check_unique: bool = False
    couponsession: Str | None = None


class EmailIntegrationIn(V3Request):
    host: Str
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["none", "starttls", "tls"] = "starttls"
    username: Str | None = None
    # Write-only; omit to keep the stored one.
    password: Str | None = None
    sender_email: Str
    sender_name: Str | None = None


class SmsIntegrationIn(V3Request):
    provider: Literal["twilio"] = "twilio"
    base_url: Str | None = None
    account_sid: Str
    # Write-only; omit to keep the stored one.
    auth_token: Str | None = None
    sender: Str | None = None


class SendsQuery(V3Request):
    couponsession: Str | None = None
    campaign: Str | None = None
    channel: Literal["email", "sms"] | None = None
    status: Literal["queued", "sending", "retrying", "sent", "failed"] | None = None
    page: int = Field(default=1, ge=1, le=INT32_MAX)
