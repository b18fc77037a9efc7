"""The dashboard's pages beyond sign-in, one module per section."""

from __future__ import annotations

from opencoupon.dashboard import (
    account,
    campaigns,
    directories,
    loyalty,
    privacy,
    push,
    singleuse,
    subaccounts,
    webhooks,
)

routers = [
    campaigns.router,
    singleuse.router,
    webhooks.router,
    subaccounts.router,
    account.router,
    loyalty.router,
    directories.router,
    push.router,
    privacy.router,
]
