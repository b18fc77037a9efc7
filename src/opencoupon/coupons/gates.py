"""Access gates on consumer pages. Another capability (directories with paid access) registers a
gate; the coupon pages ask every gate before opening or showing a session, the loyalty card pages
before joining or showing a card.

A gate returns None to let the consumer in, or a Response (a redirect or a page saying why)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from opencoupon.models import Campaign, LoyaltyCard

Gate = Callable[[Session, Request, Campaign | LoyaltyCard], Response | None]

_gates: list[Gate] = []


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
