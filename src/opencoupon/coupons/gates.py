"""Access gates on consumer pages. Another capability (directories with paid access) registers a
gate; the coupon pages ask every gate before opening or showing a session, the loyalty card pages
before joining or showing a card.

A gate returns None to let the consumer in, or a Response (a redirect or a page saying why).

The gates ask about the visitor. The counter pages (the staff page, the QR scan page, the PIN on
the phone) validate a session whoever holds the device, so they ask the owner checks about the
session's owner too, and so does the claim form (another member given the link passes the gate):
a check returns None to let the validation or claim go on, or the refusal's text."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from opencoupon.models import Campaign, CouponSession, LoyaltyCard

Gate = Callable[[Session, Request, Campaign | LoyaltyCard], Response | None]
# (session, campaign, coupon session, what is asked: "validated" or "claimed") → refusal or None
OwnerCheck = Callable[[Session, Campaign, CouponSession, str], str | None]

_gates: list[Gate] = []
_owner_checks: list[OwnerCheck] = []


def register(gate: Gate) -> Gate:
    if gate not in _gates:
        _gates.append(gate)
    return gate


def check(session: Session, request: Request, item: Campaign | LoyaltyCard) -> Response | None:
    for gate in _gates:
        answer = gate(session, request, item)
        if answer is not None:
            return answer
    return None


def register_owner_check(check: OwnerCheck) -> OwnerCheck:
    if check not in _owner_checks:
        _owner_checks.append(check)
    return check


def owner_refusal(
    session: Session, campaign: Campaign, row: CouponSession, action: str = "validated"
) -> str | None:
    """Why the session may not be validated (or claimed) now (its owner lost access), or None."""
    for check in _owner_checks:
        refusal = check(session, campaign, row, action)
        if refusal is not None:
            return refusal
    return None
