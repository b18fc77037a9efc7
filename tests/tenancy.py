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

A factory may instead return a dict of IDs: "id" is the one under test (the one replaced by a
missing ID), the others fill the path's other placeholders ("/v4/directory/{directory}/users/{id}")
and "{name}" strings in `extra` (`extra={"couponsessions": ["{id}"]}` puts the ID in a list).
`test_tenancy_matrix_coverage.py` fails when an operation of the OpenAPI document that takes an ID
has no case here and is not in its commented allow-list.
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

Factory = Callable[[Runtime, TestAccount], str | dict[str, str]]


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
    # The status a missing ID answers when it is not an error status (a call answering 200 with one
    # error per item, as `couponsession/update/multiple` does).
    refusal_status: int | None = None

    def missing_for(self, real_id: str) -> str:
        if self.missing_id is not None:
            return self.missing_id
        return re.sub(r"\d+$", "2147483000", real_id)

    def make(self, runtime: Runtime, owner: TestAccount) -> dict[str, str]:
        """The owner's IDs: "id" is the one under test."""
        made = self.factory(runtime, owner)
        return {"id": made} if isinstance(made, str) else dict(made)

    def request(self, ids: dict[str, str], object_id: str) -> tuple[str, str, dict[str, Any]]:
        """(method, path, parameters) asking about `object_id` in place of ids["id"]."""
        values = {**ids, "id": object_id}
        path = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], self.path)
        params = {key: _fill(value, values) for key, value in self.extra.items()}
        if self.param and self.param not in self.extra:
            params[self.param] = object_id
        return self.method, path, params


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], value)
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    return value


def _subaccount(runtime: Runtime, owner: TestAccount) -> str:
    from opencoupon.accounts import service as accounts
    from opencoupon.models import Account

    with runtime.db.transaction() as session:
        parent = session.get(Account, owner.id)
        sub, _secret = accounts.create_account(
            session, runtime.keyring, email=f"tenancy-{owner.id}-{id(session)}@example.com", parent=parent
        )
        return f"sub_{sub.id}"


def _subaccount_campaign(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    import matrix_factories

    return matrix_factories.subaccount_campaign(runtime, owner)


def _campaign(runtime: Runtime, owner: TestAccount) -> dict[str, str]:
    import matrix_factories

    return matrix_factories.campaign(runtime, owner)


FOUNDATION_CASES = [
    TenancyCase("subaccount info (v4)", "/v4/subaccount", "subaccount", _subaccount),
    TenancyCase("subaccount info (v3)", "/v3/subaccount/info", "subaccount", _subaccount),
    TenancyCase(
        "subaccount update", "/v4/subaccount/update", "subaccount", _subaccount, extra={"first_name": "X"}
    ),
    TenancyCase("subaccount info (v4 info)", "/v4/subaccount/info", "subaccount", _subaccount),
    TenancyCase(
        "subaccount update (v3)", "/v3/subaccount/update", "subaccount", _subaccount, extra={"last_name": "Y"}
    ),
    TenancyCase("subaccount reset url", "/v3/subaccount/reset/url", "subaccount", _subaccount),
    TenancyCase(
        "subaccount sso", "/v3/subaccount/sso", "subaccount", _subaccount, extra={"page": "campaigns"}
    ),
    TenancyCase(
        "subaccount sso campaign",
        "/v3/subaccount/sso",
        "campaign",
        _subaccount_campaign,
        extra={"subaccount": "{subaccount}", "page": "update_campaign"},
    ),
    TenancyCase(
        "account sso campaign", "/v3/account/sso", "campaign", _campaign, extra={"page": "update_campaign"}
    ),
]


def all_cases() -> list[TenancyCase]:
    cases = list(FOUNDATION_CASES)
    for module_path in sorted(Path(__file__).parent.glob("tenancy_*.py")):
        module = importlib.import_module(module_path.stem)
        cases.extend(module.CASES)
    return cases
