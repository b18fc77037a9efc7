"""Tenancy matrix: campaigns, coupon sessions (21- and 6-character codes) and single-use codes."""

from __future__ import annotations

import matrix_factories as f
from tenancy import TenancyCase

CAM = "/v4/campaigns/{id}"

CASES = [
    # v3 calls naming a campaign.
    TenancyCase("coupon/info", "/v3/coupon/info", "campaign", f.campaign),
    TenancyCase("campaign/data", "/v3/campaign/data", "campaign", f.campaign),
    TenancyCase("campaign/opens", "/v3/campaign/opens", "campaign", f.campaign),
    TenancyCase("campaign/claims", "/v3/campaign/claims", "campaign", f.campaign),
    TenancyCase("campaign/validations", "/v3/campaign/validations", "campaign", f.campaign),
    TenancyCase(
        "campaign/search", "/v3/campaign/search", "campaign", f.campaign, extra={"search": "=ada@example.com"}
    ),
    TenancyCase("coupon/list category", "/v3/coupon/list", "category", f.category),
    # Coupon sessions: the 21-character code and the 6-character validation code.
    TenancyCase(
        "couponsession/data",
        "/v3/couponsession/data",
        "couponsession",
        f.session,
        missing_id=f.MISSING_SESSION,
    ),
    TenancyCase(
        "couponsession/data short",
        "/v3/couponsession/data",
        "couponsession",
        f.short_session,
        missing_id=f.MISSING_SHORT,
    ),
    TenancyCase(
        "couponsession/data campaign",
        "/v3/couponsession/data",
        "campaign",
        f.campaign_of_session,
        extra={"couponsession": "{session}"},
    ),
    TenancyCase(
        "couponsession/update",
        "/v3/couponsession/update",
        "couponsession",
        f.session,
        extra={"claim": "1"},
        missing_id=f.MISSING_SESSION,
    ),
    TenancyCase(
        "couponsession/update short",
        "/v3/couponsession/update",
        "couponsession",
        f.short_session,
        extra={"validate": "1"},
        missing_id=f.MISSING_SHORT,
    ),
    TenancyCase(
        "couponsession/update campaign",
        "/v3/couponsession/update",
        "campaign",
        f.campaign_of_session,
        extra={"couponsession": "{session}", "claim": "1"},
    ),
    TenancyCase(
        "couponsession/update/multiple",
        "/v3/couponsession/update/multiple",
        "couponsessions",
        f.session,
        extra={"couponsessions": ["{id}"], "claim": "1"},
        missing_id=f.MISSING_SESSION,
        refusal_status=200,
    ),
    TenancyCase(
        "couponsession/update/multiple campaign",
        "/v3/couponsession/update/multiple",
        "campaign",
        f.campaign_of_session,
        extra={"couponsessions": ["{session}"], "claim": "1"},
    ),
    # Single-use codes.
    TenancyCase(
        "singleuse/create", "/v3/singleuse/create", "campaign", f.campaign, extra={"firstname": "Ann"}
    ),
    TenancyCase(
        "multiplesingleuse/create",
        "/v3/multiplesingleuse/create",
        "campaign",
        f.campaign,
        extra={"amount": "1"},
    ),
    TenancyCase(
        "singleuse/remove", "/v3/singleuse/remove", "single_use_code", f.session, missing_id=f.MISSING_SESSION
    ),
    # v4 campaigns.
    TenancyCase("campaign get (v4)", CAM, None, f.campaign, method="GET"),
    TenancyCase("campaign patch (v4)", CAM, None, f.campaign, method="PATCH", extra={"name": "Renamed"}),
    TenancyCase(
        "campaign patch category (v4)",
        "/v4/campaigns/{campaign}",
        "category",
        f.category_and_campaign,
        method="PATCH",
    ),
    TenancyCase(
        "campaign create category (v4)", "/v4/campaigns", "category", f.category, extra={"name": "New"}
    ),
    TenancyCase("campaign list category (v4)", "/v4/campaigns", "category", f.category, method="GET"),
    TenancyCase("campaign delete (v4)", CAM, None, f.campaign, method="DELETE"),
]
