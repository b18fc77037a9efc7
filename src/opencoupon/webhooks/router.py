"""`/v4/webhooks` (endpoints, rotation, delivery log, replay) and `/v3/webhook/verification`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from opencoupon.kit.endpoint import ApiContext, v3_endpoint, v4_endpoint
from opencoupon.kit.params import NoParams
from opencoupon.models import WebhookEndpoint
from opencoupon.webhooks import repository, service
from opencoupon.webhooks.schemas import (
    DeliveryQuery,
    EndpointCreate,
    EndpointUpdate,
    Replay,
    Rotate,
    Verification,
)

router = APIRouter(tags=["Webhook"])


@v3_endpoint(router, ["/v3/webhook/verification"], Verification, summary="Verify a webhook event")
def verification(ctx: ApiContext, req: Verification) -> dict[str, Any]:
    """Is `webhook` (an `evt_…` ID) an event of the calling account (and of `session`, if given)?
    Error 509 for unknown events and for another account's."""
    return service.verify(ctx, req.webhook, req.session)


@v4_endpoint(
    router, "POST", "/v4/webhooks", EndpointCreate, summary="Create a webhook endpoint", status_code=201
)
def create_endpoint(ctx: ApiContext, req: EndpointCreate) -> dict[str, Any]:
    """`url` (https, public address) and `events` (event types, or `*`); answers the signing
    `secret` (`whsec_…`) once."""
    return service.create(ctx, req)


@v4_endpoint(router, "GET", "/v4/webhooks", NoParams, summary="List webhook endpoints")
def list_endpoints(ctx: ApiContext, req: NoParams) -> list[dict[str, Any]]:
    """Every endpoint of the caller (a master also sees its subaccounts')."""
    rows = repository.endpoints(ctx.session, ctx.scope(WebhookEndpoint.account_id))
    return [service.to_public(row, ctx) for row in rows]


@v4_endpoint(router, "GET", "/v4/webhooks/{id}", NoParams, summary="One webhook endpoint")
def get_endpoint(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    return service.to_public(service.get(ctx, ctx.path_params["id"]), ctx)


@v4_endpoint(router, "PATCH", "/v4/webhooks/{id}", EndpointUpdate, summary="Update a webhook endpoint")
def update_endpoint(ctx: ApiContext, req: EndpointUpdate) -> dict[str, Any]:
    """Change `url`, `events`, `description` or `enabled` (enabling clears a disabled reason)."""
    return service.update(ctx, req)


@v4_endpoint(router, "DELETE", "/v4/webhooks/{id}", NoParams, summary="Delete a webhook endpoint")
def delete_endpoint(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    return service.delete(ctx)


@v4_endpoint(router, "POST", "/v4/webhooks/{id}/rotate", Rotate, summary="Rotate the signing secret")
def rotate_secret(ctx: ApiContext, req: Rotate) -> dict[str, Any]:
    """A new secret (shown once); deliveries carry signatures with both the new and the previous
    secret for `grace_hours` (default 24)."""
    return service.rotate(ctx, req)


@v4_endpoint(router, "GET", "/v4/webhooks/{id}/deliveries", DeliveryQuery, summary="Delivery log")
def list_deliveries(ctx: ApiContext, req: DeliveryQuery) -> list[dict[str, Any]]:
    """Every attempt, newest first: status code, duration, the start of the response. Filter by
    `event`; page with `before` (an `att_…` ID) and `limit` (≤ 500)."""
    return service.deliveries(ctx, req)


@v4_endpoint(router, "POST", "/v4/webhooks/{id}/replay", Replay, summary="Replay events", status_code=202)
def replay(ctx: ApiContext, req: Replay) -> dict[str, Any]:
    """Deliver one `event` again, or every event `since` a time (`yyyy-MM-dd HH:mm:ss`, UTC),
    with the original webhook-id and body."""
    return service.replay(ctx, req)
