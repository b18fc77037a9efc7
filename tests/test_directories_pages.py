"""The consumer page of a directory: by category, featured first, with search; JSON form."""

from __future__ import annotations

from typing import Any

from directories_fixtures import Browser, create_category, create_directory, make_campaign
from opencoupon.runtime import Runtime


def _book(account: Any, runtime: Runtime) -> dict[str, Any]:
    food = create_category(account, "Food")
    pizza = create_category(account, "Pizza", food["id"])
    beauty = create_category(account, "Beauty")
    margherita = make_campaign(runtime, account.id, "Margherita", description="Two for one pizza")
    espresso = make_campaign(runtime, account.id, "Espresso", description="Free coffee")
    haircut = make_campaign(runtime, account.id, "Haircut", title="Haircut 20% off")
    loose = make_campaign(runtime, account.id, "Mystery deal")
    hidden = make_campaign(runtime, account.id, "Paused deal", status="inactive")
    return create_directory(
        account,
        name="City book",
        description="The best deals in town",
        campaigns=[
            {"id": f"cam_{margherita.id}", "category": pizza["id"]},
            {"id": f"cam_{espresso.id}", "category": food["id"], "featured": True},
            {"id": f"cam_{haircut.id}", "category": beauty["id"]},
            f"cam_{loose.id}",
            f"cam_{hidden.id}",
        ],
    ) | {"categories": {"food": food, "pizza": pizza, "beauty": beauty}}


def _json(browser: Browser, path: str, **params: str) -> dict[str, Any]:
    response = browser.get(path, params=params, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _titles(page: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(s["title"], [c["name"] for c in s["campaigns"]]) for s in page["sections"]]


def test_the_directory_by_category_featured_first(account: Any, runtime: Runtime, browser: Browser) -> None:
    book = _book(account, runtime)
    page = _json(browser, f"/d/{book['code']}")
    assert page["locked"] is False
    assert _titles(page) == [
        ("Featured", ["Espresso"]),
        ("Beauty", ["Haircut"]),
        ("Food > Pizza", ["Margherita"]),
        ("More coupons", ["Mystery deal"]),
    ]
    html = browser.get(f"/d/{book['code']}")
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert html.text.index("Espresso") < html.text.index("Haircut 20% off") < html.text.index("Margherita")
    assert "Paused deal" not in html.text
    assert '<label for="q">Search</label>' in html.text


def test_search_and_category_filter(account: Any, runtime: Runtime, browser: Browser) -> None:
    book = _book(account, runtime)
    path = f"/d/{book['code']}"
    assert _titles(_json(browser, path, q="COFFEE")) == [("Featured", ["Espresso"])]
    assert _titles(_json(browser, path, q="20%")) == [("Beauty", ["Haircut"])]
    # A category name matches too.
    assert _titles(_json(browser, path, q="pizza")) == [("Food > Pizza", ["Margherita"])]
    # A category shows its subcategories' coupons.
    food = book["categories"]["food"]["id"]
    assert _titles(_json(browser, path, category=food)) == [
        ("Featured", ["Espresso"]),
        ("Food > Pizza", ["Margherita"]),
    ]
    assert _titles(_json(browser, path, q="nothing like this")) == []
    no_match = browser.get(path, params={"q": "nothing like this"})
    assert "No coupons match your search." in no_match.text


def test_unknown_directories_and_coupons_are_404_pages(
    account: Any, runtime: Runtime, browser: Browser
) -> None:
    book = _book(account, runtime)
    assert browser.get("/d/nope00").status_code == 404
    assert browser.get("/d/nope00/register").status_code == 404
    assert browser.get(f"/d/{book['code']}/c/cam_999999999").status_code == 404
    assert browser.get(f"/d/{book['code']}/c/garbage").status_code == 404
    other = make_campaign(runtime, account.id, "Not in the book")
    assert browser.get(f"/d/{book['code']}/c/cam_{other.id}").status_code == 404


def test_anonymous_visitors_of_a_public_directory_open_coupons_directly(
    account: Any, runtime: Runtime, browser: Browser
) -> None:
    book = _book(account, runtime)
    page = _json(browser, f"/d/{book['code']}")
    espresso = page["sections"][0]["campaigns"][0]
    answer = browser.get(f"/d/{book['code']}/c/{espresso['id']}")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/p/")
    assert espresso["url"] == f"http://testserver.local/d/{book['code']}/c/{espresso['id']}"


def test_a_masters_directory_shows_a_subaccounts_category_it_files_coupons_under(
    account: Any, subaccount: Any, runtime: Runtime, browser: Browser
) -> None:
    """A master's directory may file a subaccount's campaign under the subaccount's category: the
    page has a section for it (with its parent's name) and its filter selects it."""
    shop = create_category(subaccount, "Shop")
    shelf = create_category(subaccount, "Shelf", shop["id"])
    create_category(subaccount, "Unused")  # not in this directory: not offered
    own = create_category(account, "Group")
    mine = make_campaign(runtime, account.id, "Group deal")
    theirs = make_campaign(runtime, subaccount.id, "Shop deal")
    book = create_directory(
        account,
        name="Group book",
        campaigns=[
            {"id": f"cam_{mine.id}", "category": own["id"]},
            {"id": f"cam_{theirs.id}", "category": shelf["id"]},
        ],
    )
    path = f"/d/{book['code']}"
    assert _titles(_json(browser, path)) == [("Group", ["Group deal"]), ("Shop > Shelf", ["Shop deal"])]
    assert _titles(_json(browser, path, category=shop["id"])) == [("Shop > Shelf", ["Shop deal"])]
    html = browser.get(path).text
    assert "Shop &gt; Shelf" in html
    assert "Unused" not in html
