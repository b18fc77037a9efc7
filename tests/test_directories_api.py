"""The directory calls: v4 management of directories, users and categories, the v3 calls, their
errors, template copies, and tenancy (another account's IDs answer like missing ones)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from conftest import make_account
from directories_fixtures import PAY_URL, create_category, create_directory, create_user, make_campaign, v4
from helpers import assert_error, assert_ok
from opencoupon.directories import repository
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import hash_password
from opencoupon.models import Campaign, DirectoryUser
from opencoupon.runtime import Runtime

# ---- v4 directories --------------------------------------------------------------------------


def test_create_a_directory_answers_201_with_its_id_and_code(account: Any, runtime: Runtime) -> None:
    campaign = make_campaign(runtime, account.id)
    created = create_directory(
        account,
        name="Gold book",
        access="payment",
        payment_url=PAY_URL,
        membership_days=365,
        description="Deals downtown",
        campaigns=[f"cam_{campaign.id}"],
    )
    assert created["id"].startswith("dir_")
    assert len(created["code"]) == 6
    assert created["url"] == f"http://testserver.local/d/{created['code']}"
    assert (created["access"], created["payment_url"], created["membership_days"]) == (
        "payment",
        PAY_URL,
        365,
    )
    assert created["campaigns"] == [
        {"id": f"cam_{campaign.id}", "category": None, "featured": False, "status": "active"}
    ]
    listed = v4(account, "GET", "/v4/directory").json()
    assert [(d["id"], d["name"]) for d in listed] == [(created["id"], "Gold book")]
    assert v4(account, "GET", f"/v4/directory/{created['id']}").json() == created


def test_create_defaults_to_public_and_form_encoding_works(account: Any) -> None:
    response = account.client.post("/v4/directory", data={"name": "Plain"}, headers=account.headers)
    assert response.status_code == 201
    assert response.json()["access"] == "public"


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        ({}, 200, "Missing parameter: name"),
        ({"name": "x", "access": "payment"}, 200, "Missing parameter: payment_url"),
        ({"name": "x", "access": "secret"}, 302, "Value not allowed in parameter: access"),
        ({"name": "x", "payment_url": "javascript:alert(1)"}, 300, "payment_url"),
        # A host no browser can reach, a port past 65535: every registration would be sent there.
        ({"name": "x", "access": "payment", "payment_url": "https://a b.com/"}, 300, "payment_url"),
        ({"name": "x", "access": "payment", "payment_url": "https://a.com:99999/"}, 300, "payment_url"),
        ({"name": "x", "access": "payment", "payment_url": "https://[::1/pay"}, 300, "payment_url"),
        ({"name": "x", "membership_days": -3}, 300, "membership_days"),
        ({"name": "x", "campaigns": ["cam_x1"]}, 301, "Invalid character in parameter: campaigns"),
        ({"name": "x", "campaigns": ["cam_999999999"]}, 502, "Campaign ID not found"),
        ({"name": "x", "loyalty_cards": ["card"]}, 301, "loyalty_cards"),
    ],
)
def test_create_errors(account: Any, body: dict[str, Any], code: int, text: str) -> None:
    response = v4(account, "POST", "/v4/directory", **body)
    answer = assert_error(response, 404 if code >= 500 else 422, code)
    assert text in answer["status"]["errors"]["error_message_description"][0]


def test_update_replaces_items_and_keeps_their_settings(account: Any, runtime: Runtime) -> None:
    a, b, c = (make_campaign(runtime, account.id, n) for n in ("A", "B", "C"))
    food = create_category(account, "Food")
    directory = create_directory(
        account,
        name="Book",
        campaigns=[{"id": f"cam_{a.id}", "featured": True, "category": food["id"]}, f"cam_{b.id}"],
    )
    assert directory["campaigns"][0] == {
        "id": f"cam_{a.id}",
        "category": food["id"],
        "featured": True,
        "status": "active",
    }
    patched = v4(
        account,
        "PATCH",
        f"/v4/directory/{directory['id']}",
        name="Renamed",
        access="login",
        campaigns=[f"cam_{c.id}", f"cam_{a.id}"],
    ).json()
    assert patched["name"] == "Renamed"
    assert patched["access"] == "login"
    # The new order, and campaign A keeps its settings.
    assert [(i["id"], i["featured"], i["category"]) for i in patched["campaigns"]] == [
        (f"cam_{c.id}", False, None),
        (f"cam_{a.id}", True, food["id"]),
    ]
    to_payment = v4(account, "PATCH", f"/v4/directory/{directory['id']}", access="payment")
    assert_error(to_payment, 422, 200)


def test_loyalty_cards_are_checked_only_when_the_loyalty_capability_is_present(account: Any) -> None:
    response = v4(account, "POST", "/v4/directory", name="Cards", loyalty_cards=["999999999"])
    if repository.loyalty_card_model() is None:
        assert response.status_code == 201
        assert response.json()["loyalty_cards"] == [{"id": "999999999", "name": None}]
    else:
        assert_error(response, 404, 508)


def test_delete_hides_the_directory_everywhere(account: Any, browser: Any) -> None:
    directory = create_directory(account, name="Short-lived")
    deleted = v4(account, "DELETE", f"/v4/directory/{directory['id']}")
    assert deleted.json() == {"id": directory["id"], "deleted": True}
    assert_error(v4(account, "GET", f"/v4/directory/{directory['id']}"), 404, 507)
    assert_error(account.call("/v3/directory/info", directory=directory["id"]), 404, 507)
    assert v4(account, "GET", "/v4/directory").json() == []
    assert browser.get(f"/d/{directory['code']}").status_code == 404


# ---- v3 directory calls ----------------------------------------------------------------------


def test_v3_list_info_and_campaigns(account: Any, runtime: Runtime) -> None:
    a = make_campaign(runtime, account.id, "Alpha", description="first")
    b = make_campaign(runtime, account.id, "Bravo")
    food = create_category(account, "Food")
    directory = create_directory(
        account,
        name="Book",
        access="login",
        campaigns=[f"cam_{a.id}", {"id": f"cam_{b.id}", "featured": True, "category": food["id"]}],
    )
    create_user(account, directory["id"], email="one@example.com")
    listed = assert_ok(account.call("/v3/directory/list"))
    assert listed["amount_of_directories"] == "1"
    entry = listed["directories"][0]
    assert (entry["ID"], entry["access"], entry["amount_of_campaigns"], entry["amount_of_users"]) == (
        directory["id"],
        "login",
        "2",
        "1",
    )
    info = assert_ok(account.call("/v3/directory/info", directory=directory["id"]))["directory"]
    assert info["campaigns"] == [f"cam_{a.id}", f"cam_{b.id}"]
    assert info["url"] == directory["url"]
    campaigns = assert_ok(account.call("/v3/directory/campaigns", directory=directory["id"]))
    assert campaigns["amount_of_campaigns"] == "2"
    first, second = campaigns["campaigns"]
    assert (first["ID"], first["featured"], first["category"], first["category_name"]) == (
        f"cam_{b.id}",
        "1",
        food["id"],
        "Food",
    )
    assert (second["ID"], second["featured"], second["description"]) == (f"cam_{a.id}", "0", "first")
    assert second["url"] == f"http://testserver.local/p/{a.code}"


@pytest.mark.parametrize("path", ["/v3/directory/info", "/v3/directory/campaigns", "/v3/directoryusers/list"])
def test_v3_directory_errors(account: Any, other_account: Any, path: str) -> None:
    assert_error(account.call(path), 422, 200)
    assert_error(account.call(path, directory="dir_12ab"), 422, 301)
    unknown = assert_error(account.call(path, directory="dir_999999999"), 404, 507)
    foreign_dir = create_directory(other_account, name="Theirs")
    foreign = assert_error(account.call(path, directory=foreign_dir["id"]), 404, 507)
    assert foreign == unknown


def test_directoryusers_list_pages_by_100_newest_first(account: Any, runtime: Runtime) -> None:
    directory = create_directory(account, name="Big")
    number = int(directory["id"].removeprefix("dir_"))
    start = utcnow() - dt.timedelta(days=1)
    digest = hash_password("x" * 12)
    with runtime.db.transaction() as session:
        session.execute(
            insert(DirectoryUser),
            [
                {
                    "directory_id": number,
                    "account_id": account.id,
                    "email": f"u{i:03d}@example.com",
                    "password_hash": digest,
                    "first_name": "",
                    "last_name": "",
                    "phone": "",
                    "address": "",
                    "zip": "",
                    "city": "",
                    "custom_1": "",
                    "custom_2": "",
                    "custom_3": "",
                    "blocked": False,
                    "payment_status": "pending",
                    "created_at": start + dt.timedelta(minutes=i),
                    "updated_at": start,
                }
                for i in range(101)
            ],
        )
    first = assert_ok(account.call("/v3/directoryusers/list", directory=directory["id"]))
    assert (first["page"], first["amount_of_users"], first["amount_of_pages"]) == ("1", "101", "2")
    assert first["amount_of_results"] == "100"
    assert len(first["users"]) == 100
    assert first["users"][0]["email"] == "u100@example.com"
    assert first["users"][-1]["email"] == "u001@example.com"
    second = assert_ok(account.call("/v3/directoryusers/list", directory=directory["id"], page="2"))
    assert [u["email"] for u in second["users"]] == ["u000@example.com"]
    assert (second["amount_of_users"], second["amount_of_results"]) == ("101", "1")
    assert (
        assert_ok(account.call("/v3/directoryusers/list", directory=directory["id"], page=3))["users"] == []
    )
    assert_error(account.call("/v3/directoryusers/list", directory=directory["id"], page=0), 422, 300)
    assert_error(account.call("/v3/directoryusers/list", directory=directory["id"], page="two"), 422, 300)
    # An empty form field is no page: the first.
    empty = account.client.post(
        "/v3/directoryusers/list", data={"directory": directory["id"], "page": ""}, headers=account.headers
    )
    assert assert_ok(empty)["page"] == "1"
    v4_page = v4(account, "GET", f"/v4/directory/{directory['id']}/users", page=2).json()
    assert [u["email"] for u in v4_page] == ["u000@example.com"]


def test_a_page_number_beyond_any_integer_column_is_refused_not_a_500(account: Any, runtime: Runtime) -> None:
    directory = create_directory(account, name="Paged")
    campaign = make_campaign(runtime, account.id)
    huge = "99999999999999999999"
    listed = assert_error(
        account.call("/v3/directoryusers/list", directory=directory["id"], page=huge), 422, 300
    )
    assert listed["status"]["errors"]["error_message_description"] == ["Invalid value in parameter: page."]
    assert_error(v4(account, "GET", f"/v4/directory/{directory['id']}/users", page=huge), 422, 300)
    # The other paged v3 calls share the parameter's type.
    assert_error(account.call("/v3/campaign/data", campaign=f"cam_{campaign.id}", page=huge), 422, 300)


# ---- /v3/directoryusers/update ---------------------------------------------------------------


def test_the_seed_php_sample_gets_a_clear_missing_parameter_error(account: Any) -> None:
    # The vendor's own sample sends only `directory` and `campaign`.
    response = account.call("/v3/directoryusers/update", directory="dir_12345", campaign="cam_123456")
    body = assert_error(response, 422, 200)
    assert body["status"]["errors"]["error_code"] == [200, 200]
    assert body["status"]["errors"]["error_message_description"] == [
        "Missing parameter: user",
        "Missing parameter: status",
    ]


@pytest.mark.parametrize(
    ("change", "http", "code", "text"),
    [
        ({"status": "paid"}, 422, 302, "Allowed values"),
        ({"expiry_date": "31-12-2030 10:00"}, 422, 303, "Required format: yyyy-mm-dd hh:mm"),
        ({"expiry_date": "2030-12-31"}, 422, 303, "yyyy-mm-dd hh:mm"),
        ({"expiry_date": "2030-13-01 10:00"}, 422, 303, "yyyy-mm-dd hh:mm"),
        ({"directory": "directory"}, 422, 301, "Invalid character in parameter: directory."),
        ({"user": "reg_x"}, 422, 301, "Invalid character in parameter: user."),
        ({"directory": "dir_999999999"}, 404, 507, "Directory ID not found."),
        ({"user": "reg_999999999"}, 404, 511, "Directory user ID not found."),
    ],
)
def test_payment_update_errors(account: Any, change: dict[str, str], http: int, code: int, text: str) -> None:
    directory = create_directory(account, name="Paid", access="payment", payment_url=PAY_URL)
    user = create_user(account, directory["id"], email="err@example.com")
    params = {"directory": directory["id"], "user": user["id"], "status": "completed", **change}
    body = assert_error(account.call("/v3/directoryusers/update", **params), http, code)
    assert text in body["status"]["errors"]["error_message_description"][0]


def test_payment_update_accepts_forms_any_case_and_seconds(account: Any) -> None:
    directory = create_directory(account, name="Paid", access="payment", payment_url=PAY_URL)
    user = create_user(account, directory["id"], email="form@example.com")
    response = account.client.post(
        "/v3/directoryusers/update",
        data={
            "directory": directory["id"],
            "user": user["id"],
            "status": "Completed",
            "expiry_date": "2031-05-06 07:08:09",
        },
        headers=account.headers,
    )
    assert assert_ok(response)["payment_status"] == "completed"
    got = v4(account, "GET", f"/v4/directory/{directory['id']}/users/{user['id']}").json()
    assert (got["payment_status"], got["expires_at"]) == ("completed", "2031-05-06 07:08:09")
    # A bare number is read as the ID, as for every prefixed ID.
    bare = account.call(
        "/v3/directoryusers/update",
        directory=directory["id"].removeprefix("dir_"),
        user=user["id"].removeprefix("reg_"),
        status="pending",
    )
    assert assert_ok(bare)["payment_status"] == "pending"


def test_another_accounts_directory_and_user_answer_like_missing_ones(
    account: Any, other_account: Any
) -> None:
    theirs = create_directory(other_account, name="Theirs", access="payment", payment_url=PAY_URL)
    their_user = create_user(other_account, theirs["id"], email="their@example.com")
    mine = create_directory(account, name="Mine", access="payment", payment_url=PAY_URL)
    unknown_dir = account.call(
        "/v3/directoryusers/update", directory="dir_999999999", user=their_user["id"], status="completed"
    )
    foreign_dir = account.call(
        "/v3/directoryusers/update", directory=theirs["id"], user=their_user["id"], status="completed"
    )
    assert foreign_dir.status_code == unknown_dir.status_code == 404
    assert foreign_dir.json() == unknown_dir.json()
    unknown_user = account.call(
        "/v3/directoryusers/update", directory=mine["id"], user="reg_999999999", status="completed"
    )
    foreign_user = account.call(
        "/v3/directoryusers/update", directory=mine["id"], user=their_user["id"], status="completed"
    )
    assert foreign_user.json() == unknown_user.json()
    assert foreign_user.json()["status"]["errors"]["error_code"] == [511]
    # v4 too: directory, user and category IDs of another account are not found.
    assert (
        v4(account, "GET", f"/v4/directory/{theirs['id']}").json()
        == v4(account, "GET", "/v4/directory/dir_999999999").json()
    )
    assert (
        v4(account, "GET", f"/v4/directory/{mine['id']}/users/{their_user['id']}").json()
        == v4(account, "GET", f"/v4/directory/{mine['id']}/users/reg_999999999").json()
    )
    their_category = create_category(other_account, "Theirs")
    assert_error(v4(account, "GET", f"/v4/categories/{their_category['id']}"), 404, 516)
    assert (
        v4(account, "GET", f"/v4/categories/{their_category['id']}").json()
        == v4(account, "GET", "/v4/categories/cat_999999999").json()
    )
    assert_error(v4(account, "PATCH", f"/v4/directory/{theirs['id']}", name="mine now"), 404, 507)
    assert_error(v4(account, "DELETE", f"/v4/categories/{their_category['id']}"), 404, 516)
    assert their_category["id"] not in [c["id"] for c in v4(account, "GET", "/v4/categories").json()]


def test_a_master_reaches_its_subaccounts_directories_not_the_other_way(
    account: Any, subaccount: Any
) -> None:
    sub_dir = create_directory(subaccount, name="Shop book")
    master_dir = create_directory(account, name="Master book")
    assert {d["id"] for d in v4(account, "GET", "/v4/directory").json()} == {sub_dir["id"], master_dir["id"]}
    assert [d["id"] for d in v4(subaccount, "GET", "/v4/directory").json()] == [sub_dir["id"]]
    assert_error(subaccount.call("/v3/directory/info", directory=master_dir["id"]), 404, 507)
    assert_ok(account.call("/v3/directory/info", directory=sub_dir["id"]))


def test_a_subaccounts_directory_shows_only_its_own_campaigns_cards_and_categories(
    account: Any, subaccount: Any, runtime: Runtime, live_server: Any
) -> None:
    """The master reaches every subaccount's objects, but what it puts in a subaccount's directory
    must be that subaccount's: the directory's page and API answers go to the subaccount. A
    master's own directory may collect its subaccounts' campaigns."""
    sibling = make_account(runtime, live_server, parent_id=account.id)
    own = make_campaign(runtime, subaccount.id, "Own")
    masters = make_campaign(runtime, account.id, "Master's")
    siblings = make_campaign(runtime, sibling.id, "Sibling's")
    master_category = create_category(account, "Master's shelf")
    sub_dir = create_directory(subaccount, name="Shop book", campaigns=[f"cam_{own.id}"])
    path = f"/v4/directory/{sub_dir['id']}"
    for foreign in (masters, siblings):
        assert_error(v4(account, "PATCH", path, campaigns=[f"cam_{own.id}", f"cam_{foreign.id}"]), 404, 502)
    assert_error(
        v4(account, "PATCH", path, campaigns=[{"id": f"cam_{own.id}", "category": master_category["id"]}]),
        404,
        516,
    )
    create = "/v3/directory/campaign/create"
    assert_error(
        account.call(create, directory=sub_dir["id"], template=f"cam_{siblings.id}", name="x"), 404, 502
    )
    assert_error(
        account.call(
            create,
            directory=sub_dir["id"],
            template=f"cam_{own.id}",
            name="x",
            category=master_category["id"],
        ),
        404,
        516,
    )
    listed = assert_ok(subaccount.call("/v3/directory/campaigns", directory=sub_dir["id"]))["campaigns"]
    assert [c["ID"] for c in listed] == [f"cam_{own.id}"]
    # Up the tree is fine: the master's directory shows a subaccount's campaign.
    master_dir = create_directory(
        account, name="Group book", campaigns=[f"cam_{masters.id}", f"cam_{own.id}"]
    )
    assert [c["id"] for c in master_dir["campaigns"]] == [f"cam_{masters.id}", f"cam_{own.id}"]
    sibling.client.close()


def test_directory_campaign_update_gives_a_campaign_only_a_category_its_account_may_hold(
    account: Any, subaccount: Any, runtime: Runtime, live_server: Any
) -> None:
    """directory/campaign/update's `category` is checked against each directory, as PATCH
    /v4/directory checks it: the master's own category files a subaccount's campaign in the
    master's directory, but stays off the campaign's own category (the campaign's answers go to the
    subaccount). A category a holding directory may not show (the subaccount's directory: its
    master's or a sibling's) answers 516 as a missing one; nothing is stored."""
    sibling = make_account(runtime, live_server, parent_id=account.id)
    campaign = make_campaign(runtime, subaccount.id, "Shop coupon")
    own = create_category(subaccount, "Shop shelf")
    group_book = create_directory(
        account, name="Group book", campaigns=[{"id": f"cam_{campaign.id}", "category": own["id"]}]
    )
    shop_book = create_directory(subaccount, name="Shop book", campaigns=[f"cam_{campaign.id}"])
    update = "/v3/directory/campaign/update"
    master_shelf = create_category(account, "Master shelf")
    sibling_shelf = create_category(sibling, "Sibling shelf")
    for foreign in (master_shelf, sibling_shelf):
        for where in ({}, {"directory": shop_book["id"]}):
            refused = account.call(update, campaign=f"cam_{campaign.id}", category=foreign["id"], **where)
            assert_error(refused, 404, 516)
    held = v4(account, "GET", f"/v4/directory/{group_book['id']}").json()["campaigns"]
    assert [c["category"] for c in held] == [own["id"]]
    with runtime.db.read() as session:
        assert session.get(Campaign, campaign.id).category_id is None  # type: ignore[union-attr]
    body = assert_ok(account.call(update, campaign=f"cam_{campaign.id}", category=own["id"]))
    assert body["directories"] == [group_book["id"], shop_book["id"]]
    assert body["campaign"]["category"] == own["id"]
    listed = assert_ok(subaccount.call("/v3/coupon/list", category=own["id"]))["coupon_info"]
    assert [c["ID"] for c in listed] == [f"cam_{campaign.id}"]
    # The master's directory may show any category of the master or its subaccounts, as with v4.
    for shelf in (master_shelf, sibling_shelf):
        body = assert_ok(
            account.call(
                update, campaign=f"cam_{campaign.id}", category=shelf["id"], directory=group_book["id"]
            )
        )
        assert body["campaign"]["category"] == shelf["id"]
        held = v4(account, "GET", f"/v4/directory/{group_book['id']}").json()["campaigns"]
        assert [c["category"] for c in held] == [shelf["id"]]
        # The campaign keeps its own category, and coupon/list still finds it there.
        assert v4(subaccount, "GET", f"/v4/campaigns/cam_{campaign.id}").json()["category"] == own["id"]
        listed = assert_ok(subaccount.call("/v3/coupon/list", category=own["id"]))["coupon_info"]
        assert [c["ID"] for c in listed] == [f"cam_{campaign.id}"]
    sibling.client.close()


# ---- v4 users --------------------------------------------------------------------------------


def test_v4_users_create_get_list_and_block(account: Any) -> None:
    directory = create_directory(account, name="People", access="login")
    user = create_user(
        account,
        directory["id"],
        email="Full@Example.com",
        first_name="Full",
        last_name="User",
        phone="+3212345678",
        birth_date="1990-04-05",
        city="Ghent",
        custom_1="gold",
    )
    assert user["id"].startswith("reg_")
    assert (user["email"], user["birth_date"], user["custom_1"], user["payment_status"]) == (
        "full@example.com",
        "1990-04-05",
        "gold",
        "pending",
    )
    assert user["has_access"] is True
    path = f"/v4/directory/{directory['id']}/users/{user['id']}"
    assert v4(account, "GET", path).json() == user
    assert [u["id"] for u in v4(account, "GET", f"/v4/directory/{directory['id']}/users").json()] == [
        user["id"]
    ]
    blocked = v4(account, "POST", path, block="true").json()
    assert (blocked["blocked"], blocked["has_access"]) == (True, False)
    assert v4(account, "POST", path, block=False).json()["blocked"] is False
    assert_error(v4(account, "POST", path), 422, 200)
    listed = assert_ok(account.call("/v3/directoryusers/list", directory=directory["id"]))["users"][0]
    assert (listed["ID"], listed["blocked"], listed["city"]) == (user["id"], "0", "Ghent")


@pytest.mark.parametrize(
    ("body", "http", "code"),
    [
        ({}, 422, 200),
        ({"email": "not-an-email"}, 422, 305),
        ({"email": "dup@example.com"}, 422, 304),
        ({"email": "b@example.com", "birth_date": "05/04/1990"}, 422, 303),
    ],
)
def test_v4_user_create_errors(account: Any, body: dict[str, Any], http: int, code: int) -> None:
    directory = create_directory(account, name="People")
    create_user(account, directory["id"], email="dup@example.com")
    assert_error(v4(account, "POST", f"/v4/directory/{directory['id']}/users", **body), http, code)


def test_v4_user_calls_on_unknown_users(account: Any) -> None:
    directory = create_directory(account, name="People")
    base = f"/v4/directory/{directory['id']}/users"
    assert_error(v4(account, "GET", f"{base}/reg_999999999"), 404, 511)
    assert_error(v4(account, "POST", f"{base}/reg_999999999/sso"), 404, 511)
    assert_error(v4(account, "POST", f"{base}/reg_999999999/access"), 404, 511)
    assert_error(v4(account, "DELETE", f"{base}/reg_999999999/access"), 404, 511)
    assert_error(v4(account, "GET", f"{base}/reg_abc"), 422, 301)
    user = create_user(account, directory["id"], email="when@example.com")
    assert_error(v4(account, "POST", f"{base}/{user['id']}/access", expires_at="tomorrow"), 422, 303)


# ---- categories ------------------------------------------------------------------------------


def test_categories_go_three_levels_deep(account: Any) -> None:
    food = create_category(account, "Food")
    pizza = create_category(account, "Pizza", food["id"])
    napoli = create_category(account, "Napoletana", pizza["id"])
    assert [c["level"] for c in (food, pizza, napoli)] == [1, 2, 3]
    assert napoli["path"] == "Food > Pizza > Napoletana"
    assert napoli["parent"] == pizza["id"]
    fourth = v4(account, "POST", "/v4/categories", name="Too deep", parent=napoli["id"])
    body = assert_error(fourth, 422, 300)
    assert "at most 3 levels" in body["status"]["errors"]["error_message_description"][0]
    assert_error(v4(account, "POST", "/v4/categories", name="Orphan", parent="cat_999999999"), 404, 516)
    assert_error(v4(account, "POST", "/v4/categories"), 422, 200)

    tree = assert_ok(account.call("/v3/category/list"))
    assert tree["amount_of_categories"] == "1"
    root = tree["categories"][0]
    assert (root["ID"], root["level"], root["parent"]) == (food["id"], "1", "")
    assert root["subcategories"][0]["ID"] == pizza["id"]
    assert root["subcategories"][0]["subcategories"][0]["ID"] == napoli["id"]
    third = assert_ok(account.call("/v3/category/main/list"))
    assert [(c["ID"], c["level"], c["path"]) for c in third["categories"]] == [
        (napoli["id"], "3", "Food > Pizza > Napoletana")
    ]
    flat = v4(account, "GET", "/v4/categories").json()
    assert [c["id"] for c in flat] == [food["id"], pizza["id"], napoli["id"]]


def test_moving_categories_keeps_three_levels_and_no_cycles(account: Any) -> None:
    food = create_category(account, "Food")
    pizza = create_category(account, "Pizza", food["id"])
    create_category(account, "Napoletana", pizza["id"])
    drinks = create_category(account, "Drinks")
    # Pizza (with a child) under Drinks: levels 2 and 3, allowed.
    moved = v4(account, "PATCH", f"/v4/categories/{pizza['id']}", parent=drinks["id"]).json()
    assert (moved["parent"], moved["level"], moved["path"]) == (drinks["id"], 2, "Drinks > Pizza")
    # Drinks (two levels below it) under Food would make a fourth level.
    assert_error(v4(account, "PATCH", f"/v4/categories/{drinks['id']}", parent=food["id"]), 422, 300)
    # Under itself or its own child: refused.
    assert_error(v4(account, "PATCH", f"/v4/categories/{drinks['id']}", parent=pizza["id"]), 422, 300)
    # To the top level with "", then renamed.
    top = v4(account, "PATCH", f"/v4/categories/{pizza['id']}", parent="", name="Pizza!").json()
    assert (top["parent"], top["level"], top["name"]) == (None, 1, "Pizza!")
    levels = {c["name"]: c["level"] for c in v4(account, "GET", "/v4/categories").json()}
    assert levels == {"Food": 1, "Drinks": 1, "Pizza!": 1, "Napoletana": 2}


def test_deleting_a_category_removes_its_subtree_and_clears_references(
    account: Any, runtime: Runtime
) -> None:
    food = create_category(account, "Food")
    pizza = create_category(account, "Pizza", food["id"])
    campaign = make_campaign(runtime, account.id, "Slice")
    directory = create_directory(
        account, name="Book", campaigns=[{"id": f"cam_{campaign.id}", "category": pizza["id"]}]
    )
    assert_ok(
        account.call("/v3/directory/campaign/update", campaign=f"cam_{campaign.id}", category=pizza["id"])
    )
    deleted = v4(account, "DELETE", f"/v4/categories/{food['id']}").json()
    assert set(deleted["deleted"]) == {food["id"], pizza["id"]}
    assert v4(account, "GET", "/v4/categories").json() == []
    assert v4(account, "GET", f"/v4/directory/{directory['id']}").json()["campaigns"][0]["category"] is None
    with runtime.db.read() as session:
        assert session.scalar(select(Campaign.category_id).where(Campaign.id == campaign.id)) is None


def test_a_subaccount_deleting_its_category_clears_it_from_its_masters_campaigns(
    account: Any, subaccount: Any, runtime: Runtime
) -> None:
    """A master's campaign may hold a subaccount's category; when the subaccount deletes it, the
    master's campaign loses it too (it named a category that no longer exists before)."""
    shelf = create_category(subaccount, "Shop shelf")
    masters = make_campaign(runtime, account.id, "Group coupon")
    patched = v4(account, "PATCH", f"/v4/campaigns/cam_{masters.id}", category=shelf["id"])
    assert patched.json()["category"] == shelf["id"]
    assert v4(subaccount, "DELETE", f"/v4/categories/{shelf['id']}").status_code == 200
    assert v4(account, "GET", f"/v4/campaigns/cam_{masters.id}").json()["category"] is None
    with runtime.db.read() as session:
        assert session.get(Campaign, masters.id).category_id is None  # type: ignore[union-attr]


def test_deleting_a_category_clears_it_from_every_accounts_campaigns(
    account: Any, runtime: Runtime, live_server: Any
) -> None:
    """A campaign saved before categories were checked may hold another account's category; it
    loses it too, or a reused ID would file it under a stranger's category."""
    stranger = make_account(runtime, live_server)
    shelf = create_category(account, "Shelf")
    strangers = make_campaign(runtime, stranger.id, "Old coupon")
    with runtime.db.transaction() as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == strangers.id)
            .values(category_id=int(shelf["id"].removeprefix("cat_")))
        )
    assert v4(account, "DELETE", f"/v4/categories/{shelf['id']}").status_code == 200
    with runtime.db.read() as session:
        assert session.get(Campaign, strangers.id).category_id is None  # type: ignore[union-attr]
    stranger.client.close()


# ---- template copies and directory campaign settings -----------------------------------------


def test_directory_campaign_create_copies_the_template(account: Any, runtime: Runtime) -> None:
    template = make_campaign(
        runtime,
        account.id,
        "Template",
        title="10% off",
        description="Show this at the till",
        terms="One per visit",
        kind="template",
        status="inactive",
        settings={"colour": "red"},
        opens_count=42,
    )
    directory = create_directory(account, name="Book")
    pizza = create_category(account, "Pizza")
    body = assert_ok(
        account.call(
            "/v3/directory/campaign/create",
            directory=directory["id"],
            template=f"cam_{template.id}",
            name="Luigi's 10% off",
            category=pizza["id"],
        )
    )
    created = body["campaign"]
    assert created["ID"] != f"cam_{template.id}"
    assert (created["name"], created["directory"], created["category"], created["template"]) == (
        "Luigi's 10% off",
        directory["id"],
        pizza["id"],
        f"cam_{template.id}",
    )
    assert len(created["code"]) == 6
    assert created["code"] != template.code
    with runtime.db.read() as session:
        copy = session.get(Campaign, int(created["ID"].removeprefix("cam_")))
        assert copy is not None
        assert (copy.title, copy.description, copy.terms, copy.settings) == (
            "10% off",
            "Show this at the till",
            "One per visit",
            {"colour": "red"},
        )
        assert (copy.kind, copy.status, copy.opens_count, copy.account_id) == (
            "coupon",
            "active",
            0,
            account.id,
        )
    campaigns = assert_ok(account.call("/v3/directory/campaigns", directory=directory["id"]))["campaigns"]
    assert [c["ID"] for c in campaigns] == [created["ID"]]


def test_a_template_copy_counts_against_the_owners_max_campaigns(
    account: Any, subaccount: Any, runtime: Runtime
) -> None:
    """A copy made in a subaccount's directory is the subaccount's campaign: past the
    max_campaigns its master set, it is refused (309) like any other new campaign."""
    sub_id = f"sub_{subaccount.id}"
    directory = create_directory(subaccount, name="Shop")
    template = make_campaign(runtime, subaccount.id, "Template", kind="template")
    assert_ok(account.call("/v4/subaccount/update", subaccount=sub_id, max_campaigns=2))
    path = "/v3/directory/campaign/create"
    fields = {"directory": directory["id"], "template": f"cam_{template.id}"}
    assert_ok(account.call(path, name="Copy", **fields))
    refused = assert_error(account.call(path, name="Copy 2", **fields), 422, 309)
    assert "at most 2 campaigns" in refused["status"]["errors"]["error_message_description"][0]
    with runtime.db.read() as session:
        names = session.scalars(select(Campaign.name).where(Campaign.account_id == subaccount.id)).all()
    assert sorted(names) == ["Copy", "Template"]


def test_directory_campaign_create_errors(account: Any, other_account: Any, runtime: Runtime) -> None:
    directory = create_directory(account, name="Book")
    mine = make_campaign(runtime, account.id, "Mine")
    theirs = make_campaign(runtime, other_account.id, "Theirs")
    path = "/v3/directory/campaign/create"
    body = assert_error(account.call(path, directory=directory["id"]), 422, 200)
    assert body["status"]["errors"]["error_message_description"] == [
        "Missing parameter: template",
        "Missing parameter: name",
    ]
    assert_error(
        account.call(path, directory=directory["id"], template=f"cam_{theirs.id}", name="x"), 404, 502
    )
    assert_error(account.call(path, directory="dir_999999999", template=f"cam_{mine.id}", name="x"), 404, 507)
    assert_error(
        account.call(
            path, directory=directory["id"], template=f"cam_{mine.id}", name="x", category="cat_999999999"
        ),
        404,
        516,
    )


def test_directory_campaign_update(account: Any, runtime: Runtime, browser: Any) -> None:
    campaign = make_campaign(runtime, account.id, "Updatable")
    directory = create_directory(account, name="Book", campaigns=[f"cam_{campaign.id}"])
    drinks = create_category(account, "Drinks")
    body = assert_ok(
        account.call(
            "/v3/directory/campaign/update",
            campaign=f"cam_{campaign.id}",
            status="inactive",
            description="New text",
            category=drinks["id"],
            featured="1",
        )
    )
    assert (body["campaign"]["status"], body["campaign"]["featured"], body["campaign"]["category"]) == (
        "inactive",
        "1",
        drinks["id"],
    )
    assert body["campaign"]["description"] == "New text"
    assert body["directories"] == [directory["id"]]
    # Inactive: gone from the consumer page.
    page = browser.get(f"/d/{directory['code']}", headers={"Accept": "application/json"}).json()
    assert page["sections"] == []
    assert browser.get(f"/d/{directory['code']}/c/cam_{campaign.id}").status_code == 404
    assert_ok(account.call("/v3/directory/campaign/update", campaign=f"cam_{campaign.id}", status="active"))
    page = browser.get(f"/d/{directory['code']}", headers={"Accept": "application/json"}).json()
    assert [s["title"] for s in page["sections"]] == ["Featured"]
    # Errors.
    assert_error(account.call("/v3/directory/campaign/update"), 422, 200)
    assert_error(
        account.call("/v3/directory/campaign/update", campaign=f"cam_{campaign.id}", status="gone"), 422, 302
    )
    loose = make_campaign(runtime, account.id, "In no directory")
    assert_error(
        account.call("/v3/directory/campaign/update", campaign=f"cam_{loose.id}", featured=True), 404, 502
    )
