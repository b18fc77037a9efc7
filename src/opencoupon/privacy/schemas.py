from __future__ import annotations

from opencoupon.kit.params import Str, V3Request


class PersonRef(V3Request):
    # Required; checked in privacy.service.person_of so that "" answers 200 like a missing one.
    email: Str | None = None
    # Optional: records with this number (separators ignored) are the person's too.
    phone: Str | None = None
