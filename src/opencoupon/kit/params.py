"""Request models for v3 calls, and the mapping of validation failures to Coupontools codes."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic_core import PydanticCustomError

from opencoupon.errors import ApiError, status_line
from opencoupon.kit.body import load_json, unstorable_text
from opencoupon.kit.crypto import hash_password, token


def _list_item(value: Any) -> bool:
    """Only texts and numbers are list items: null, true, [..] or {..} would otherwise be kept as
    the words "None", "True" or Python's rendering of them."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = load_json(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                if not all(_list_item(v) for v in parsed):
                    raise ValueError("a list item is not a text or a number")
                items = [str(v) for v in parsed]
                # Decoded after the request's character check: the same check again.
                if any(unstorable_text(item) for item in items):
                    raise PydanticCustomError("invalid_character", "Invalid character.")
                return items
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, list):
        if not all(_list_item(item) for item in value):
            raise ValueError("a list item is not a text or a number")
        out: list[str] = []
        for item in value:
            out.extend(_split_list(str(item)) if isinstance(item, str) and "," in item else [str(item)])
        return out
    return value


def _one_value(value: Any) -> Any:
    # A repeated form key for a single-valued parameter: the last one wins, as in PHP.
    if isinstance(value, list) and value and all(isinstance(v, str | int | float) for v in value):
        return value[-1]
    return value


def _blank_is_none(value: Any) -> Any:
    # Forms send "" for a number left empty: not given, like a missing key.
    value = _one_value(value)
    return None if isinstance(value, str) and not value.strip() else value


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def _whole_number(value: Any) -> Any:
    """A number as a person writes one: "12", "-3", 12 (not "1_0", "2.0", "²" or true, which
    int() and pydantic's lax mode would take as 10, 2, an error or 1)."""
    value = _blank_is_none(value)
    if isinstance(value, bool) or (isinstance(value, str) and not _WHOLE_NUMBER.fullmatch(value.strip())):
        raise ValueError("not a whole number")
    return value


StrList = Annotated[list[str], BeforeValidator(_split_list)]
Str = Annotated[str, BeforeValidator(_one_value)]
# The range of a database INTEGER column: a larger number (page=99999999999999999999) is refused
# here with code 300 instead of overflowing the driver in the query (a 500).
INT32_MAX = 2**31 - 1
OptionalInt = Annotated[
    Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)] | None, BeforeValidator(_whole_number)
]


def _optional_choice(annotation: Any) -> bool:
    """`Literal[...] | None` (possibly Annotated): `sorting=` from a form is not given."""
    args = get_args(annotation)
    if type(None) not in args:
        return False
    for arg in args:
        while get_origin(arg) is Annotated:
            arg = get_args(arg)[0]
        if get_origin(arg) is Literal:
            return True
    return False


class V3Request(BaseModel):
    """Base of every request model: unknown parameters are ignored, strings stripped."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)

    # The parameter names of the model's booleans and optional choices, which a blank value
    # leaves unset (see `validate`).
    FLAG_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.FLAG_KEYS = tuple(
            field.alias or name
            for name, field in cls.model_fields.items()
            if bool in (field.annotation, *get_args(field.annotation)) or _optional_choice(field.annotation)
        )

    def prepare(self) -> None:
        """Slow work that needs no database, done once the request is valid and before the call's
        write transaction (kit.endpoint): on SQLite that transaction holds every writer. Runs on
        a worker thread, except for `quick` calls, whose models must not do slow work here."""


class WithPassword(V3Request):
    """A request that sets a password: `prepare` hashes it (argon2, about 20 ms) before the write
    transaction, and handlers store `password_hash`; None when no password was given, unless
    `RANDOM_WHEN_MISSING` (then the hash of a random one: an account nobody can sign in to with a
    password)."""

    RANDOM_WHEN_MISSING: ClassVar[bool] = False

    password: Str | None = None
    _password_hash: str | None = PrivateAttr(default=None)

    def prepare(self) -> None:
        if self.password or self.RANDOM_WHEN_MISSING:
            self._password_hash = hash_password(self.password or token(18))

    @property
    def password_hash(self) -> str | None:
        return self._password_hash


class NoParams(V3Request):
    pass


M = TypeVar("M", bound=BaseModel)

_CHOICE_ERRORS = {"literal_error", "enum"}


def _loc_name(loc: tuple[int | str, ...]) -> str:
    return str(loc[0]) if loc else "body"


def validate(model: type[M], payload: dict[str, Any]) -> M:
    """Validate `payload` into `model`, raising ApiError with the vendor's codes. A boolean or an
    optional choice sent empty (`only_active=`, `sorting=` from a form) is not given, as an empty
    number is; sent repeatedly, the last one counts."""
    for key in getattr(model, "FLAG_KEYS", ()):
        if key in payload:
            payload[key] = _blank_is_none(payload[key])
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        codes: list[int] = []
        descriptions: list[str] = []
        for err in exc.errors():
            name = _loc_name(err["loc"])
            kind = err["type"]
            if kind == "missing":
                codes.append(200)
                descriptions.append(f"Missing parameter: {name}")
            elif kind in _CHOICE_ERRORS:
                codes.append(302)
                expected = err.get("ctx", {}).get("expected", "")
                descriptions.append(f"Value not allowed in parameter: {name}. Allowed values: {expected}")
            elif kind == "date_format":
                codes.append(303)
                descriptions.append(str(err["msg"]))
            elif kind == "invalid_character":
                codes.append(301)
                descriptions.append(f"Invalid character in parameter: {name}.")
            else:
                codes.append(300)
                descriptions.append(f"Invalid value in parameter: {name}.")
        raise ApiError(
            codes[0], descriptions[0], more=list(zip(codes[1:], descriptions[1:], strict=True))
        ) from None


def date_format_error(name: str, fmt: str) -> PydanticCustomError:
    return PydanticCustomError(
        "date_format",
        "Invalid format in parameter: {name}. Required format: {fmt}",
        {"name": name, "fmt": fmt},
    )


__all__ = ["NoParams", "Str", "StrList", "V3Request", "date_format_error", "status_line", "validate"]
