"""Request models of the directory and category calls (v3 action calls and v4 REST calls)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from opencoupon.kit.body import holds_unstorable, load_json
from opencoupon.kit.params import OptionalInt, Str, StrList, V3Request, WithPassword


def _lower(value: Any) -> Any:
    # Payment providers send "Completed" as often as "completed"; the allowed list is still enforced.
    if isinstance(value, list) and value:
        value = value[-1]
    return value.strip().lower() if isinstance(value, str) else value


Access = Annotated[Literal["public", "login", "payment"], BeforeValidator(_lower)]
PaymentStatus = Annotated[Literal["pending", "completed", "cancelled"], BeforeValidator(_lower)]
ItemStatus = Annotated[Literal["active", "inactive"], BeforeValidator(_lower)]


class CampaignItemSpec(BaseModel):
    """One campaign in a directory: its ID and, optionally, its settings there."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)

    id: Str
    category: Str | None = None
    featured: bool | None = None
    status: ItemStatus | None = None


def _campaign_items(value: Any) -> Any:
    # A JSON list of IDs or of {"id", "category", "featured", "status"} objects, or (forms) a
    # comma-separated string / repeated keys of IDs.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = load_json(text)
            except ValueError:
                return value
            # Decoded after the request's character check: the same check again.
            if holds_unstorable(value):
                raise PydanticCustomError("invalid_character", "Invalid character.")
        else:
            return [{"id": part.strip()} for part in text.split(",") if part.strip()]
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            if isinstance(item, str | int):
                out.extend({"id": part.strip()} for part in str(item).split(",") if part.strip())
            else:
                out.append(item)
        return out
    return value


CampaignItems = Annotated[list[CampaignItemSpec], BeforeValidator(_campaign_items)]


# ---- v3 action calls -------------------------------------------------------------------------


class DirectoryRef(V3Request):
    directory: Str


class DirectoryUsersList(V3Request):
    directory: Str
    page: OptionalInt = None


class PaymentStatusUpdate(V3Request):
    """`/v3/directoryusers/update` exactly as the vendor's page: the field order is the order in
    which missing parameters are reported."""

    directory: Str
    user: Str
    status: PaymentStatus
    expiry_date: Str | None = None


class DirectoryCampaignCreate(V3Request):
    directory: Str
    template: Str
    name: Str
    category: Str | None = None


class DirectoryCampaignUpdate(V3Request):
    campaign: Str
    directory: Str | None = None
    status: ItemStatus | None = None
    description: Str | None = None
    category: Str | None = None
    featured: bool | None = None


# ---- v4 REST calls ---------------------------------------------------------------------------


class DirectoryCreate(V3Request):
    name: Str
    description: Str | None = None
    access: Access = "public"
    payment_url: Str | None = None
    membership_days: OptionalInt = None
    campaigns: CampaignItems | None = None
    loyalty_cards: StrList | None = None


class DirectoryPatch(V3Request):
    name: Str | None = None
    description: Str | None = None
    access: Access | None = None
    payment_url: Str | None = None
    membership_days: OptionalInt = None
    campaigns: CampaignItems | None = None
    loyalty_cards: StrList | None = None


class Page(V3Request):
    page: OptionalInt = None


# Texts of a registered user, at most the size of their column in directory_users: a longer one
# is refused (code 300 naming the field) before it reaches the database.
Text100 = Annotated[Str, Field(max_length=100)]
Text300 = Annotated[Str, Field(max_length=300)]
Phone = Annotated[Str, Field(max_length=40)]
Zip = Annotated[Str, Field(max_length=20)]


class DirectoryUserCreate(WithPassword):
    # No password: a random one (such users sign in through the SSO call).
    RANDOM_WHEN_MISSING = True

    email: Str  # over 254 characters: not a valid email (305)
    first_name: Text100 | None = None
    last_name: Text100 | None = None
    phone: Phone | None = None
    # yyyy-MM-dd, from 1900 to today (service.create_user_v4).
    birth_date: Str | None = None
    address: Text300 | None = None
    zip: Zip | None = None
    city: Text100 | None = None
    custom_1: Text300 | None = None
    custom_2: Text300 | None = None
    custom_3: Text300 | None = None


class DirectoryUserBlock(V3Request):
    block: bool


class AccessGrant(V3Request):
    expires_at: Str | None = None


class CategoryCreate(V3Request):
    name: Str
    parent: Str | None = None
    position: OptionalInt = None


class CategoryPatch(V3Request):
    name: Str | None = None
    # "" moves the category to the top level.
    parent: Str | None = None
    position: OptionalInt = None
