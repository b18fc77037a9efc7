"""Dashboard directory editing over real HTTP: create and edit a directory (access, payment URL,
membership length, campaigns and loyalty cards), the category tree (create under a parent, rename,
delete, a fourth level refused), a campaign's category/featured/status in a directory, with
server-side validation, CSRF refusal and tenancy."""

from __future__ import annotations

from typing import Any

from conftest import LiveServer, TestAccount
from dashboard_fixtures import YES, browser_fields, post_form, signed_in
from directories_fixtures import create_category, create_directory, make_campaign, v4
from loyalty_fixtures import create_card
from opencoupon.runtime import Runtime

NEW = "/dashboard/directories-new"


def _directory(acc: TestAccount, public_id: str) -> dict[str, Any]:
    answer = v4(acc, "GET", f"/v4/directory/{public_id}")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def test_create_and_edit_a_directory(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    first = make_campaign(runtime, account.id, "First deal")
    second = make_campaign(runtime, account.id, "Second deal")
    theirs = make_campaign(runtime, other_account.id, "Their deal")
    card = create_card(account, name="Coffee card", type="stamp")
    with signed_in(live_server.url, account.email) as web:
        form = web.get(NEW).text
        assert "First deal" in form
        assert "Coffee card" in form
        assert "Their deal" not in form
        bad = post_form(web, NEW, NEW, {"name": "", "access": "public"})
        assert bad.status_code == 422
        assert "Name: enter" in bad.text
        bad = post_form(web, NEW, NEW, {"name": "Paid book", "access": "payment"})
        assert bad.status_code == 422
        assert "payment_url" in bad.text
        assert 'value="Paid book"' in bad.text
        bad = post_form(web, NEW, NEW, {"name": "Book", "access": "public", "membership_days": "long"})
        assert bad.status_code == 422
        assert "whole number" in bad.text
        bad = post_form(web, NEW, NEW, {"name": "Book", "access": "secret"})
        assert bad.status_code == 422
        assert "Access:" in bad.text
        bad = post_form(
            web, NEW, NEW, {"name": "Book", "access": "public", "campaigns": [f"cam_{theirs.id}"]}
        )
        assert bad.status_code == 422
        made = post_form(
            web,
            NEW,
            NEW,
            {
                "name": "City book",
                "access": "payment",
                "payment_url": "https://pay.example.com/",
                "membership_days": "365",
                "campaigns": [f"cam_{first.id}", f"cam_{second.id}"],
                "loyalty_cards": [str(card["id"])],
            },
        )
        assert made.status_code == 303, made.text
        path = made.headers["location"]
        public_id = path.rsplit("/", 1)[1]
        stored = _directory(account, public_id)
        assert stored["access"] == "payment"
        assert stored["membership_days"] == 365
        assert [c["id"] for c in stored["campaigns"]] == [f"cam_{first.id}", f"cam_{second.id}"]
        assert [c["id"] for c in stored["loyalty_cards"]] == [str(card["id"])]

        edit = web.get(path + "/edit").text
        assert 'value="365"' in edit
        assert "https://pay.example.com/" in edit
        saved = post_form(
            web,
            path + "/edit",
            path + "/edit",
            {"name": "Town book", "access": "login", "campaigns": [f"cam_{second.id}"]},
        )
        assert saved.status_code == 303, saved.text
        stored = _directory(account, public_id)
        assert stored["name"] == "Town book"
        assert stored["access"] == "login"
        assert stored["membership_days"] is None
        assert [c["id"] for c in stored["campaigns"]] == [f"cam_{second.id}"]
        assert stored["loyalty_cards"] == []
        forged = web.post(path + "/edit", data={"name": "Forged", "access": "public", "csrf_token": "x"})
        assert forged.status_code == 403
        assert web.post(NEW, data={"name": "Forged", "csrf_token": "x"}).status_code == 403
        assert _directory(account, public_id)["name"] == "Town book"
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(path + "/edit").status_code == 404
        refused = post_form(
            stranger, "/dashboard/directories", path + "/edit", {"name": "Mine", "access": "public"}
        )
        assert refused.status_code == 404
    assert _directory(account, public_id)["name"] == "Town book"


def test_category_tree_and_campaign_settings(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    plain = make_campaign(runtime, account.id, "Plain deal")
    star = make_campaign(runtime, account.id, "Star deal")
    listing = "/dashboard/directories"
    with signed_in(live_server.url, account.email) as web:
        empty = post_form(web, listing, "/dashboard/categories", {"name": "", "parent": ""})
        assert empty.status_code == 422
        assert "Enter a name." in empty.text
        for name, parent_name in (("Food", ""), ("Pizza", "Food"), ("Napoli", "Pizza")):
            tree = {c["name"]: c["id"] for c in v4(account, "GET", "/v4/categories").json()}
            done = post_form(
                web, listing, "/dashboard/categories", {"name": name, "parent": tree.get(parent_name, "")}
            )
            assert "done=" in done.headers["location"], done.headers["location"]
        tree = {c["name"]: c for c in v4(account, "GET", "/v4/categories").json()}
        assert tree["Napoli"]["level"] == 3
        too_deep = post_form(
            web, listing, "/dashboard/categories", {"name": "Slice", "parent": tree["Napoli"]["id"]}
        )
        assert too_deep.status_code == 422
        assert "at most 3 levels" in too_deep.text
        # Refused, not created: the name is still in the form, in no row of the tree.
        assert 'value="Slice"' in too_deep.text
        assert "Slice" not in web.get(listing).text
        napoli = tree["Napoli"]["id"]
        post_form(web, listing, f"/dashboard/categories/{napoli}/rename", {"name": "Naples"})
        assert "Naples" in web.get(listing).text

        directory_page = "/dashboard/directories-new"
        made = post_form(
            web,
            directory_page,
            directory_page,
            {"name": "Book", "access": "public", "campaigns": [f"cam_{plain.id}", f"cam_{star.id}"]},
        )
        path = made.headers["location"]
        public_id = path.rsplit("/", 1)[1]
        page = web.get(path).text
        assert page.index("Plain deal") < page.index("Star deal")
        settings = f"{path}/campaigns/cam_{star.id}"
        bad = post_form(web, path, settings, {"category": napoli, "featured": "1", "status": "paused"})
        assert "problem=" in bad.headers["location"]
        saved = post_form(web, path, settings, {"category": napoli, "featured": "1", "status": "inactive"})
        assert "done=" in saved.headers["location"]
        page = web.get(path).text
        assert page.index("Star deal") < page.index("Plain deal")
        assert "Food &gt; Pizza &gt; Naples" in page
        item = next(c for c in _directory(account, public_id)["campaigns"] if c["id"] == f"cam_{star.id}")
        assert item == {"id": f"cam_{star.id}", "category": napoli, "featured": True, "status": "inactive"}
        assert web.post(settings, data={"status": "active", "csrf_token": "x"}).status_code == 403
        assert web.post("/dashboard/categories", data={"name": "X", "csrf_token": "x"}).status_code == 403

        food = tree["Food"]["id"]
        post_form(web, listing, f"/dashboard/categories/{food}/delete", YES)
        assert v4(account, "GET", "/v4/categories").json() == []
        item = next(c for c in _directory(account, public_id)["campaigns"] if c["id"] == f"cam_{star.id}")
        assert item["category"] is None
    theirs = create_category(other_account, "Theirs")
    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(path).status_code == 404
        assert post_form(stranger, listing, settings, {"status": "active"}).status_code == 404
    with signed_in(live_server.url, account.email) as web:
        refused = post_form(web, listing, f"/dashboard/categories/{theirs['id']}/rename", {"name": "Mine"})
        assert refused.status_code == 404
        refused = post_form(web, listing, f"/dashboard/categories/{theirs['id']}/delete", YES)
        assert refused.status_code == 404
    assert [c["name"] for c in v4(other_account, "GET", "/v4/categories").json()] == ["Theirs"]


def test_saving_the_edit_form_unchanged_keeps_the_campaigns_order(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """The directory's campaigns keep their stored order when the edit form is saved as shown:
    a featured campaign is not moved ahead of the others (featured first is how pages show them),
    so unfeaturing it later puts it back in its place."""
    deals = [make_campaign(runtime, account.id, f"Deal {n}") for n in range(4)]
    ids = [f"cam_{deal.id}" for deal in deals]
    made = create_directory(account, name="Town book", access="public", campaigns=ids)
    public_id = made["id"]

    def feature(campaign: str, featured: str) -> None:
        body = {"directory": public_id, "campaign": campaign, "featured": featured}
        answer = account.client.post("/v3/directory/campaign/update", data=body, headers=account.headers)
        assert answer.status_code == 200, answer.text

    feature(ids[0], "true")
    feature(ids[3], "true")
    edit = f"/dashboard/directories/{public_id}/edit"
    with signed_in(live_server.url, account.email) as web:
        saved = web.post(edit, data=browser_fields(web.get(edit).text, ""))
        assert saved.status_code == 303, saved.text
    assert [c["id"] for c in _directory(account, public_id)["campaigns"]] == ids
    feature(ids[3], "false")
    assert [c["id"] for c in _directory(account, public_id)["campaigns"]] == ids
