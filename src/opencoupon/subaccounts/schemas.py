from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidatorFunctionWrapHandler, WrapValidator

from opencoupon.kit.params import OptionalInt, Str, V3Request, WithPassword

# Column widths: longer values answer 300 instead of failing in the database.
Name = Annotated[Str, Field(max_length=100)]
Company = Annotated[Str, Field(max_length=200)]
Short = Annotated[Str, Field(max_length=40)]
# Every way a password is set (create, update, the dashboard's reset page) takes these lengths.
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def _as_typed(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # Request strings are stripped (V3Request); a password is kept as typed, spaces included, as
    # sign-in and the reset page take it: a password set with spaces must sign in with them.
    checked = handler(value)
    return value if isinstance(value, str) and value.strip() == checked else checked


# The length is checked on the password as typed (after _as_typed).
Password = Annotated[Str, WrapValidator(_as_typed), Field(max_length=MAX_PASSWORD_LENGTH)]

SsoPage = Literal["campaigns", "add_campaign", "update_campaign", "statistics", "distribution"]


class SubaccountRef(V3Request):
    subaccount: Str


class SubaccountCreate(WithPassword):
    email: Str
    password: Password | None = None  # hashed before the write transaction (WithPassword)
    package: Short | None = None
    status: Literal["trial", "customer"] | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    company_name: Company | None = None
    username: Name | None = None
    country: Str | None = None
    language: Annotated[Str, Field(max_length=8)] | None = None
    timezone: Annotated[Str, Field(max_length=64)] | None = None
    expiry_date: Str | None = None
    max_campaigns: OptionalInt = Field(default=None, ge=0, le=1_000_000)
    webhook_endpoint: Annotated[Str, Field(max_length=2048)] | None = None
    access_dashboard: bool | None = None
    access_directory: bool | None = None


class SubaccountUpdate(SubaccountCreate):
    subaccount: Str
    email: Str | None = None  # type: ignore[assignment]
    block: bool | None = None


class SubaccountSso(V3Request):
    subaccount: Str
    page: SsoPage | None = None
    campaign: Str | None = None


class AccountSso(V3Request):
    page: SsoPage | None = None
    campaign: Str | None = None
