"""Sign-in to a directory (/d/{code}/login): password guessing is limited per directory and email,
as on the dashboard's sign-in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import LiveServer, served_with
from directories_fixtures import Browser, create_directory
from foundation_fixtures import browser_from
from opencoupon.config import Settings


@pytest.fixture
def limited_server(settings: Settings) -> Iterator[LiveServer]:
    """A server with the default limit (the suite's own server allows far more sign-ins)."""
    with served_with(settings, login_attempts_per_minute=10.0) as (server, _runtime):
        yield server


def test_password_guessing_is_limited(account: Any, limited_server: LiveServer) -> None:
    directory = create_directory(account, name="Members", access="login")
    code = directory["code"]
    browser, second_browser = Browser(limited_server.url), Browser(limited_server.url)
    assert browser.register(code, "guess@example.com").status_code == 303
    for _ in range(10):
        wrong = second_browser.login(code, "guess@example.com", "not the password")
        assert wrong.status_code == 401, wrong.text
    # The right password is refused too until the limit has passed: guessing gains nothing.
    limited = second_browser.login(code, "GUESS@example.com")
    assert limited.status_code == 429
    assert "Too many sign-in attempts" in limited.text
    assert f"ocd_{code}" not in limited.headers.get("set-cookie", "")
    # Another email of the same directory is not held up.
    assert browser.register(code, "other@example.com").status_code == 303
    assert second_browser.login(code, "other@example.com").status_code == 303
    browser.close()
    second_browser.close()


def test_failing_as_a_member_from_one_address_does_not_keep_them_out(
    account: Any, limited_server: LiveServer
) -> None:
    """Attempts per email were counted from every address together, so anyone failing ten times
    a minute kept the member out. They are limited per email and address now, with a backstop of
    ten times that from all addresses; the right password gives its attempt back."""
    directory = create_directory(account, name="Members", access="login")
    code = directory["code"]
    member = Browser(limited_server.url)
    assert member.register(code, "kept@example.com").status_code == 303
    member.close()
    stranger, owner = Browser(limited_server.url), Browser(limited_server.url)
    stranger.client = browser_from(limited_server.url, "127.0.0.7")
    owner.client = browser_from(limited_server.url, "127.0.0.9")
    try:
        answers = [
            stranger.login(code, "kept@example.com", "not the password").status_code for _ in range(11)
        ]
        assert answers == [401] * 10 + [429]
        assert owner.login(code, "kept@example.com").status_code == 303
    finally:
        stranger.close()
        owner.close()


def test_sign_out_ends_the_session_on_the_server_too(account: Any, live_server: LiveServer) -> None:
    """Signing out of a directory deletes the cookie, and a copy of it (another device, a stolen
    cookie) stops working as well; the member's other sessions go on."""
    directory = create_directory(account, name="Members only", access="login")
    code = directory["code"]
    browser, other_device, thief = (Browser(live_server.url) for _ in range(3))
    try:
        assert browser.register(code, "member@example.com").status_code == 303
        assert other_device.login(code, "member@example.com").status_code == 303
        cookie = f"ocd_{code}"
        copied = browser.client.cookies[cookie]
        assert copied != other_device.client.cookies[cookie]  # each sign-in, its own session
        assert "Signed in as member@example.com" in browser.get(f"/d/{code}").text

        # A sign-out form whose token expired still signs out (it can only sign someone out).
        out = browser.client.post(f"/d/{code}/logout", data={"csrf_token": "expired"})
        assert out.status_code == 303
        assert cookie not in browser.client.cookies
        assert "Signed in as" not in browser.get(f"/d/{code}").text

        thief.client.cookies.set(cookie, copied)
        assert "Signed in as" not in thief.get(f"/d/{code}").text
        assert "Signed in as member@example.com" in other_device.get(f"/d/{code}").text
        # Signing out twice with the same cookie is harmless.
        again = thief.client.post(f"/d/{code}/logout")
        assert again.status_code == 303
    finally:
        for b in (browser, other_device, thief):
            b.close()


def test_one_address_cannot_sweep_many_emails(account: Any, limited_server: LiveServer) -> None:
    """Each email has its own limit, so one address trying a password on many emails is held by a
    limit per client address too: six times the per-email one (as on the dashboard)."""
    directory = create_directory(account, name="Sweep", access="login")
    code = directory["code"]
    sweeper = Browser(limited_server.url)
    try:
        answers = [sweeper.login(code, f"nobody{i}@example.com", "guess").status_code for i in range(61)]
    finally:
        sweeper.close()
    assert answers == [401] * 60 + [429]


def test_the_sign_in_and_registration_forms_refuse_frames(account: Any, live_server: LiveServer) -> None:
    """Another site's frame around them could take a member's password."""
    code = create_directory(account, name="Framed", access="login")["code"]
    browser = Browser(live_server.url)
    try:
        for path in (f"/d/{code}/login", f"/d/{code}/register"):
            page = browser.get(path)
            assert page.status_code == 200, path
            assert page.headers["x-frame-options"] == "DENY", path
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"], path
    finally:
        browser.close()
