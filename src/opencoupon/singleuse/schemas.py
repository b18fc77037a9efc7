from __future__ import annotations

from typing import Literal

from opencoupon.kit.params import Str, V3Request


class SingleUseCreate(V3Request):
    campaign: Str
    firstname: Str | None = None
    lastname: Str | None = None
    email: Str | None = None
    phone: Str | None = None
    customid: Str | None = None
    customvalcode: Str | None = None
    autovalcode: bool | None = None
    duplicate_check: bool | None = None
    expiry_date: Str | None = None


class MultipleSingleUseCreate(V3Request):
    campaign: Str
    # Strings, checked by the service, so a bad value gets a message that says what is allowed.
    amount: Str | None = None
    status: Literal["normal", "voided", "activated"] | None = None
    automated_codes: bool | None = None
    code_prefix: Str | None = None
    code_length: Str | None = None
    code_type: Literal["numeric", "alphanumeric"] | None = None


class SingleUseRemove(V3Request):
    single_use_code: Str
