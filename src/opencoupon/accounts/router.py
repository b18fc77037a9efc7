"""Calls about the calling account itself."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from opencoupon.accounts import sso
from opencoupon.kit.endpoint import ApiContext, v3_endpoint
from opencoupon.subaccounts.schemas import AccountSso

router = APIRouter(tags=["Account"])


@v3_endpoint(router, ["/v3/account/sso"], AccountSso, summary="Single sign-on for the account")
def account_sso(ctx: ApiContext, req: AccountSso) -> dict[str, Any]:
    """A one-time sign-in link (60 s) into the calling account's own dashboard. No parameters are
    needed; `page` and `campaign` work as in `/v3/subaccount/sso`."""
    return {"subaccount": sso.sso_link(ctx, ctx.account, req.page, req.campaign)}
