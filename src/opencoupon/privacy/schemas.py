from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

from opencoupon.kit.params import V3Request


def _one_string(value: Any) -> Any:
    """A person is named by one email and one phone: a list (a repeated key, `email[]=…`), a
    number, a boolean or an object is refused (300), never reduced to one of its values."""
    if not isinstance(value, str):
        raise ValueError("a single text value")
    return value


OneStr = Annotated[str, BeforeValidator(_one_string)]


class PersonRef(V3Request):
    # Required; checked in privacy.service.person_of so that "" answers 200 like a missing one.
    email: OneStr | None = None
    # Optional: records with this number (separators ignored) are the person's too.
    phone: OneStr | None = None
