"""Single use calls: create one link, create many in one call, remove one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from opencoupon.errors import ApiError, error_response
from opencoupon.kit import ids
from opencoupon.kit.body import PayloadTooLarge, read_payload
from opencoupon.kit.dates import fmt
from opencoupon.kit.endpoint import SECURITY, ApiContext, _body_doc, _query_doc, run_call, v3_endpoint
from opencoupon.kit.fastlane import DIRECT_ENDPOINTS
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


# --- one large batch at a time (singleuse/bulkgate.py) ---------------------------------------


async def _body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused past `max_bytes` as read_payload refuses it."""
    declared = request.headers.get("content-length")
    if declared and ids.is_number(declared) and int(declared) > max_bytes:
        raise PayloadTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(request: Request, body: bytes) -> Request:
    """A request over the same scope whose body is `body` (the original's is read once)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


def _takes_turns(amount: Any) -> bool:
    """Whether a call asking for `amount` links waits its turn: over GATED_AMOUNT, or anything
    not plainly a small count (the service refuses what is no count at all)."""
    if amount is None or amount == "":
        return False  # the default, DEFAULT_AMOUNT
    text = str(amount).strip() if isinstance(amount, str | int) and not isinstance(amount, bool) else ""
    return not (text.isdigit() and len(text) <= 9 and int(text) <= bulkgate.GATED_AMOUNT)


def _busy() -> ApiError:
    wait = bulkgate.RETRY_AFTER_SECONDS
    return ApiError(
        429,
        f"Another large batch of single use links is being created; retry in {wait} seconds.",
        headers={"Retry-After": str(wait)},
    )


async def multiple_single_use_endpoint(request: Request) -> Response:
    """create_multiple_single_use as every v3 call runs (kit/endpoint.run_call), a large one once
    the batch before it has answered: from its start to its encoded answer, so its memory is
    never held alongside another's."""
    max_bytes = request.app.state.runtime.settings.max_body_bytes
    try:
        body = await _body(request, max_bytes)
        payload = await read_payload(_replay(request, body), max_bytes)
    except ApiError as err:
        return error_response(err)
    call = _replay(request, body)
    if not _takes_turns(payload.get("amount")):
        return await run_call(call, MultipleSingleUseCreate, create_multiple_single_use, envelope=True)
    if not await bulkgate.BULK_CALLS.enter(bulkgate.WAIT_SECONDS):
        return error_response(_busy())
    try:
        return await run_call(call, MultipleSingleUseCreate, create_multiple_single_use, envelope=True)
    finally:
        bulkgate.BULK_CALLS.leave()


def _register_multiple_single_use() -> None:
    """Registered as kit/endpoint.v3_endpoint registers a call (POST and GET, the fast lane,
    the same OpenAPI entries), around multiple_single_use_endpoint."""
    path, summary = "/v3/multiplesingleuse/create", "Create multiple single use access URLs"
    doc = (create_multiple_single_use.__doc__ or "").strip()
    name = create_multiple_single_use.__name__ + path.replace("/", "_")
    DIRECT_ENDPOINTS.add(multiple_single_use_endpoint)
    model = MultipleSingleUseCreate
    router.add_api_route(
        path,
        multiple_single_use_endpoint,
        methods=["POST"],
        name=name,
        summary=summary,
        description=doc,
        openapi_extra={**_body_doc(model), "security": SECURITY},
        response_model=None,
    )
    router.add_api_route(
        path,
        multiple_single_use_endpoint,
        methods=["GET"],
        name=name + "_get",
        summary=summary + " (GET)",
        description=doc,
        openapi_extra={"parameters": _query_doc(model), "security": SECURITY},
        response_model=None,
    )


_register_multiple_single_use()


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
