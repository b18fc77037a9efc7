"""Demo data: an account with a subaccount, plus whatever each capability adds."""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy import func, select

from opencoupon.accounts import service as accounts
from opencoupon.models import Account
from opencoupon.runtime import Runtime

DEMO_EMAIL = "demo@opencoupon.local"
DEMO_PASSWORD = "demo-password"

# Modules that define `seed(session, runtime, account, subaccount) -> dict` for their demo data.
DEMO_MODULES = [
    "opencoupon.coupons.demo",
    "opencoupon.singleuse.demo",
    "opencoupon.loyalty.demo",
    "opencoupon.directories.demo",
    "opencoupon.webhooks.demo",
]


def seed_demo(runtime: Runtime) -> dict[str, Any] | None:
    """Create the demo data when the database has no account yet; None otherwise."""
    with runtime.db.transaction() as session:
        if session.scalar(select(func.count()).select_from(Account)):
            return None
        account, secret = accounts.create_account(
            session,
            runtime.keyring,
            email=DEMO_EMAIL,
            password=DEMO_PASSWORD,
            first_name="Demo",
            last_name="Owner",
            company_name="Demo Coffee Co.",
        )
        sub, sub_secret = accounts.create_account(
            session,
            runtime.keyring,
            email="demo-shop@opencoupon.local",
            password=DEMO_PASSWORD,
            parent=account,
            first_name="Demo",
            last_name="Shop",
            company_name="Demo Coffee Downtown",
        )
        result: dict[str, Any] = {
            "dashboard": runtime.url("/dashboard/login"),
            "email": DEMO_EMAIL,
            "password": DEMO_PASSWORD,
            "client_id": account.client_id,
            "client_secret": secret,
            "subaccount": {"ID": f"sub_{sub.id}", "client_id": sub.client_id, "client_secret": sub_secret},
        }
        for name in DEMO_MODULES:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                    continue
                raise
            result.update(module.seed(session, runtime, account, sub))
    return result
