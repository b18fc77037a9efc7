"""Dashboard directory pages over real HTTP: campaigns with category path and featured first,
the three-level category tree, users with payment status and expiry, grant and revoke access by
hand (server-side date check), CSRF and tenancy."""

from __future__ import annotations

from conftest import LiveServer, TestAccount
from dashboard_fixtures import YES, post_form, signed_in
from directories_fixtures import create_category, create_directory, create_user, make_campaign
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
        assert "problem=" in bad.headers["location"]
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
