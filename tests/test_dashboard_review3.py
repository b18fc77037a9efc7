"""Dashboard review 3: a subaccount post without an expiry keeps it."""

from __future__ import annotations

from conftest import LiveServer, TestAccount
from dashboard_fixtures import post_form, signed_in


def test_a_subaccount_post_without_an_expiry_keeps_it(
    live_server: LiveServer, account: TestAccount, subaccount: TestAccount
) -> None:
    account.call("/v3/subaccount/update", subaccount=f"sub_{subaccount.id}", expiry_date="2031-01-31")
    page = f"/dashboard/subaccounts/sub_{subaccount.id}"
    with signed_in(live_server.url, account.email) as master:
        assert post_form(master, page, f"{page}/edit", {"company_name": "Acme"}).status_code == 303
        info = account.call("/v3/subaccount/info", subaccount=f"sub_{subaccount.id}").json()["subaccount"]
        assert info["expiry_date"] == "2031-01-31"
        # An emptied expiry still removes it.
        assert post_form(master, page, f"{page}/edit", {"expiry_date": ""}).status_code == 303
    info = account.call("/v3/subaccount/info", subaccount=f"sub_{subaccount.id}").json()["subaccount"]
    assert not info["expiry_date"]
