"""The tenancy matrix: for every call that takes an object's ID, another account's ID must answer
exactly like a missing one (same HTTP status, same body). `test_foundation_safety_net.py` walks it.

Add your capability's calls in a module `tests/tenancy_<domain>.py` that defines
`CASES: list[TenancyCase]` (collected automatically, so branches do not edit the same list):

    from tenancy import TenancyCase

    def _campaign(runtime, owner):          # owner: conftest.TestAccount
        ...create a campaign for owner.id through the service or the API...
        return f"cam_{campaign_id}"

    CASES = [
        TenancyCase("coupon/info", "/v3/coupon/info", "campaign", _campaign),
        TenancyCase("campaign get", "/v4/campaigns/{id}", None, _campaign, method="GET"),
    ]
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import TestAccount
from opencoupon.runtime import Runtime

Factory = Callable[[Runtime, TestAccount], str]


@dataclass(frozen=True)
class TenancyCase:
    name: str
    # A v3 path, or a REST path with "{id}" where the ID goes.
    path: str
    # The body parameter that carries the ID; None when the ID is in the path.
    param: str | None
    # Creates an object owned by the given account and returns its public ID.
    factory: Factory
    method: str = "POST"
    # Other parameters the call needs to reach the ID lookup.
    extra: dict[str, Any] = field(default_factory=dict)
    # An ID nobody has; default: the factory's prefix with a number no row reaches.
    missing_id: str | None = None

    def missing_for(self, real_id: str) -> str:
        if self.missing_id is not None:
            return self.missing_id
        return re.sub(r"\d+$", "2147483000", real_id)


def _subaccount(runtime: Runtime, owner: TestAccount) -> str:
    from opencoupon.accounts import service as accounts
    from opencoupon.models import Account

    with runtime.db.transaction() as session:
        parent = session.get(Account, owner.id)
        sub, _secret = accounts.create_account(
            session, runtime.keyring, email=f"tenancy-{owner.id}-{id(session)}@example.com", parent=parent
        )
        return f"sub_{sub.id}"


FOUNDATION_CASES = [
    TenancyCase("subaccount info (v4)", "/v4/subaccount", "subaccount", _subaccount),
    TenancyCase("subaccount info (v3)", "/v3/subaccount/info", "subaccount", _subaccount),
    TenancyCase(
        "subaccount update", "/v4/subaccount/update", "subaccount", _subaccount, extra={"first_name": "X"}
    ),
    TenancyCase("subaccount reset url", "/v3/subaccount/reset/url", "subaccount", _subaccount),
    TenancyCase(
        "subaccount sso", "/v3/subaccount/sso", "subaccount", _subaccount, extra={"page": "campaigns"}
    ),
]


def all_cases() -> list[TenancyCase]:
    cases = list(FOUNDATION_CASES)
    for module_path in sorted(Path(__file__).parent.glob("tenancy_*.py")):
        module = importlib.import_module(module_path.stem)
        cases.extend(module.CASES)
    return cases
