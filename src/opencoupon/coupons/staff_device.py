"""The staff device cookie: a till (or a staff phone) that typed a campaign's right PIN on the
staff page or on the QR scan page (or a loyalty card's on the card's staff page) gets a signed
cookie saying so, and keeps typing PINs while a search from other addresses holds the campaign's
(card's) backstop on wrong PINs (opencoupon.kit.lockout, `GuessLimit(proven=True)`): the shop's
own validations go on during an attack. The cookie still needs the right PIN for every
validation, and its address's own limit applies.

The value is "<campaign id>.<expiry, Unix seconds>.<HMAC>", the HMAC under a key of the server
keyring over the campaign, the expiry and the campaign's PIN digest: a forged or expired cookie,
another campaign's, or one given before the PIN was changed, is no cookie. It is HttpOnly, sent
only to the campaign's pages (`Path=/p/<code>`; a loyalty card's: `Path=/l/<code>`, signed under
another key, so a campaign's cookie names no card of the same id), and renewed (for `MAX_AGE` more)
by each right PIN. The PIN on the consumer's phone (or on the holder's card page) gives none: that
device is the consumer's."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from opencoupon import web
from opencoupon.kit.crypto import constant_time_equals
from opencoupon.models import Campaign, LoyaltyCard
from opencoupon.runtime import Runtime

COOKIE = "oc_staff"
MAX_AGE = dt.timedelta(days=30)
_VALUE = re.compile(r"^([0-9]{1,18})\.([0-9]{1,12})\.([0-9a-f]{64})$")

# What a staff PIN guards: a coupon campaign or a loyalty card.
Guarded = Campaign | LoyaltyCard


@dataclass(frozen=True)
class _Pass:
    path: str
    value: str


def _epoch(moment: dt.datetime) -> int:
    """Unix seconds of a naive UTC datetime (the service's clock)."""
    return int(moment.replace(tzinfo=dt.UTC).timestamp())


def _path(guarded: Guarded) -> str:
    return f"/l/{guarded.code}" if isinstance(guarded, LoyaltyCard) else f"/p/{guarded.code}"


def _signature(runtime: Runtime, guarded: Guarded, expires: int) -> str:
    purpose = "staff-device-loyalty" if isinstance(guarded, LoyaltyCard) else "staff-device"
    key = runtime.keyring.derive_key(purpose)
    message = f"{guarded.id}.{expires}.{guarded.pin_digest or ''}"
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def recognised(request: Request, runtime: Runtime, campaign: Guarded, now: dt.datetime) -> bool:
    """Whether the request carries this campaign's (or card's) genuine, unexpired staff device
    cookie."""
    found = _VALUE.match(request.cookies.get(COOKIE, ""))
    if found is None or not campaign.pin_digest or int(found.group(1)) != campaign.id:
        return False
    expires = int(found.group(2))
    if expires <= _epoch(now):
        return False
    return constant_time_equals(found.group(3), _signature(runtime, campaign, expires))


def grant(request: Request, runtime: Runtime, campaign: Guarded, now: dt.datetime) -> None:
    """The right PIN was typed on this device: give it the cookie (or renew it) with the answer,
    whatever answer the page then makes (`attach`)."""
    expires = _epoch(now + MAX_AGE)
    value = f"{campaign.id}.{expires}.{_signature(runtime, campaign, expires)}"
    request.state.staff_device = _Pass(_path(campaign), value)


def attach(response: Response, request: Request) -> None:
    """Set the cookie `grant` gave during this request, if any."""
    given = getattr(request.state, "staff_device", None)
    if isinstance(given, _Pass):
        response.set_cookie(
            COOKIE,
            given.value,
            max_age=int(MAX_AGE.total_seconds()),
            path=given.path,
            httponly=True,
            samesite="lax",
            secure=web.is_secure(request),
        )
