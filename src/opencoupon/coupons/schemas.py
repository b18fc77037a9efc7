"""Request models of the coupon calls (v3 and /v4/campaigns)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from opencoupon.kit.params import OptionalInt, Str, StrList, V3Request, _split_list

ExpiryMode = Literal["none", "fixed_date", "after_open", "after_claim"]
Method = Literal["pin", "widget", "custom_code", "qr"]
CodeMode = Literal["none", "imported", "generated"]
ClaimField = Literal["firstname", "lastname", "email", "phone", "birthday"]
MethodList = Annotated[list[Method], BeforeValidator(_split_list)]
ClaimFieldList = Annotated[list[ClaimField], BeforeValidator(_split_list)]


class CouponList(V3Request):
    only_active: bool | None = None
    folder: Str | None = None
    tags: StrList | None = None
    category: Str | None = None


class CampaignRef(V3Request):
    campaign: Str


class CouponInfo(CampaignRef):
    show_usage_stats: bool | None = None
    stats_days: int | None = None


class UsageData(CampaignRef):
    page: OptionalInt = None
    start_date: Str | None = None
    end_date: Str | None = None


class SessionRef(V3Request):
    couponsession: Str
    # Narrows a 6-character short code to one campaign (short codes repeat across campaigns).
    campaign: Str | None = None


class SessionFlags(V3Request):
    claim: bool | None = None
    # `validate` is a method name on pydantic models, so the field takes it as its wire alias.
    validate_: bool | None = Field(default=None, alias="validate")
    void: bool | None = None
    lock: bool | None = None
    validation_value: Str | None = None
    # coupon_sessions.value is 200 characters: longer answers 300 instead of a database error.
    value: Annotated[Str, Field(max_length=200)] | None = None


class SessionUpdate(SessionFlags):
    couponsession: Str
    campaign: Str | None = None


class SessionUpdateMany(SessionFlags):
    couponsessions: StrList
    campaign: Str | None = None


class SessionSearch(V3Request):
    search: Str


class CampaignSearch(CampaignRef):
    search: Str


class CampaignFields(V3Request):
    title: Str | None = None
    subtitle: Str | None = None
    description: Str | None = None
    terms: Str | None = None
    image: Str | None = None
    status: Literal["active", "inactive"] | None = None
    tags: StrList | None = None
    folder: Str | None = None
    category: Str | None = None
    start_date: Str | None = None
    end_date: Str | None = None
    expiry_mode: ExpiryMode | None = None
    expiry_date: Str | None = None
    expiry_minutes: int | None = None
    expiry_days: int | None = None
    pin: Str | None = None
    validation_methods: MethodList | None = None
    validations_per_session: int | None = None
    max_validations: int | None = None
    custom_code_mode: CodeMode | None = None
    custom_codes: StrList | None = None
    require_claim: bool | None = None
    claim_fields: ClaimFieldList | None = None
    required_fields: ClaimFieldList | None = None
    custom_fields: StrList | None = None
    consent_text: Str | None = None


class CampaignCreate(CampaignFields):
    name: Str


class CampaignUpdate(CampaignFields):
    name: Str | None = None


class CampaignListQuery(V3Request):
    only_active: bool | None = None
    folder: Str | None = None
