"""Passwords set through the API are hashed before the call's write transaction (an argon2 hash
takes about 20 ms, during which, on SQLite, no other call could write): the request model hashes
them once it is valid (kit.params.WithPassword.prepare), and the stored hash is the one that
later signs the person in."""

from __future__ import annotations

import secrets
from typing import Any

from conftest import LiveServer
from directories_fixtures import Browser, create_directory, create_user
from foundation_fixtures import browser, sign_in
from opencoupon.directories.schemas import DirectoryUserCreate
from opencoupon.kit.crypto import verify_password
from opencoupon.kit.params import validate
from opencoupon.loyalty.schemas import UserCreate


def test_the_request_model_hashes_the_password_before_any_transaction() -> None:
    loyalty = validate(UserCreate, {"email": "ada@example.com", "password": "open sesame"})
    assert loyalty.password_hash is None  # not before prepare: validation stays cheap
    loyalty.prepare()
    assert loyalty.password_hash is not None
    assert verify_password(loyalty.password_hash, "open sesame")
    assert not verify_password(loyalty.password_hash, "open sesame!")

    unlinked = validate(UserCreate, {"email": "ada@example.com"})
    unlinked.prepare()
    assert unlinked.password_hash is None  # loyaltyusers/create then answers "provide a password"

    # A directory user created without a password gets a random one nobody knows.
    member = validate(DirectoryUserCreate, {"email": "ada@example.com"})
    member.prepare()
    assert member.password_hash is not None
    assert not verify_password(member.password_hash, "")


def test_a_directory_user_created_through_the_api_signs_in_with_its_password(
    account: Any, live_server: LiveServer
) -> None:
    directory = create_directory(account, name="Members", access="login")
    create_user(account, directory["id"], email="ada@example.com", password="correct horse")
    browser, stranger = Browser(live_server.url), Browser(live_server.url)
    try:
        assert browser.login(directory["code"], "ada@example.com", "correct horse").status_code == 303
        assert stranger.login(directory["code"], "ada@example.com", "wrong").status_code == 401
    finally:
        browser.close()
        stranger.close()


def test_a_subaccount_signs_in_with_the_password_the_api_set(account: Any, live_server: LiveServer) -> None:
    """Created with a password, then given another one: each works in the dashboard's sign-in
    while it is the subaccount's, the old one no longer."""
    email = f"shop-{secrets.token_hex(4)}@example.com"  # account emails are unique server-wide
    created = account.call("/v4/subaccount/create", email=email, password="first-password")
    assert created.status_code == 200, created.text
    subaccount = created.json()["subaccount"]["ID"]
    with browser(live_server.url) as web:
        assert sign_in(web, email, "first-password").status_code == 303
    changed = account.call("/v4/subaccount/update", subaccount=subaccount, password="second-password")
    assert changed.status_code == 200, changed.text
    with browser(live_server.url) as web:
        assert sign_in(web, email, "first-password").status_code == 401
    with browser(live_server.url) as web:
        assert sign_in(web, email, "second-password").status_code == 303
