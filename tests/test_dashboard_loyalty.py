"""Dashboard loyalty pages over real HTTP: cards, holders with balances, a holder's ledger,
adjusting with a reason (server-side checks), void/unvoid, CSRF and tenancy."""

from __future__ import annotations

from conftest import LiveServer, TestAccount
from dashboard_fixtures import post_form, signed_in
from loyalty_fixtures import create_card, create_holder, ledger_of
from opencoupon.runtime import Runtime


def test_holders_ledger_adjust_and_void(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    card = create_card(account, name="Stamp card", type="stamp")
    holder = create_holder(account, card["id"], first_name="Ann")
    holder_id = int(holder["ID"] if "ID" in holder else holder["id"])
    path = f"/dashboard/loyalty/{card['id']}/holders/{holder_id}"
    with signed_in(live_server.url, account.email) as web:
        assert "Stamp card" in web.get("/dashboard/loyalty").text
        card_page = web.get(f"/dashboard/loyalty/{card['id']}").text
        assert f'data-holder="{holder_id}"' in card_page
        bad = post_form(web, path, f"{path}/adjust", {"amount": "3", "reason": ""})
        assert bad.status_code == 422
        assert "Reason: choose" in bad.text
        bad = post_form(web, path, f"{path}/adjust", {"amount": "many", "reason": "goodwill"})
        assert bad.status_code == 422
        assert "whole number" in bad.text
        done = post_form(web, path, f"{path}/adjust", {"amount": "3", "reason": "goodwill"})
        assert done.status_code == 303
        page = web.get(done.headers["location"]).text
        assert "Balance is now 3 stamps." in page
        assert "goodwill" in page
        assert ledger_of(runtime, holder_id)[-1] == (3, 3, "collect")
        too_much = post_form(web, path, f"{path}/adjust", {"amount": "-10", "reason": "correction"})
        assert too_much.status_code == 422
        assert ledger_of(runtime, holder_id)[-1] == (3, 3, "collect")
        post_form(web, path, f"{path}/void", {})
        assert "voided" in web.get(path).text
        refused = post_form(web, path, f"{path}/adjust", {"amount": "1", "reason": "goodwill"})
        assert refused.status_code == 422
        post_form(web, path, f"{path}/unvoid", {})
        assert web.post(f"{path}/void", data={"csrf_token": "forged"}).status_code == 403
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(path).status_code == 404
        assert stranger.get(f"/dashboard/loyalty/{card['id']}").status_code == 404
        assert post_form(stranger, "/dashboard/loyalty", f"{path}/void", {}).status_code == 404
        assert "Stamp card" not in stranger.get("/dashboard/loyalty").text
