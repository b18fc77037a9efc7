"""Request models of the loyalty calls (v3 actions and the v4 REST management calls)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field

from opencoupon.kit.params import OptionalInt, Str, StrList, V3Request, WithPassword

CardType = Literal["stamp", "points", "membership"]


class CardList(V3Request):
    only_active: bool | None = None
    sorting: Literal["asc", "desc"] | None = None


class CardRef(V3Request):
    loyaltycard: Str


class UserList(V3Request):
    loyaltycard: Str
    page: OptionalInt = Field(default=None, ge=1)


class UserUpdate(V3Request):
    loyaltycard: Str
    user: Str
    # Signed amounts; the card's type decides what the amount counts (the vendor's one
    # "Amount of points/stamps" parameter), so `amount` is accepted as well.
    points: OptionalInt = None
    stamps: OptionalInt = None
    amount: OptionalInt = None
    voided: bool | None = None


class UserCreate(WithPassword):
    email: Str | None = None
    loyaltycard: Str | None = None
    phone: Str | None = None
    # The vendor's docs print both spellings.
    first_name: Str | None = Field(default=None, validation_alias=AliasChoices("first_name", "first_Name"))
    last_name: Str | None = Field(default=None, validation_alias=AliasChoices("last_name", "last_Name"))
    gender: Literal["male", "female", "unknown"] | None = None
    birthday: Str | None = None
    city: Str | None = None


class UserLink(V3Request):
    loyaltycard: Str
    user: Str


class UserSearch(V3Request):
    loyaltycard: Str
    search: Str


class RewardIn(V3Request):
    threshold: int = Field(ge=1, le=1_000_000)
    campaign: Str
    name: Str | None = None


class CardCreate(V3Request):
    name: str = Field(min_length=1, max_length=200)
    type: CardType
    description: Str | None = None
    active: bool | None = None
    # Stamps or points that complete a card; also accepted under the unit's own name.
    reward_goal: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        validation_alias=AliasChoices("reward_goal", "stamps_per_reward", "points_per_reward"),
    )
    rewards: list[RewardIn] | None = None
    pin: Str | None = None
    expire_days: int | None = Field(default=None, ge=0, le=36500)
    join_fields: StrList | None = None


class CardUpdate(CardCreate):
    name: str | None = Field(default=None, min_length=1, max_length=200)  # type: ignore[assignment]
    type: CardType | None = None  # type: ignore[assignment]


class CardCopy(V3Request):
    name: str | None = Field(default=None, min_length=1, max_length=50)


class StatsList(V3Request):
    # Objects in a JSON body, or JSON text in a query string.
    filter: dict[str, Any] | Str | None = None
    pagination: dict[str, Any] | Str | None = None
    include_voided: bool | None = None


class HolderIn(V3Request):
    first_name: Str | None = None
    last_name: Str | None = None
    email: Str | None = None
    phone: Str | None = None
    address: Str | None = None
    zip: Str | None = None
    city: Str | None = None
    custom_1: Str | None = None
    custom_2: Str | None = None
    custom_3: Str | None = None
    custom_4: Str | None = None
    custom_5: Str | None = None
    custom_6: Str | None = None
    custom_7: Str | None = None
    custom_8: Str | None = None


class HolderBulk(V3Request):
    users: list[HolderIn] = Field(min_length=1, max_length=1000)
