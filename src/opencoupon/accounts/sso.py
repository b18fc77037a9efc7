"""Single sign-on and password-reset links: one-time tokens the API hands out and the dashboard
redeems (`/sso/{token}`, `/dashboard/reset/{token}`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from opencoupon.accounts import service as accounts
from opencoupon.errors import ApiError, missing
from opencoupon.kit import ids
from opencoupon.kit.dates import fmt
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Account, Campaign

SSO_PURPOSE = accounts.SSO_PURPOSE
RESET_PURPOSE = accounts.RESET_PURPOSE

CAMPAIGN_NOT_FOUND = ApiError(502, "Campaign ID not found.")

# Where each vendor `page` lands in the dashboard. `{campaign}` is the campaign's numeric ID.
PAGE_PATHS = {
    "": "/dashboard/",
    "campaigns": "/dashboard/campaigns",
    "add_campaign": "/dashboard/campaigns/new",
    "update_campaign": "/dashboard/campaigns/{campaign}/edit",
    "statistics": "/dashboard/statistics",
    "distribution": "/dashboard/distribution",
}


def landing_path(page: str, target: str) -> str:
    template = PAGE_PATHS.get(page, PAGE_PATHS[""])
    return template.format(campaign=target) if "{campaign}" in template else template


def sso_link(ctx: ApiContext, target: Account, page: str | None, campaign: str | None) -> dict[str, Any]:
    """`{"ID", "token", "url", "url_whitelabel"}` for a one-time sign-in of `target` (101 for a
    blocked or expired account, and for a subaccount without dashboard access)."""
    accounts.ensure_usable(ctx.session, target, ctx.now)
    accounts.ensure_dashboard_access(target)
    campaign_id = ""
    if page == "update_campaign":
        if not campaign:
            raise missing("campaign")
        number = ids.parse_public_id(campaign, "cam_", "campaign", CAMPAIGN_NOT_FOUND)
        # The campaigns the target's dashboard opens: for the caller itself (/v3/account/sso) its own
        # and, for a master, its subaccounts'; for a subaccount (/v3/subaccount/sso) its own only.
        reach = (
            ctx.scope(Campaign.account_id)
            if target.id == ctx.account.id
            else Campaign.account_id == target.id
        )
        found = ctx.session.scalar(
            select(Campaign.id).where(Campaign.id == number, reach, Campaign.deleted_at.is_(None))
        )
        if found is None:
            raise CAMPAIGN_NOT_FOUND
        campaign_id = str(found)
    settings = ctx.runtime.settings
    raw = accounts.issue_token(
        ctx.session,
        ctx.runtime.keyring,
        target,
        purpose=SSO_PURPOSE,
        ttl=dt.timedelta(seconds=settings.sso_token_ttl_seconds),
        page=page or "",
        target=campaign_id,
    )
    path = f"/sso/{raw}"
    whitelabel = (settings.whitelabel_base_url or settings.base_url).rstrip("/")
    return {"ID": f"sub_{target.id}", "token": raw, "url": ctx.url(path), "url_whitelabel": whitelabel + path}


def reset_link(ctx: ApiContext, target: Account) -> dict[str, Any]:
    settings = ctx.runtime.settings
    ttl = dt.timedelta(seconds=settings.reset_token_ttl_seconds)
    raw = accounts.issue_token(ctx.session, ctx.runtime.keyring, target, purpose=RESET_PURPOSE, ttl=ttl)
    return {"url": ctx.url(f"/dashboard/reset/{raw}"), "expiry_date_utc": fmt(ctx.now + ttl)}
