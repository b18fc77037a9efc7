"""Tenancy matrix: e-mail and SMS sends and their records."""

from __future__ import annotations

import matrix_factories as f
from tenancy import TenancyCase

CASES = [
    TenancyCase(
        "send/email campaign",
        "/v3/send/email",
        "campaign",
        f.campaign_for_send,
        extra={"email": "to@example.org"},
    ),
    TenancyCase(
        "send/email session",
        "/v3/send/email",
        "couponsession",
        f.session_for_send,
        extra={"campaign": "{campaign}", "email": "to@example.org"},
        missing_id=f.MISSING_SESSION,
    ),
    TenancyCase(
        "send/sms campaign", "/v3/send/sms", "campaign", f.campaign_for_send, extra={"phone": "+15005550010"}
    ),
    TenancyCase(
        "send/sms session",
        "/v3/send/sms",
        "couponsession",
        f.session_for_send,
        extra={"campaign": "{campaign}", "phone": "+15005550010"},
        missing_id=f.MISSING_SESSION,
    ),
    TenancyCase("send get (v4)", "/v4/sends/{id}", None, f.send, method="GET"),
    TenancyCase("sends by campaign (v4)", "/v4/sends", "campaign", f.campaign, method="GET"),
    TenancyCase(
        "sends by session (v4)",
        "/v4/sends",
        "couponsession",
        f.session,
        method="GET",
        missing_id=f.MISSING_SESSION,
    ),
]
