"""Single use calls: create one link, create many in one call, remove one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter

from opencoupon.errors import ApiError
from opencoupon.kit.dates import fmt
from opencoupon.kit.endpoint import ApiContext, v3_endpoint
from opencoupon.models import Campaign, CouponSession
from opencoupon.singleuse import bulkgate, service
from opencoupon.singleuse.schemas import MultipleSingleUseCreate, SingleUseCreate, SingleUseRemove

router = APIRouter(tags=["Single use"])


@v3_endpoint(router, ["/v3/singleuse/create"], SingleUseCreate, summary="Create a single use access URL")
def create_single_use(ctx: ApiContext, req: SingleUseCreate) -> dict[str, Any]:
    """A personal link to the campaign for one consumer, optionally pre-filled; with
    `duplicate_check`, the link already held by the same email, phone or customid comes back."""
    campaign = service.resolve_campaign(ctx.session, ctx.scope(Campaign.account_id), req.campaign)
    prefill = service.clean_prefill(req.firstname, req.lastname, req.email, req.phone, req.customid)
    custom_code = service.clean_custom_code(req.customvalcode, req.autovalcode)
    expires_at = service.parse_expiry(req.expiry_date, ctx.now)
    result = service.create_link(
        ctx.session,
        campaign,
        prefill,
        custom_code=custom_code,
        autovalcode=bool(req.autovalcode),
        duplicate_check=bool(req.duplicate_check),
        expires_at=expires_at,
        now=ctx.now,
        base_url=ctx.runtime.settings.public_base_url,
    )
    answer = service.link_answer(ctx.runtime.settings.public_base_url, campaign, result.link)
    answer["duplicate"] = "0" if result.created else "1"
    return answer


def _takes_turns(amount: Any) -> bool:
    """Whether a call asking for `amount` links waits its turn: over GATED_AMOUNT, or anything
    not plainly a small count (the service refuses what is no count at all)."""
    if amount is None or amount == "":
        return False  # the default, DEFAULT_AMOUNT
    text = str(amount).strip() if isinstance(amount, str | int) and not isinstance(amount, bool) else ""
    return not (text.isdigit() and len(text) <= 9 and int(text) <= bulkgate.GATED_AMOUNT)


@asynccontextmanager
async def _one_large_batch_at_a_time(payload: dict[str, Any]) -> AsyncIterator[None]:
    """A large call runs once the one before it has answered (singleuse/bulkgate.py): from its
    start to its encoded answer, so its memory is never held alongside another's."""
    if not _takes_turns(payload.get("amount")):
        yield
        return
    if not await bulkgate.BULK_CALLS.enter(bulkgate.WAIT_SECONDS):
        wait = bulkgate.RETRY_AFTER_SECONDS
        raise ApiError(
            429,
            f"Another large batch of single use links is being created; retry in {wait} seconds.",
            headers={"Retry-After": str(wait)},
        )
    try:
        yield
    finally:
        bulkgate.BULK_CALLS.leave()


@v3_endpoint(
    router,
    ["/v3/multiplesingleuse/create"],
    MultipleSingleUseCreate,
    summary="Create multiple single use access URLs",
    admission=_one_large_batch_at_a_time,
)
def create_multiple_single_use(ctx: ApiContext, req: MultipleSingleUseCreate) -> dict[str, Any]:
    """Up to 100,000 links in one call, all or nothing; optionally each with a generated custom
    validation code (`automated_codes`, `code_prefix`, `code_length` 10-25, `code_type`)."""
    campaign = service.resolve_campaign(ctx.session, ctx.scope(Campaign.account_id), req.campaign)
    spec = service.parse_batch(
        req.amount, req.status, req.automated_codes, req.code_prefix, req.code_length, req.code_type
    )
    items = service.create_batch(
        ctx.session, campaign, spec, now=ctx.now, base_url=ctx.runtime.settings.public_base_url
    )
    return {"campaign": f"cam_{campaign.id}", "action": service.BATCH_ACTION, "data": items}


@v3_endpoint(router, ["/v3/singleuse/remove"], SingleUseRemove, summary="Remove a single use access URL")
def remove_single_use(ctx: ApiContext, req: SingleUseRemove) -> dict[str, Any]:
    """The link stops working (its page says the coupon is no longer available) and its session
    leaves the usage data."""
    link, campaign = service.remove_link(
        ctx.session, ctx.scope(CouponSession.account_id), req.single_use_code, ctx.now
    )
    return {
        "campaign": f"cam_{campaign.id}",
        "action": service.REMOVED_ACTION,
        "single_use_code": link.code,
        "removed_date_utc": fmt(link.removed_at),
    }
