"""Request models of the coupon calls (v3 and /v4/campaigns)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from opencoupon.kit.params import OptionalInt, Str, StrList, V3Request, _blank_is_none, _split_list

ExpiryMode = Literal["none", "fixed_date", "after_open", "after_claim"]
Method = Literal["pin", "widget", "custom_code", "qr"]
CodeMode = Literal["none", "imported", "generated"]
ClaimField = Literal["firstname", "lastname", "email", "phone", "birthday"]
MethodList = Annotated[list[Method], BeforeValidator(_split_list)]
ClaimFieldList = Annotated[list[ClaimField], BeforeValidator(_split_list)]
# Required fields of the claim form: standard fields (ClaimField), `consent` (the consent box) and
# the campaign's own custom fields, so any name here; `required_fields_problem` checks them
# against the claim form as it is saved.
RequiredFieldList = Annotated[list[str], BeforeValidator(_split_list)]
STANDARD_CLAIM_FIELDS: tuple[str, ...] = ("firstname", "lastname", "email", "phone", "birthday")
CONSENT = "consent"


def required_fields_problem(claim_form: dict[str, Any]) -> str | None:
    """What is wrong with the required fields of a campaign's claim form as it would be saved
    (`Campaign.claim_form`: `fields`, `required`, `custom_fields`, `consent_text`), or None. Each
    required field must be on the form: a standard field in `fields`, `consent` with a consent
    text, or one of `custom_fields`. Answered with code 300 on `required_fields`."""
    fields = list(claim_form.get("fields", []))
    custom = list(claim_form.get("custom_fields", []))
    required = list(claim_form.get("required", []))
    not_asked = [name for name in required if name in STANDARD_CLAIM_FIELDS and name not in fields]
    if not_asked:
        names = ", ".join(not_asked)
        return f"{names} cannot be required without being asked: add it to claim_fields too."
    if CONSENT in required and CONSENT not in custom and not claim_form.get("consent_text"):
        return "consent cannot be required without a consent box: set consent_text too."
    unknown = [n for n in required if n not in STANDARD_CLAIM_FIELDS and n != CONSENT and n not in custom]
    if unknown:
        names = ", ".join(unknown)
        return (
            f"{names} is not a field of the claim form: require firstname, lastname, email, phone, "
            "birthday, consent, or one of the campaign's custom_fields."
        )
    return None


class CouponList(V3Request):
    only_active: bool | None = None
    folder: Str | None = None
    tags: StrList | None = None
    category: Str | None = None


class CampaignRef(V3Request):
    campaign: Str


class CouponInfo(CampaignRef):
    show_usage_stats: bool | None = None
    stats_days: OptionalInt = None


class UsageData(CampaignRef):
    page: OptionalInt = None
    # Keyset paging: sessions after this sequenceid. `page` offsets shift when a session is
    # removed between two fetches; a sequenceid does not.
    after_sequenceid: OptionalInt = None
    start_date: Str | None = None
    end_date: Str | None = None


class SessionRef(V3Request):
    couponsession: Str
    # Narrows a 6-character short code to one campaign (short codes repeat across campaigns).
    campaign: Str | None = None


# Names an integration may use for the flags, the vendor's own being unknown (reference gaps
# §1.10): taken as the flag when the flag itself is not sent.
FLAG_ALIASES = {"claimed": "claim", "validated": "validate", "voided": "void", "locked": "lock"}


class SessionFlags(V3Request):
    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(alias in data for alias in FLAG_ALIASES):
            data = dict(data)
            for alias, name in FLAG_ALIASES.items():
                if alias in data and name not in data:
                    data[name] = _blank_is_none(data.pop(alias))
        return data

    def has_action(self) -> bool:
        """Whether the call asks for any change (an update that names none is refused: its
        parameters were probably misspelt, and answering OK would hide that nothing changed)."""
        changes = (self.void, self.lock, self.validation_value, self.value)
        return bool(self.claim or self.validate_) or any(change is not None for change in changes)

    claim: bool | None = None
    # `validate` is a method name on pydantic models, so the field takes it as its wire alias.
    validate_: bool | None = Field(default=None, alias="validate")
    void: bool | None = None
    lock: bool | None = None
    # PHP forms post every field: an empty (or blank) amount or value is not given, so it neither
    # counts as an action nor wipes the stored value.
    validation_value: Annotated[Str | None, BeforeValidator(_blank_is_none)] = None
    # coupon_sessions.value is 200 characters: longer answers 300 instead of a database error.
    value: Annotated[Annotated[Str, Field(max_length=200)] | None, BeforeValidator(_blank_is_none)] = None


class SessionUpdate(SessionFlags):
    couponsession: Str
    campaign: Str | None = None


class SessionUpdateMany(SessionFlags):
    couponsessions: StrList
    campaign: Str | None = None


class SessionSearch(V3Request):
    search: Str
    page: OptionalInt = None


class CampaignSearch(CampaignRef):
    search: Str
    page: OptionalInt = None


# As long as their columns (models/campaign.py): longer answers 300, not a database error.
Name = Annotated[Str, Field(max_length=200)]
Title = Annotated[Str, Field(max_length=300)]


class CampaignFields(V3Request):
    title: Title | None = None
    subtitle: Title | None = None
    description: Str | None = None
    terms: Str | None = None
    image: Str | None = None
    status: Literal["active", "inactive"] | None = None
    tags: StrList | None = None
    folder: Annotated[Str, Field(max_length=100)] | None = None
    category: Str | None = None
    start_date: Str | None = None
    end_date: Str | None = None
    expiry_mode: ExpiryMode | None = None
    expiry_date: Str | None = None
    # Sent empty: not given (a PATCH keeps the window), as every number.
    expiry_minutes: OptionalInt = None
    expiry_days: OptionalInt = None
    pin: Str | None = None
    validation_methods: MethodList | None = None
    validations_per_session: OptionalInt = None
    # "" (empty) removes the limit; JSON null means "not given", as for every parameter.
    max_validations: OptionalInt = None
    custom_code_mode: CodeMode | None = None
    custom_codes: StrList | None = None
    require_claim: bool | None = None
    claim_fields: ClaimFieldList | None = None
    required_fields: RequiredFieldList | None = None
    custom_fields: StrList | None = None
    consent_text: Str | None = None


class CampaignCreate(CampaignFields):
    name: Name


class CampaignUpdate(CampaignFields):
    name: Name | None = None


class CampaignListQuery(V3Request):
    only_active: bool | None = None
    folder: Str | None = None
    tags: StrList | None = None
    category: Str | None = None
