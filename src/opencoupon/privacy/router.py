"""Privacy calls (v4 REST): one person's data, exported or erased, within the caller's tenancy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from opencoupon.kit.endpoint import ApiContext, v4_endpoint
from opencoupon.privacy import service
from opencoupon.privacy.schemas import PersonRef

router = APIRouter(tags=["Privacy"])


# POST too, with the same parameters in the body: the email then stays out of addresses and logs.
@v4_endpoint(router, "GET", "/v4/privacy/export", PersonRef, summary="Export a person's data", read_only=True)
@v4_endpoint(
    router, "POST", "/v4/privacy/export", PersonRef, summary="Export a person's data (POST)", read_only=True
)
def export(ctx: ApiContext, req: PersonRef) -> dict[str, Any]:
    """Everything held about the person with this `email` (any letter case; and `phone`, if
    given) in this account and, for a master, its subaccounts: coupon sessions with their claim
    data and validations, loyalty card holders with their ledger, directory users (never the
    password), email/SMS sends, push subscriptions, and the IDs of events about them. GET takes
    the parameters in the query string, POST in the body (JSON or form)."""
    return service.export(ctx, service.person_of(req))


def _kept_answers(ctx: ApiContext, req: PersonRef) -> service.KeptAnswers:
    return service.kept_answers(ctx, service.person_of(req))


@v4_endpoint(
    router, "POST", "/v4/privacy/erase", PersonRef, summary="Erase a person's data", prefetch=_kept_answers
)
def erase(ctx: ApiContext, req: PersonRef) -> dict[str, Any]:
    """Blanks the person's names, email, phone, birthday, address and custom fields everywhere
    `export` finds them (and in stored event data, webhook bodies and answers kept for
    Idempotency-Key retries), in one transaction; sessions, validations, balances, the ledger
    and statistics stay. Answers how many records of each kind changed: erasing again answers
    zeros, as does an email nobody has."""
    return {"erased": service.erase(ctx, service.person_of(req), ctx.prefetched)}
