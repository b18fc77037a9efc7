"""Tenancy matrix: webhook endpoints (rate_limit, rotate, deliveries, replay) and events."""

from __future__ import annotations

import matrix_factories as f
from tenancy import TenancyCase

HOOK = "/v4/webhooks/{id}"

CASES = [
    TenancyCase(
        "webhook/verification", "/v3/webhook/verification", "webhook", f.event, missing_id=f.MISSING_EVENT
    ),
    TenancyCase("webhook get (v4)", HOOK, None, f.endpoint, method="GET"),
    TenancyCase("webhook patch (v4)", HOOK, None, f.endpoint, method="PATCH", extra={"description": "x"}),
    TenancyCase(
        "webhook patch rate_limit (v4)", HOOK, None, f.endpoint, method="PATCH", extra={"rate_limit": 5}
    ),
    TenancyCase(
        "webhook patch rate_limit off (v4)",
        HOOK,
        None,
        f.endpoint,
        method="PATCH",
        extra={"rate_limit": None},
    ),
    TenancyCase("webhook rotate (v4)", HOOK + "/rotate", None, f.endpoint),
    TenancyCase("webhook deliveries (v4)", HOOK + "/deliveries", None, f.endpoint, method="GET"),
    TenancyCase("webhook replay (v4)", HOOK + "/replay", None, f.endpoint, extra={"since": "2000-01-01"}),
    TenancyCase(
        "webhook create for subaccount (v4)",
        "/v4/webhooks",
        "subaccount",
        f.subaccount,
        extra={"url": "https://example.com/sub-hook", "events": ["*"]},
    ),
    TenancyCase("webhook delete (v4)", HOOK, None, f.endpoint, method="DELETE"),
]
