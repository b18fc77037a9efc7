"""Push calls of the vendor API, fan-out progress, and the browser-facing subscription routes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import Request

from opencoupon import web
from opencoupon.errors import ApiError, bad_value
from opencoupon.kit.body import check_characters, load_json
from opencoupon.kit.clock import utcnow
from opencoupon.kit.endpoint import ApiContext, v3_endpoint, v4_endpoint
from opencoupon.kit.lockout import Lockout
from opencoupon.kit.params import NoParams
from opencoupon.push import service, targets, vapid
from opencoupon.push.schemas import CouponPushAll, CouponPushSingle, LoyaltyPushAll, LoyaltyPushSingle
from opencoupon.runtime import Runtime

router = APIRouter(tags=["Push notifications"])
browser = APIRouter(include_in_schema=False)
routers = [router, browser]

MAX_SUBSCRIPTION_BYTES = 8192
# New subscriptions per client address (an IPv6 /64): a shop's guest Wi-Fi with many customers
# opting in stays well within it; a script attaching rows without end does not.
subscribe_limit = Lockout("push-subscribe", limit=60, window=dt.timedelta(minutes=15))
TOO_LARGE = ApiError(413, "Request body too large.", http_status=413)


@v3_endpoint(
    router, ["/v3/coupon/pushnotification/single"], CouponPushSingle, summary="Push to one coupon session"
)
def coupon_single(ctx: ApiContext, req: CouponPushSingle) -> dict[str, Any]:
    """`message` to every browser subscribed on the session's page (`couponsession`: 21-character
    code or its 6-character short form). 505 when the session is not in the campaign."""
    group = targets.campaign(ctx, req.campaign)
    key = targets.coupon_session(ctx, group, req.couponsession)
    return service.answer(ctx, service.queue_fanout(ctx, group, req.message, key))


@v3_endpoint(router, ["/v3/coupon/pushnotification/all"], CouponPushAll, summary="Push to a whole campaign")
def coupon_all(ctx: ApiContext, req: CouponPushAll) -> dict[str, Any]:
    """`message` to every subscribed session of the campaign; answers the number queued and the
    fan-out's ID (progress at `GET /v4/push/fanouts/{id}`)."""
    group = targets.campaign(ctx, req.campaign)
    return service.answer(ctx, service.queue_fanout(ctx, group, req.message))


@v3_endpoint(
    router, ["/v3/loyalty/pushnotification/single"], LoyaltyPushSingle, summary="Push to one card holder"
)
def loyalty_single(ctx: ApiContext, req: LoyaltyPushSingle) -> dict[str, Any]:
    group = targets.loyalty_card(ctx, req.loyaltycard)
    key = targets.loyalty_holder(ctx, group, req.user)
    return service.answer(ctx, service.queue_fanout(ctx, group, req.message, key))


@v3_endpoint(
    router, ["/v3/loyalty/pushnotification/all"], LoyaltyPushAll, summary="Push to every card holder"
)
def loyalty_all(ctx: ApiContext, req: LoyaltyPushAll) -> dict[str, Any]:
    group = targets.loyalty_card(ctx, req.loyaltycard)
    return service.answer(ctx, service.queue_fanout(ctx, group, req.message))


@v4_endpoint(router, "GET", "/v4/push/fanouts/{id}", NoParams, summary="Progress of a push notification")
def fanout_progress(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """`queued`, `sent`, `failed` and `removed` (subscriptions the push service said are gone)."""
    return service.to_public(service.get_fanout(ctx, ctx.path_params["id"]))


# ---- browser side ------------------------------------------------------------------------------------


@browser.get("/push/vapid-public-key")
async def public_key(request: Request) -> JSONResponse:
    """The application server key for `pushManager.subscribe()`."""
    runtime: Runtime = request.app.state.runtime
    key = await run_in_threadpool(vapid.public_key, runtime)
    return JSONResponse({"publicKey": key}, headers={"Cache-Control": "public, max-age=3600"})


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over `limit`: by its Content-Length
    before reading, else while it streams in, never read whole first."""
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise TOO_LARGE
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TOO_LARGE
        chunks.append(chunk)
    return b"".join(chunks)


def _subscription(sub: Any) -> tuple[str, str, str]:
    """endpoint, p256dh and auth of a PushSubscription.toJSON()."""
    endpoint = str(sub["endpoint"])
    keys = sub.get("keys") or {}
    return endpoint, str(keys.get("p256dh", "")), str(keys.get("auth", ""))


async def _subscription_body(request: Request) -> tuple[str, str, str, str, str]:
    raw = await _read_limited(request, MAX_SUBSCRIPTION_BYTES)
    try:
        body = load_json(raw or b"{}")
        target = body["target"]
        kind, code = str(target["kind"]), str(target["code"])
        endpoint, p256dh, auth = _subscription(body["subscription"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ApiError(300, "Invalid request: expected {target: {kind, code}, subscription}.") from None
    # Decoded here, not by the API's parser: its character check (a lone surrogate or NUL in a
    # code or the endpoint was a 500, or stored).
    check_characters({"target": code, "subscription": [endpoint, p256dh, auth]})
    if kind not in targets.KINDS:
        raise bad_value("target", "Unknown kind.")
    return kind, code, endpoint, p256dh, auth


async def _checked(runtime: Runtime, endpoint: str, p256dh: str, auth: str) -> None:
    try:
        # In a worker thread: the endpoint's host is resolved (the webhook SSRF rules).
        await run_in_threadpool(
            service.check_subscription,
            endpoint,
            p256dh,
            auth,
            allow_private=runtime.settings.allow_private_webhooks,
        )
    except service.BadSubscription as exc:
        raise bad_value("subscription", str(exc)) from None


def _too_many() -> ApiError:
    return ApiError(
        429,
        "Too many push subscriptions from this address. Please try again later.",
        headers={"Retry-After": str(int(subscribe_limit.window.total_seconds()))},
    )


@browser.post("/push/subscriptions")
async def subscribe(request: Request) -> JSONResponse:
    """Called by the opt-in script with the browser's PushSubscription."""
    runtime: Runtime = request.app.state.runtime
    kind, code, endpoint, p256dh, auth = await _subscription_body(request)
    await _checked(runtime, endpoint, p256dh, auth)

    client = web.client_key(request)

    def store() -> int:
        with runtime.db.transaction() as session:
            # Counted in this transaction, refused attempts too (opencoupon.kit.lockout).
            if not subscribe_limit.attempt(session, runtime.keyring, client):
                return 429
            target = targets.subscriber(session, kind, code)
            if target is None:
                return 404
            service.subscribe(session, target, endpoint, p256dh, auth, utcnow())
            return 201

    status = await run_in_threadpool(store)
    if status == 429:
        raise _too_many()
    if status == 404:
        raise ApiError(404, "Nothing to subscribe to at this code.", http_status=404)
    return JSONResponse({"subscribed": True}, status_code=201)


@browser.delete("/push/subscriptions")
async def unsubscribe(request: Request) -> JSONResponse:
    """This page's target stops getting pushes on this browser subscription. `remaining`: how many
    other targets still use the subscription (the opt-in script ends the browser's subscription
    only when none does)."""
    runtime: Runtime = request.app.state.runtime
    kind, code, endpoint, _, _ = await _subscription_body(request)

    def remove() -> tuple[int, int]:
        with runtime.db.transaction() as session:
            target = targets.subscriber(session, kind, code, active=False)
            removed = 0 if target is None else service.unsubscribe(session, target.kind, target.key, endpoint)
            return removed, service.targets_of(session, endpoint)

    removed, remaining = await run_in_threadpool(remove)
    return JSONResponse({"removed": removed, "remaining": remaining})


@browser.post("/push/subscriptions/status")
async def subscription_status(request: Request) -> JSONResponse:
    """Whether this page's target gets pushes on this browser subscription (the opt-in script
    asks on every page load: one browser subscription serves every page it was turned on for).
    When it does, keys the browser changed are stored."""
    runtime: Runtime = request.app.state.runtime
    kind, code, endpoint, p256dh, auth = await _subscription_body(request)

    def look() -> bool:
        with runtime.db.transaction() as session:
            target = targets.subscriber(session, kind, code, active=False)
            return target is not None and service.refresh(session, target, endpoint, p256dh, auth)

    return JSONResponse({"subscribed": await run_in_threadpool(look)})


@browser.post("/push/subscriptions/renew")
async def renew(request: Request) -> JSONResponse:
    """The browser renewed its subscription (a new endpoint, new keys): every target of the
    `previous` endpoint moves to the new subscription. Sent by the service worker on
    `pushsubscriptionchange` and by the opt-in script when the subscription it finds is not the
    one it last sent. Checked and counted as a new subscription is."""
    runtime: Runtime = request.app.state.runtime
    raw = await _read_limited(request, MAX_SUBSCRIPTION_BYTES)
    try:
        body = load_json(raw or b"{}")
        previous = body["previous"]
        if not isinstance(previous, str):
            raise TypeError
        endpoint, p256dh, auth = _subscription(body["subscription"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ApiError(300, "Invalid request: expected {previous: endpoint, subscription}.") from None
    check_characters({"previous": previous, "subscription": [endpoint, p256dh, auth]})
    await _checked(runtime, endpoint, p256dh, auth)
    client = web.client_key(request)

    def move() -> int | None:
        with runtime.db.transaction() as session:
            if not subscribe_limit.attempt(session, runtime.keyring, client):
                return None
            return service.renew(session, previous, endpoint, p256dh, auth)

    moved = await run_in_threadpool(move)
    if moved is None:
        raise _too_many()
    return JSONResponse({"moved": moved})
