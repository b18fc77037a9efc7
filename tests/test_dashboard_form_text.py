"""Text typed into dashboard forms is saved as typed or refused, never changed on the way: an
over-long name or description is refused with a message (it was cut where it is stored while the
page said saved), NUL is refused as the API refuses it (code 301), and a subaccount's password
keeps its spaces, as sign-in reads it."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import unquote_plus

import pytest

from conftest import LiveServer, TestAccount
from dashboard_fixtures import post_form, signed_in
from directories_fixtures import create_directory, v4
from foundation_fixtures import browser, sign_in

NEW_CARD = "/dashboard/loyalty-cards/new"
NEW_DIRECTORY = "/dashboard/directories-new"
TREE = "/dashboard/directories"
WEBHOOKS = "/dashboard/webhooks"
SUBS = "/dashboard/subaccounts"
HOOK = "https://example.com/hook"

CARD = {"type": "stamp", "active": "1", "join_fields": ["email"]}
DIRECTORY = {"access": "public"}
ENDPOINT = {"url": HOOK, "events": ["coupon_validated"]}


def _webhook(account: TestAccount) -> str:
    made = v4(account, "POST", "/v4/webhooks", url=HOOK, events=["coupon_validated"], description="kept")
    assert made.status_code == 201, made.text
    return f"{WEBHOOKS}/{made.json()['id']}"


def _category(account: TestAccount) -> str:
    made = v4(account, "POST", "/v4/categories", name="Kept")
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _refused_form(answer: Any, message: str) -> None:
    """A form answered again (422) with `message` above it."""
    assert answer.status_code == 422, answer.text[:500]
    assert message in answer.text


def _refused_redirect(web: Any, answer: Any, message: str) -> None:
    """A post answered by its page with `message` as the problem."""
    assert answer.status_code == 303, answer.text[:500]
    location = answer.headers["location"]
    assert message in unquote_plus(location)
    assert message in web.get(location).text


TOO_LONG = [
    ("card name", NEW_CARD, NEW_CARD, {**CARD, "name": "n" * 201}, "Name: use at most 200 characters."),
    (
        "card description",
        NEW_CARD,
        NEW_CARD,
        {**CARD, "name": "Card", "description": "d" * 100_000},
        "Description: use at most 2000 characters.",
    ),
    (
        "directory name",
        NEW_DIRECTORY,
        NEW_DIRECTORY,
        {**DIRECTORY, "name": "n" * 100_000},
        "Name: use at most 200 characters.",
    ),
    (
        "directory description",
        NEW_DIRECTORY,
        NEW_DIRECTORY,
        {**DIRECTORY, "name": "Book", "description": "d" * 5001},
        "Description: use at most 5000 characters.",
    ),
    (
        "category name",
        TREE,
        "/dashboard/categories",
        {"name": "n" * 201},
        "Name: use at most 200 characters.",
    ),
    (
        "webhook description",
        WEBHOOKS,
        WEBHOOKS,
        {**ENDPOINT, "description": "d" * 201},
        "Description: use at most 200 characters.",
    ),
]


@pytest.mark.parametrize(
    ("what", "page", "action", "fields", "message"), TOO_LONG, ids=[c[0] for c in TOO_LONG]
)
def test_an_over_long_value_is_refused_not_cut(
    live_server: LiveServer,
    account: TestAccount,
    what: str,
    page: str,
    action: str,
    fields: dict[str, Any],
    message: str,
) -> None:
    with signed_in(live_server.url, account.email) as web:
        _refused_form(post_form(web, page, action, fields), message)


def test_an_over_long_change_is_refused_not_cut(live_server: LiveServer, account: TestAccount) -> None:
    """The edit forms that answer with a redirect: the category's rename, the endpoint's settings."""
    category = _category(account)
    endpoint = _webhook(account)
    directory = create_directory(account)["id"]
    with signed_in(live_server.url, account.email) as web:
        renamed = post_form(web, TREE, f"/dashboard/categories/{category}/rename", {"name": "n" * 201})
        _refused_redirect(web, renamed, "Rename: use at most 200 characters.")
        edited = post_form(
            web, endpoint, f"{endpoint}/edit", {"events": ["coupon_validated"], "description": "d" * 201}
        )
        _refused_redirect(web, edited, "Description: use at most 200 characters.")
        edit = f"/dashboard/directories/{directory}/edit"
        _refused_form(
            post_form(web, edit, edit, {**DIRECTORY, "name": "n" * 201}), "Name: use at most 200 characters."
        )
    names = {c["id"]: c["name"] for c in v4(account, "GET", "/v4/categories").json()}
    assert names[category] == "Kept"
    assert v4(account, "GET", f"/v4/webhooks/{endpoint.rsplit('/', 1)[1]}").json()["description"] == "kept"


WITH_NUL = [
    ("card name", NEW_CARD, NEW_CARD, {**CARD, "name": "Ca\x00rd"}, "Invalid character in parameter: name."),
    (
        "directory name",
        NEW_DIRECTORY,
        NEW_DIRECTORY,
        {**DIRECTORY, "name": "Bo\x00ok"},
        "Invalid character in parameter: name.",
    ),
    (
        "category name",
        TREE,
        "/dashboard/categories",
        {"name": "Ca\x00t"},
        "Invalid character in parameter: name.",
    ),
    (
        "webhook description",
        WEBHOOKS,
        WEBHOOKS,
        {**ENDPOINT, "description": "sh\x00op"},
        "Invalid character in parameter: description.",
    ),
    (
        "subaccount company",
        SUBS,
        SUBS,
        {"email": "nul@example.com", "company_name": "Sh\x00op"},
        "Invalid character in parameter: company_name.",
    ),
]


@pytest.mark.parametrize(
    ("what", "page", "action", "fields", "message"), WITH_NUL, ids=[c[0] for c in WITH_NUL]
)
def test_nul_is_refused_as_the_api_refuses_it(
    live_server: LiveServer,
    account: TestAccount,
    what: str,
    page: str,
    action: str,
    fields: dict[str, Any],
    message: str,
) -> None:
    if "email" in fields:
        fields = {**fields, "email": f"nul-{secrets.token_hex(6)}@example.com"}
    with signed_in(live_server.url, account.email) as web:
        _refused_form(post_form(web, page, action, fields), message)


def test_nul_in_a_change_is_refused(live_server: LiveServer, account: TestAccount) -> None:
    category = _category(account)
    endpoint = _webhook(account)
    with signed_in(live_server.url, account.email) as web:
        renamed = post_form(web, TREE, f"/dashboard/categories/{category}/rename", {"name": "Ca\x00t"})
        _refused_redirect(web, renamed, "Invalid character in parameter: name.")
        edited = post_form(
            web, endpoint, f"{endpoint}/edit", {"events": ["coupon_validated"], "description": "a\x00b"}
        )
        _refused_redirect(web, edited, "Invalid character in parameter: description.")
        made = post_form(web, SUBS, SUBS, {"email": f"sub-{secrets.token_hex(6)}@example.com"})
        assert made.status_code == 303, made.text
        sub_path = made.headers["location"].split("?")[0]
        _refused_form(
            post_form(web, sub_path, f"{sub_path}/edit", {"last_name": "Pe\x00ters"}),
            "Invalid character in parameter: last_name.",
        )


def test_a_subaccount_password_keeps_its_spaces(live_server: LiveServer, account: TestAccount) -> None:
    """Set on the dashboard as typed, so the subaccount signs in with what was typed."""
    email = f"padded-{secrets.token_hex(6)}@example.com"
    password = "  padded-pass  "
    with signed_in(live_server.url, account.email) as web:
        made = post_form(web, SUBS, SUBS, {"email": email, "password": password})
        assert made.status_code == 303, made.text
    with browser(live_server.url) as sub:
        assert sign_in(sub, email, password.strip()).status_code == 401
        assert sign_in(sub, email, password).status_code == 303


def test_emptied_subaccount_fields_are_cleared_or_refused(
    live_server: LiveServer, account: TestAccount
) -> None:
    """An emptied company or name is cleared (not "saved" while kept); an emptied email or time
    zone, which a subaccount cannot be without, is refused."""
    email = f"names-{secrets.token_hex(6)}@example.com"
    named = {"email": email, "company_name": "Shop", "first_name": "Ann", "last_name": "Peters"}
    with signed_in(live_server.url, account.email) as web:
        made = post_form(web, SUBS, SUBS, {**named, "timezone": "Europe/Brussels"})
        assert made.status_code == 303, made.text
        sub_path = made.headers["location"].split("?")[0]
        emptied = {"email": email, "company_name": "", "first_name": "", "last_name": "", "timezone": ""}
        _refused_form(
            post_form(web, sub_path, f"{sub_path}/edit", emptied),
            "Time zone: enter a name such as Europe/Brussels.",
        )
        saved = post_form(web, sub_path, f"{sub_path}/edit", {**emptied, "timezone": "Europe/Brussels"})
        assert saved.status_code == 303, saved.text
        page = web.get(sub_path).text
        for value in ("Shop", "Ann", "Peters"):
            assert f'value="{value}"' not in page
        assert 'value="Europe/Brussels"' in page
        _refused_form(
            post_form(web, sub_path, f"{sub_path}/edit", {"email": "", "timezone": "Europe/Brussels"}),
            "Email: enter the subaccount",
        )


def test_an_emptied_reward_goal_is_not_kept(live_server: LiveServer, account: TestAccount) -> None:
    """Emptied, the goal is what a card made without one gets (its highest reward's threshold, here
    none), as an emptied expiry is cleared: not the old value kept while the page says saved."""
    with signed_in(live_server.url, account.email) as web:
        made = post_form(web, NEW_CARD, NEW_CARD, {**CARD, "name": "Goal card", "reward_goal": "8"})
        assert made.status_code == 303, made.text
        edit = made.headers["location"] + "/edit"
        assert 'value="8"' in web.get(edit).text
        saved = post_form(web, edit, edit, {**CARD, "name": "Goal card", "reward_goal": ""})
        assert saved.status_code == 303, saved.text
        assert 'value="8"' not in web.get(edit).text
