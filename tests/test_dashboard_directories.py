"""Dashboard directory pages over real HTTP: campaigns with category path and featured first,
the three-level category tree, users with payment status and expiry, grant and revoke access by
hand (server-side date check), CSRF and tenancy."""

from __future__ import annotations

import json

from sqlalchemy import select

from conftest import LiveServer, TestAccount
from dashboard_fixtures import YES, post_form, signed_in
from directories_fixtures import Browser, create_category, create_directory, create_user, make_campaign, v4
from opencoupon.models import Event
from opencoupon.runtime import Runtime


def test_directory_items_tree_users_and_access(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    food = create_category(account, "Food")
    pizza = create_category(account, "Pizza", food["id"])
    napoli = create_category(account, "Napoli", pizza["id"])
    plain = make_campaign(runtime, account.id, "Plain deal")
    star = make_campaign(runtime, account.id, "Star deal")
    directory = create_directory(
        account,
        name="City book",
        access="payment",
        payment_url="https://pay.example.com/",
        campaigns=[
            {"id": f"cam_{plain.id}"},
            {"id": f"cam_{star.id}", "featured": True, "category": napoli["id"]},
        ],
    )
    user = create_user(account, directory["id"], email="reader@example.com", password="reader-pass-1")
    path = f"/dashboard/directories/{directory['id']}"
    with signed_in(live_server.url, account.email) as web:
        listing = web.get("/dashboard/directories").text
        assert "City book" in listing
        assert "Napoli" in listing
        assert "dash-level-3" in listing
        page = web.get(path).text
        assert page.index("Star deal") < page.index("Plain deal")
        assert "featured" in page
        assert "Food / Pizza / Napoli" in page or "Napoli" in page
        row = page.split(f'data-user="{user["id"]}"')[1].split("</tr>")[0]
        assert "<td>no</td>" in row

        bad = post_form(web, path, f"{path}/users/{user['id']}/grant", {"expires_at": "next week"})
        assert bad.status_code == 422
        assert 'role="alert"' in bad.text
        # The Grant form keeps what was typed, for this user only.
        assert f'id="exp-{user["id"]}" name="expires_at" value="next week"' in bad.text
        granted = post_form(
            web, path, f"{path}/users/{user['id']}/grant", {"expires_at": "2099-01-01 00:00:00"}
        )
        page = web.get(granted.headers["location"]).text
        row = page.split(f'data-user="{user["id"]}"')[1].split("</tr>")[0]
        assert "Access granted." in page
        assert "2099-01-01" in row
        assert "<td>yes</td>" in row
        assert "completed" in row
        revoked = post_form(web, path, f"{path}/users/{user['id']}/revoke", YES)
        row = (
            web.get(revoked.headers["location"]).text.split(f'data-user="{user["id"]}"')[1].split("</tr>")[0]
        )
        assert "<td>no</td>" in row
        assert "cancelled" in row
        assert web.post(f"{path}/users/{user['id']}/grant", data={"csrf_token": "x"}).status_code == 403
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(path).status_code == 404
        assert (
            post_form(stranger, "/dashboard/directories", f"{path}/users/{user['id']}/grant", {}).status_code
            == 404
        )
        assert "City book" not in stranger.get("/dashboard/directories").text


def test_a_users_page_number_too_large_for_the_database_answers_a_page_not_a_500(
    live_server: LiveServer, account: TestAccount
) -> None:
    directory = create_directory(account, name="Paged book")
    with signed_in(live_server.url, account.email) as web:
        page = web.get(f"/dashboard/directories/{directory['id']}?page=99999999999999999999")
        assert page.status_code == 200, page.text
        assert "Paged book" in page.text


def test_revoke_in_a_login_directory_locks_the_user_until_granted_again(
    live_server: LiveServer, account: TestAccount, runtime: Runtime, browser: Browser
) -> None:
    """A login directory opens for every registered user, but Revoke (payment status cancelled)
    takes that away, on the coupon pages and in every view of the user's access; Grant gives it
    back, until its date when it has one."""
    campaign = make_campaign(runtime, account.id, "Members deal")
    directory = create_directory(account, name="Members", access="login", campaigns=[f"cam_{campaign.id}"])
    code, coupon = directory["code"], f"/d/{directory['code']}/c/cam_{campaign.id}"
    assert browser.register(code, "member@example.com").status_code == 303
    assert browser.get(coupon).headers["location"].startswith(f"/p/{campaign.code}/")
    user = v4(account, "GET", f"/v4/directory/{directory['id']}/users").json()[0]
    assert user["has_access"] is True
    path = f"/dashboard/directories/{directory['id']}"
    with signed_in(live_server.url, account.email) as web:
        revoked = post_form(web, path, f"{path}/users/{user['id']}/revoke", YES)
        row = web.get(revoked.headers["location"]).text.split(f'data-user="{user["id"]}"')[1]
        assert "<td>no</td>" in row.split("</tr>")[0]
        locked = browser.get(coupon)
        assert locked.status_code == 403
        assert "revoked" in locked.text
        as_json = browser.get(f"/d/{code}", headers={"Accept": "application/json"}).json()
        assert (as_json["locked"], as_json["reason"], as_json["payment_url"]) == (True, "revoked", "")
        api = v4(account, "GET", f"/v4/directory/{directory['id']}/users/{user['id']}").json()
        assert (api["payment_status"], api["has_access"]) == ("cancelled", False)

        granted = post_form(web, path, f"{path}/users/{user['id']}/grant", {"expires_at": ""})
        assert "Access granted." in web.get(granted.headers["location"]).text
        assert browser.get(coupon).headers["location"].startswith(f"/p/{campaign.code}/")
        # Granted until a date that has passed: locked again, and the page says since when.
        post_form(web, path, f"{path}/users/{user['id']}/grant", {"expires_at": "2001-01-01 00:00:00"})
        ended = browser.get(coupon)
        assert ended.status_code == 403
        assert "2001-01-01 00:00:00" in ended.text


def test_access_changed_on_the_dashboard_is_labelled_as_the_owners_own_change(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """The directory_payment_status_changed event of a grant or revoke made with the dashboard's
    buttons said `source: api_v4`, like the payment provider's call: an audit could not tell an
    owner's manual change from a payment. It now says `dashboard`; the v4 call keeps `api_v4`."""
    directory = create_directory(
        account, name="Paid book", access="payment", payment_url="https://pay.example.com/"
    )
    user = create_user(account, directory["id"], email="payer@example.com", password="payer-pass-1")
    path = f"/dashboard/directories/{directory['id']}"
    with signed_in(live_server.url, account.email) as web:
        post_form(web, path, f"{path}/users/{user['id']}/grant", {"expires_at": ""})
        post_form(web, path, f"{path}/users/{user['id']}/revoke", YES)
    assert (
        v4(account, "POST", f"/v4/directory/{directory['id']}/users/{user['id']}/access").status_code == 200
    )
    with runtime.db.read() as session:
        changes = session.scalars(
            select(Event.data)
            .where(Event.account_id == account.id, Event.type == "directory_payment_status_changed")
            .order_by(Event.id)
        ).all()
    found = [(json.loads(data)["payment_status"], json.loads(data)["source"]) for data in changes]
    assert found[-3:] == [("completed", "dashboard"), ("cancelled", "dashboard"), ("completed", "api_v4")]
