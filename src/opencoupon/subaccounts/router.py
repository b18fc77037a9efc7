"""Subaccount calls (v4 action paths with their v3 aliases)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from opencoupon.accounts import repository as accounts_repo
from opencoupon.accounts import sso
from opencoupon.kit.endpoint import ApiContext, v3_endpoint
from opencoupon.kit.params import NoParams
from opencoupon.models import Account
from opencoupon.subaccounts import service
from opencoupon.subaccounts.schemas import SubaccountCreate, SubaccountRef, SubaccountSso, SubaccountUpdate

router = APIRouter(tags=["Subaccount"])


def _in_full(ctx: ApiContext, sub: Account) -> dict[str, Any]:
    """What info, create and update answer: the subaccount with its credentials and campaigns."""
    return {"subaccount": service.to_public(ctx.session, ctx, sub, detail=True)}


@v3_endpoint(router, ["/v4/subaccount/list", "/v3/subaccount/list"], NoParams, summary="List subaccounts")
def list_subaccounts(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """Every subaccount of the calling master account."""
    service.require_master(ctx)
    subs = accounts_repo.subaccounts(ctx.session, ctx.account.id)
    return {
        "amount_of_subaccounts": str(len(subs)),
        "subaccounts": [service.to_public(ctx.session, ctx, s, detail=False) for s in subs],
    }


@v3_endpoint(
    router,
    ["/v4/subaccount", "/v4/subaccount/info", "/v3/subaccount/info"],
    SubaccountRef,
    summary="Subaccount info",
)
def subaccount_info(ctx: ApiContext, req: SubaccountRef) -> dict[str, Any]:
    """One subaccount, with its API key and secret and its campaigns."""
    return _in_full(ctx, service.get_subaccount(ctx, req.subaccount))


@v3_endpoint(
    router,
    ["/v4/subaccount/create", "/v3/subaccount/create"],
    SubaccountCreate,
    summary="Create a subaccount",
)
def create_subaccount(ctx: ApiContext, req: SubaccountCreate) -> dict[str, Any]:
    """A new subaccount with its own API credentials."""
    return _in_full(ctx, service.create(ctx, req))


@v3_endpoint(
    router,
    ["/v4/subaccount/update", "/v3/subaccount/update"],
    SubaccountUpdate,
    summary="Update a subaccount",
)
def update_subaccount(ctx: ApiContext, req: SubaccountUpdate) -> dict[str, Any]:
    """Change any create field; `block` blocks or unblocks the subaccount."""
    return _in_full(ctx, service.update(ctx, req))


@v3_endpoint(router, ["/v3/subaccount/reset/url"], SubaccountRef, summary="Create a password reset URL")
def subaccount_reset_url(ctx: ApiContext, req: SubaccountRef) -> dict[str, Any]:
    """A one-time URL where the subaccount sets a new dashboard password (expires, default 1 hour)."""
    sub = service.get_subaccount(ctx, req.subaccount)
    return sso.reset_link(ctx, sub)


@v3_endpoint(router, ["/v3/subaccount/sso"], SubaccountSso, summary="Single sign-on for a subaccount")
def subaccount_sso(ctx: ApiContext, req: SubaccountSso) -> dict[str, Any]:
    """A one-time sign-in link (60 s) that opens the subaccount's dashboard on `page`;
    `campaign` is required with `page=update_campaign`."""
    sub = service.get_subaccount(ctx, req.subaccount)
    return {"subaccount": sso.sso_link(ctx, sub, req.page, req.campaign)}
