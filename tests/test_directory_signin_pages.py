"""Sign-in to a directory (/d/{code}/login): password guessing is limited per directory and email,
as on the dashboard's sign-in."""

from __future__ import annotations

from typing import Any

from directories_fixtures import Browser, create_directory


def test_password_guessing_is_limited(account: Any, browser: Browser, second_browser: Browser) -> None:
    directory = create_directory(account, name="Members", access="login")
    code = directory["code"]
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
