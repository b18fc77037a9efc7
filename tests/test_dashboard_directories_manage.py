"""Dashboard directory management over real HTTP: moving a category under another parent (three
levels, no cycles, messages shown in the tree), ordering categories, campaigns and loyalty cards
(the order the API and the directory page then show), deleting a directory after a confirmation
step, CSRF refusal and tenancy (another account's IDs answer like missing ones)."""

from __future__ import annotations

import html
from typing import Any

import httpx2
from sqlalchemy import event, select

from conftest import LiveServer, TestAccount
from dashboard_fixtures import YES, post_form, signed_in
from directories_fixtures import create_category, create_directory, make_campaign, v4
from helpers import assert_ok
from loyalty_fixtures import create_card
from opencoupon.models import DirectoryItem
from opencoupon.runtime import Runtime

LISTING = "/dashboard/directories"


def _categories(acc: TestAccount) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in v4(acc, "GET", "/v4/categories").json()}


def _tree_names(acc: TestAccount) -> list[Any]:
    """The v3 tree as nested names, siblings in their order."""

    def names(nodes: list[dict[str, Any]]) -> list[Any]:
        return [(n["name"], names(n["subcategories"])) if n["subcategories"] else n["name"] for n in nodes]

    return names(assert_ok(acc.call("/v3/category/list"))["categories"])


def _follow(web: httpx2.Client, answer: httpx2.Response) -> str:
    assert answer.status_code == 303, answer.text
    return html.unescape(web.get(answer.headers["location"]).text)


def test_move_categories_keeps_three_levels_and_refuses_cycles(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount
) -> None:
    food = create_category(account, "Food")
    pizza = create_category(account, "Pizza", food["id"])
    napoli = create_category(account, "Napoli", pizza["id"])
    drinks = create_category(account, "Drinks")
    theirs = create_category(other_account, "Theirs")
    with signed_in(live_server.url, account.email) as web:
        page = html.unescape(web.get(LISTING).text)
        # A row links to the category's Move page, whose list offers neither the category itself
        # nor anything below it, nor another account's categories.
        food_row = page[
            page.index(f'data-category="{food["id"]}"') : page.index(f'data-category="{pizza["id"]}"')
        ]
        assert f'href="/dashboard/categories/{food["id"]}/move"' in food_row
        assert "<option" not in food_row
        choices = web.get(f"/dashboard/categories/{napoli['id']}/move").text
        assert f'<option value="{drinks["id"]}"' in choices
        for hidden in (napoli, theirs):
            assert f'<option value="{hidden["id"]}"' not in choices
        # Food has two levels below it: only the top level, never under itself or its own.
        choices = web.get(f"/dashboard/categories/{food['id']}/move").text
        for hidden in (food, pizza, napoli, theirs, drinks):
            assert f'<option value="{hidden["id"]}"' not in choices

        moved = post_form(web, LISTING, f"/dashboard/categories/{pizza['id']}/move", {"parent": drinks["id"]})
        assert "Category Pizza moved." in _follow(web, moved)
        tree = _categories(account)
        assert (tree["Pizza"]["parent"], tree["Pizza"]["level"]) == (drinks["id"], 2)
        assert (tree["Napoli"]["level"], tree["Napoli"]["path"]) == (3, "Drinks > Pizza > Napoli")

        # Under its own subcategory, or under itself: a cycle, refused with the message at the category.
        for parent in (napoli["id"], drinks["id"]):
            refused = post_form(
                web, LISTING, f"/dashboard/categories/{drinks['id']}/move", {"parent": parent}
            )
            assert refused.headers["location"].endswith(f"#c-{drinks['id']}")
            shown = _follow(web, refused)
            assert "cannot move under itself or one of its own subcategories" in shown
            row = shown[shown.index(f'id="c-{drinks["id"]}"') :]
            assert row.index('role="alert"') < row.index("</li>")
        # Drinks has two levels below it: under Food it would make a fourth level.
        too_deep = post_form(
            web, LISTING, f"/dashboard/categories/{drinks['id']}/move", {"parent": food["id"]}
        )
        assert "Categories have at most 3 levels." in _follow(web, too_deep)
        assert _categories(account)["Drinks"]["parent"] is None

        # Back to the top level ("" is the top level), taking its subcategory along.
        top = post_form(web, LISTING, f"/dashboard/categories/{pizza['id']}/move", {"parent": ""})
        assert "moved" in _follow(web, top)
        tree = _categories(account)
        assert (tree["Pizza"]["parent"], tree["Pizza"]["level"], tree["Napoli"]["level"]) == (None, 1, 2)

        # No parent field at all: told, nothing changes.
        missing = post_form(web, LISTING, f"/dashboard/categories/{napoli['id']}/move", {})
        assert "Move: choose where the category goes." in _follow(web, missing)
        # Another account's category as the parent answers like a missing one.
        for parent in (theirs["id"], "cat_999999999"):
            refused = post_form(
                web, LISTING, f"/dashboard/categories/{napoli['id']}/move", {"parent": parent}
            )
            assert "Category ID not found." in _follow(web, refused)
        assert _categories(account)["Napoli"]["parent"] == pizza["id"]

        forged = web.post(
            f"/dashboard/categories/{napoli['id']}/move", data={"parent": "", "csrf_token": "x"}
        )
        assert forged.status_code == 403
        assert web.post(f"/dashboard/categories/{napoli['id']}/move", data={"parent": ""}).status_code == 403
        assert _categories(account)["Napoli"]["parent"] == pizza["id"]
        # Their category, and one that does not exist, answer the same 404.
        for category in (theirs["id"], "cat_999999999"):
            assert web.get(f"/dashboard/categories/{category}/move").status_code == 404
            for action in ("move", "up", "down"):
                answer = post_form(web, LISTING, f"/dashboard/categories/{category}/{action}", {"parent": ""})
                assert answer.status_code == 404, (category, action)
    assert _categories(other_account)["Theirs"]["parent"] is None


def test_the_tree_page_grows_linearly_and_moves_through_each_category_page(
    live_server: LiveServer, account: TestAccount
) -> None:
    """The tree lists each category once (no list of every other category in each row), so 40
    categories cost twice the bytes of 20 over the same base; the Move page of one category moves it."""
    made: list[dict[str, Any]] = []

    def tree_bytes(web: httpx2.Client, count: int) -> int:
        while len(made) < count:
            made.append(create_category(account, f"Shelf {len(made):02d}"))
        return len(web.get(LISTING).content)

    with signed_in(live_server.url, account.email) as web:
        sizes = {count: tree_bytes(web, count) for count in (10, 20, 40)}
        per_category = (sizes[20] - sizes[10]) / 10
        # Quadratic growth would make the second 20 cost about three times as much each.
        assert sizes[40] - sizes[20] <= 20 * per_category * 1.1, sizes

        shelf, target = made[5], made[30]
        move_page = f"/dashboard/categories/{shelf['id']}/move"
        assert f'href="{move_page}"' in web.get(LISTING).text
        moved = post_form(web, move_page, move_page, {"parent": target["id"]})
        assert f"Category {shelf['name']} moved." in _follow(web, moved)
        assert _categories(account)[shelf["name"]]["parent"] == target["id"]
        # The target's own page no longer offers the category now below it.
        target_page = web.get(f"/dashboard/categories/{target['id']}/move").text
        assert f'<option value="{shelf["id"]}"' not in target_page


def test_order_categories_up_and_down(live_server: LiveServer, account: TestAccount) -> None:
    for name in ("Alpha", "Bravo", "Charlie"):
        create_category(account, name)
    bravo = _categories(account)["Bravo"]
    create_category(account, "Sub two", bravo["id"])
    create_category(account, "Sub one", bravo["id"])
    assert _tree_names(account) == ["Alpha", ("Bravo", ["Sub one", "Sub two"]), "Charlie"]
    with signed_in(live_server.url, account.email) as web:
        tree = _categories(account)
        done = post_form(web, LISTING, f"/dashboard/categories/{tree['Charlie']['id']}/up", {})
        assert "Category Charlie moved up." in _follow(web, done)
        assert _tree_names(account) == ["Alpha", "Charlie", ("Bravo", ["Sub one", "Sub two"])]
        post_form(web, LISTING, f"/dashboard/categories/{tree['Alpha']['id']}/down", {})
        post_form(web, LISTING, f"/dashboard/categories/{tree['Sub two']['id']}/up", {})
        assert _tree_names(account) == ["Charlie", "Alpha", ("Bravo", ["Sub two", "Sub one"])]
        # The page lists them in that order, without an Up on the first and a Down on the last.
        page = web.get(LISTING).text
        order = [page.index(f'data-category="{tree[n]["id"]}"') for n in ("Charlie", "Alpha", "Bravo")]
        assert order == sorted(order)
        assert f"/dashboard/categories/{tree['Charlie']['id']}/up" not in page
        assert f"/dashboard/categories/{tree['Bravo']['id']}/down" not in page
        assert f"/dashboard/categories/{tree['Bravo']['id']}/up" in page
        # Asking anyway changes nothing and says so.
        first = post_form(web, LISTING, f"/dashboard/categories/{tree['Charlie']['id']}/up", {})
        assert "Category Charlie is already first." in _follow(web, first)
        assert [c["position"] for c in sorted(_categories(account).values(), key=lambda c: c["name"])] == [
            1,
            2,
            0,
            1,
            0,
        ]
        assert (
            web.post(f"/dashboard/categories/{tree['Alpha']['id']}/up", data={"csrf_token": "x"}).status_code
            == 403
        )
    assert _tree_names(account) == ["Charlie", "Alpha", ("Bravo", ["Sub two", "Sub one"])]


def test_up_renumbers_the_siblings_in_one_statement(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """Fresh categories all have position 0: the first Up numbers every sibling, in one UPDATE."""
    names = [f"Shop {n}" for n in range(6)]
    made = [create_category(account, name) for name in names]
    sub = create_category(account, "Under shop 0", made[0]["id"])
    statements: list[str] = []

    def seen(*args: object) -> None:
        statements.append(str(args[2]))

    with signed_in(live_server.url, account.email) as web:
        event.listen(runtime.db.engine, "before_cursor_execute", seen)
        try:
            moved = post_form(web, LISTING, f"/dashboard/categories/{made[-1]['id']}/up", {})
        finally:
            event.remove(runtime.db.engine, "before_cursor_execute", seen)
        assert "Category Shop 5 moved up." in _follow(web, moved)
    assert sum(s.lstrip().upper().startswith("UPDATE CATEGORIES") for s in statements) == 1
    after = _categories(account)
    assert _tree_names(account) == [("Shop 0", ["Under shop 0"]), *names[1:4], "Shop 5", "Shop 4"]
    assert [after[name]["position"] for name in names] == [0, 1, 2, 3, 5, 4]
    # Only the siblings are renumbered: the subcategory keeps its position and time.
    assert after["Under shop 0"]["updated_at"] == sub["updated_at"]


def test_every_view_lists_the_tree_in_the_same_order(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """Siblings by position, then name whatever its case: the API's tree, the dashboard's tree,
    and the directory page's sections and category filter show the same order."""
    beta = create_category(account, "Beta")
    alpha = create_category(account, "alpha")
    mid = create_category(account, "mid", alpha["id"])
    last_by_name = create_category(account, "Zz", alpha["id"])
    assert v4(account, "PATCH", f"/v4/categories/{mid['id']}", position=2).status_code == 200
    assert v4(account, "PATCH", f"/v4/categories/{last_by_name['id']}", position=1).status_code == 200
    assert _tree_names(account) == [("alpha", ["Zz", "mid"]), "Beta"]
    in_order = [c["id"] for c in (alpha, last_by_name, mid, beta)]

    def order_on(page: str, attribute: str) -> list[str]:
        return [i for _, i in sorted((page.index(f'{attribute}="{i}"'), i) for i in in_order)]

    with signed_in(live_server.url, account.email) as web:
        assert order_on(web.get(LISTING).text, "data-category") == in_order
    deals = {c["id"]: make_campaign(runtime, account.id, f"Deal {c['name']}") for c in (beta, mid, alpha)}
    book = create_directory(
        account, campaigns=[{"id": f"cam_{deal.id}", "category": cat} for cat, deal in deals.items()]
    )
    answer = account.client.get(f"/d/{book['code']}", headers={"Accept": "application/json"})
    assert [s["title"] for s in answer.json()["sections"]] == ["alpha", "alpha > mid", "Beta"]
    assert order_on(account.client.get(f"/d/{book['code']}").text, "option value") == in_order


def _order(acc: TestAccount, directory: str) -> list[str]:
    """The directory's campaigns as the API lists them (featured first, then the order)."""
    body = assert_ok(acc.call("/v3/directory/campaigns", directory=directory))
    return [c["name"] for c in body["campaigns"]]


def test_order_campaigns_and_cards_in_a_directory(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    deals = {name: make_campaign(runtime, account.id, name) for name in ("One", "Two", "Three", "Four")}
    cards = [create_card(account, name=name, type="stamp") for name in ("Coffee", "Bread")]
    directory = create_directory(
        account,
        name="Book",
        campaigns=[f"cam_{deals[n].id}" for n in ("One", "Two", "Three", "Four")],
        loyalty_cards=[str(c["id"]) for c in cards],
    )
    path = f"{LISTING}/{directory['id']}"
    with signed_in(live_server.url, account.email) as web:
        moved = post_form(web, path, f"{path}/campaigns/cam_{deals['Three'].id}/up", {})
        assert moved.status_code == 303
        assert moved.headers["location"].endswith("#campaigns")
        assert _order(account, directory["id"]) == ["One", "Three", "Two", "Four"]
        # Featured campaigns come first; ordering happens among the featured and among the others.
        post_form(
            web, path, f"{path}/campaigns/cam_{deals['Four'].id}", {"featured": "1", "status": "active"}
        )
        post_form(web, path, f"{path}/campaigns/cam_{deals['Two'].id}", {"featured": "1", "status": "active"})
        assert _order(account, directory["id"]) == ["Two", "Four", "One", "Three"]
        post_form(web, path, f"{path}/campaigns/cam_{deals['Four'].id}/up", {})
        assert _order(account, directory["id"]) == ["Four", "Two", "One", "Three"]
        # The first of the others does not jump over the featured ones.
        stay = post_form(web, path, f"{path}/campaigns/cam_{deals['One'].id}/up", {})
        assert "Already first." in _follow(web, stay)
        assert _order(account, directory["id"]) == ["Four", "Two", "One", "Three"]
        # The dashboard page and the consumer directory page show that order.
        page = web.get(path).text
        shown = [page.index(f'data-campaign="cam_{deals[n].id}"') for n in ("Four", "Two", "One", "Three")]
        assert shown == sorted(shown)
        assert f"{path}/campaigns/cam_{deals['Four'].id}/up" not in page
        assert f"{path}/campaigns/cam_{deals['One'].id}/up" not in page
        assert f"{path}/campaigns/cam_{deals['Two'].id}/down" not in page
        consumer = web.get(f"/d/{directory['code']}").text
        seen = [consumer.index(n) for n in ("Four", "Two", "One", "Three")]
        assert seen == sorted(seen)
        # Saving the edit form (whose checkboxes list campaigns by name) keeps the order.
        saved = post_form(
            web,
            f"{path}/edit",
            f"{path}/edit",
            {
                "name": "Book",
                "access": "public",
                "campaigns": [f"cam_{deals[n].id}" for n in ("One", "Two", "Three", "Four")],
                "loyalty_cards": [str(c["id"]) for c in cards],
            },
        )
        assert saved.status_code == 303
        assert _order(account, directory["id"]) == ["Four", "Two", "One", "Three"]

        post_form(web, path, f"{path}/cards/{cards[1]['id']}/up", {})
        stored = v4(account, "GET", f"/v4/directory/{directory['id']}").json()
        assert [c["name"] for c in stored["loyalty_cards"]] == ["Bread", "Coffee"]
        last = post_form(web, path, f"{path}/cards/{cards[0]['id']}/down", {})
        assert "Already last." in _follow(web, last)

        forged = web.post(f"{path}/campaigns/cam_{deals['Three'].id}/up", data={"csrf_token": "x"})
        assert forged.status_code == 403
        # Not in this directory, unknown, or malformed: not found.
        outsider = make_campaign(runtime, account.id, "Outsider")
        for item in (f"cam_{outsider.id}", "cam_999999999", "nonsense"):
            assert post_form(web, path, f"{path}/campaigns/{item}/up", {}).status_code == 404
        assert post_form(web, path, f"{path}/cards/999999999/up", {}).status_code == 404

        # A deleted campaign stays in the directory's rows but is shown and ordered nowhere: its
        # neighbours move past it, and it is still there (not silently dropped) afterwards.
        deleted = account.client.delete(f"/v4/campaigns/cam_{deals['One'].id}", headers=account.headers)
        assert deleted.is_success, deleted.text
        page = web.get(path).text
        assert f'data-campaign="cam_{deals["One"].id}"' not in page
        assert f"{path}/campaigns/cam_{deals['Three'].id}/up" not in page  # first of the others now
        assert post_form(web, path, f"{path}/campaigns/cam_{deals['Two'].id}/up", {}).status_code == 303
        assert _order(account, directory["id"]) == ["Two", "Four", "Three"]
        post_form(web, path, f"{path}/campaigns/cam_{deals['Two'].id}/down", {})
        # Left out of the API's answer (deleted campaigns are gone from every call), kept as a row.
        held = [c["id"] for c in v4(account, "GET", f"/v4/directory/{directory['id']}").json()["campaigns"]]
        assert f"cam_{deals['One'].id}" not in held
        with runtime.db.read() as session:
            kept = session.scalars(
                select(DirectoryItem.item_id).where(
                    DirectoryItem.kind == "campaign", DirectoryItem.item_id == deals["One"].id
                )
            ).all()
        assert list(kept) == [deals["One"].id]
    with signed_in(live_server.url, other_account.email) as stranger:
        refused = post_form(stranger, LISTING, f"{path}/campaigns/cam_{deals['Three'].id}/down", {})
        assert refused.status_code == 404
        assert post_form(stranger, LISTING, f"{path}/cards/{cards[0]['id']}/down", {}).status_code == 404
    assert _order(account, directory["id"]) == ["Four", "Two", "Three"]


def test_only_real_directory_actions_have_addresses(
    live_server: LiveServer, account: TestAccount, runtime: Runtime
) -> None:
    """Up/Down of campaigns, cards and categories, grant and revoke, the category changes:
    anything else is not found, and changes nothing."""
    deals = [make_campaign(runtime, account.id, name) for name in ("One", "Two")]
    directory = create_directory(account, campaigns=[f"cam_{d.id}" for d in deals])
    category = create_category(account, "Food")["id"]
    path = f"{LISTING}/{directory['id']}"
    with signed_in(live_server.url, account.email) as web:
        for action in (
            f"{path}/campaigns/cam_{deals[1].id}/top",
            f"{path}/coupons/cam_{deals[1].id}/up",
            f"{path}/cards/1/first",
            f"{path}/users/reg_1/block",
            f"/dashboard/categories/{category}/top",
            f"/dashboard/categories/{category}/new",
        ):
            answer = post_form(web, path, action, YES)
            assert answer.status_code == 404, action
            assert "There is nothing at this address." in answer.text, action
        assert _order(account, directory["id"]) == ["One", "Two"]
        assert _tree_names(account) == ["Food"]
        moved = post_form(web, path, f"{path}/campaigns/cam_{deals[1].id}/up", {})
        assert "Moved up." in _follow(web, moved)
    assert _order(account, directory["id"]) == ["Two", "One"]


def test_delete_a_directory(
    live_server: LiveServer, account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    """Deleting asks first (tests/test_dashboard_confirm.py); confirmed, the directory is gone
    everywhere and its campaigns stay. Another account's directory answers like a missing one."""
    deal = make_campaign(runtime, account.id, "Kept deal")
    directory = create_directory(account, name="Old book", campaigns=[f"cam_{deal.id}"])
    path = f"{LISTING}/{directory['id']}"
    with signed_in(live_server.url, other_account.email) as stranger:
        for data in ({}, YES):
            assert post_form(stranger, LISTING, f"{path}/delete", data).status_code == 404
    with signed_in(live_server.url, account.email) as web:
        assert web.post(f"{path}/delete", data={**YES, "csrf_token": "x"}).status_code == 403
        assert web.post(f"{path}/delete", data=YES).status_code == 403
        assert v4(account, "GET", f"/v4/directory/{directory['id']}").status_code == 200

        done = post_form(web, path, f"{path}/delete", YES)
        assert done.status_code == 303
        assert done.headers["location"].startswith(LISTING + "?")
        listing = html.unescape(web.get(done.headers["location"]).text)
        assert "Directory Old book deleted." in listing
        assert f'href="{path}"' not in listing
        assert v4(account, "GET", f"/v4/directory/{directory['id']}").status_code == 404
        assert web.get(path).status_code == 404
        assert web.get(f"/d/{directory['code']}").status_code == 404
        # The campaign itself stays.
        assert web.get(f"/dashboard/campaigns/cam_{deal.id}").status_code == 200
        # Deleted is missing: a second delete answers 404.
        assert post_form(web, LISTING, f"{path}/delete", YES).status_code == 404


def test_parent_lists_offer_only_categories_that_can_take_the_child(
    live_server: LiveServer, account: TestAccount
) -> None:
    """The new-category form offers levels 1 and 2 only; a Move page offers only the parents under
    which the category and its subcategories stay within three levels (the server refuses the rest)."""
    food = create_category(account, "Food")
    pizza = create_category(account, "Pizza", food["id"])
    napoletana = create_category(account, "Napoletana", pizza["id"])
    drinks = create_category(account, "Drinks")
    tea = create_category(account, "Tea", drinks["id"])
    sweets = create_category(account, "Sweets")

    def offered(page: str, select_id: str) -> set[str]:
        select = page[page.index(f'id="{select_id}"') :]
        select = select[: select.index("</select>")]
        return {part.split('"')[0] for part in select.split('<option value="')[1:]}

    with signed_in(live_server.url, account.email) as web:
        listing = web.get(LISTING).text
        assert offered(listing, "cat-parent") == {
            "",
            food["id"],
            pizza["id"],
            drinks["id"],
            tea["id"],
            sweets["id"],
        }
        assert napoletana["id"] not in offered(listing, "cat-parent")
        # Sweets (no subcategories) can go under a second-level category, not a third-level one.
        sweets_page = web.get(f"/dashboard/categories/{sweets['id']}/move").text
        assert offered(sweets_page, f"mv-{sweets['id']}") == {
            "",
            food["id"],
            pizza["id"],
            drinks["id"],
            tea["id"],
        }
        # Drinks has a level below it: only under a first-level category (or at the top).
        drinks_page = web.get(f"/dashboard/categories/{drinks['id']}/move").text
        assert offered(drinks_page, f"mv-{drinks['id']}") == {"", food["id"], sweets["id"]}
        # Food has two levels below it: only the top level.
        food_page = web.get(f"/dashboard/categories/{food['id']}/move").text
        assert offered(food_page, f"mv-{food['id']}") == {""}
        # Every offered parent is one the server accepts.
        moved = post_form(
            web, LISTING, f"/dashboard/categories/{drinks['id']}/move", {"parent": sweets["id"]}
        )
        assert "Category Drinks moved." in _follow(web, moved)
        assert _categories(account)["Tea"]["path"] == "Sweets > Drinks > Tea"


def test_category_form_messages_and_typed_values(live_server: LiveServer, account: TestAccount) -> None:
    """An empty name asks for a name, a missing category's Move page says the category is not found,
    and the refused new-category form keeps what was typed."""
    food = create_category(account, "Food")
    pizza = create_category(account, "Pizza", food["id"])
    napoli = create_category(account, "Napoli", pizza["id"])
    with signed_in(live_server.url, account.email) as web:
        empty = post_form(web, LISTING, "/dashboard/categories", {"name": "  ", "parent": pizza["id"]})
        assert empty.status_code == 422
        assert "Enter a name." in empty.text
        assert "Missing parameter" not in empty.text
        assert f'<option value="{pizza["id"]}" selected>' in empty.text
        # Refused by the server (a fourth level, posted by hand): the name typed stays.
        deep = post_form(
            web, LISTING, "/dashboard/categories", {"name": "Margherita", "parent": napoli["id"]}
        )
        assert deep.status_code == 422
        assert "Categories have at most 3 levels." in deep.text
        assert 'id="cat-name" name="name" maxlength="200" value="Margherita"' in deep.text
        assert [c["name"] for c in v4(account, "GET", "/v4/categories").json()] == ["Food", "Pizza", "Napoli"]

        renamed = post_form(web, LISTING, f"/dashboard/categories/{food['id']}/rename", {"name": ""})
        assert "Rename: Enter a name." in _follow(web, renamed)
        assert _categories(account)["Food"]["name"] == "Food"

        for missing in ("cat_999", "cat_999999999"):
            move_page = web.get(f"/dashboard/categories/{missing}/move")
            assert move_page.status_code == 404
            assert "There is no such category in your account." in move_page.text
            assert "directory or user" not in move_page.text
