"""The demo's paid directory: categories, campaigns and a user in every payment state."""

from __future__ import annotations

from typing import Any

from directories_fixtures import v4
from helpers import assert_ok
from opencoupon.directories import demo
from opencoupon.models import Account
from opencoupon.runtime import Runtime


def test_the_demo_directory_has_users_in_every_payment_state(
    account: Any, subaccount: Any, runtime: Runtime
) -> None:
    with runtime.db.transaction() as session:
        owner = session.get(Account, account.id)
        sub = session.get(Account, subaccount.id)
        assert owner is not None
        assert sub is not None
        seeded = demo.seed(session, runtime, owner, sub)["directory"]
    info = assert_ok(account.call("/v3/directory/info", directory=seeded["ID"]))["directory"]
    assert info["access"] == "payment"
    assert info["campaigns"] == seeded["campaigns"]
    users = {u["email"]: u for u in v4(account, "GET", f"/v4/directory/{seeded['ID']}/users").json()}
    states = {email: (u["payment_status"], u["has_access"]) for email, u in users.items()}
    assert states == {
        "paid@demo.opencoupon.local": ("completed", True),
        "lifetime@demo.opencoupon.local": ("completed", True),
        "expired@demo.opencoupon.local": ("completed", False),
        "pending@demo.opencoupon.local": ("pending", False),
        "cancelled@demo.opencoupon.local": ("cancelled", False),
    }
    tree = assert_ok(account.call("/v3/category/main/list"))["categories"]
    assert [c["path"] for c in tree] == ["Food > Pizza > Napoletana"]
