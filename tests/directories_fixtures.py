"""Fixtures and helpers of the directory tests: campaigns made directly through the ORM (the
campaign API is another capability's), directories and users made through the real API, and a
browser-like client that keeps cookies and fills in CSRF tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime

PAY_URL = "https://pay.example.com/checkout?plan=gold"
PASSWORD = "correct horse battery"


def make_campaign(runtime: Runtime, account_id: int, name: str = "Coupon", **fields: Any) -> Campaign:
    with runtime.db.transaction() as session:
        now = utcnow()
        campaign = Campaign(
            account_id=account_id,
            code=ids.random_code(6),
            name=name,
            title=fields.pop("title", name),
            created_at=now,
            updated_at=now,
            **fields,
        )
        session.add(campaign)
        session.flush()
        session.expunge(campaign)
        return campaign


def v4(acc: Any, method: str, path: str, **body: Any) -> httpx2.Response:
    if method in ("GET", "DELETE"):
        return acc.client.request(method, path, params=body or None, headers=acc.headers)  # type: ignore[no-any-return]
    return acc.client.request(method, path, json=body, headers=acc.headers)  # type: ignore[no-any-return]


def create_directory(acc: Any, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "Coupon book")
    response = v4(acc, "POST", "/v4/directory", **body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def create_user(acc: Any, directory_id: str, **body: Any) -> dict[str, Any]:
    response = v4(acc, "POST", f"/v4/directory/{directory_id}/users", **body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def create_category(acc: Any, name: str, parent: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if parent:
        body["parent"] = parent
    response = v4(acc, "POST", "/v4/categories", **body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A consumer's browser: its own cookie jar, no automatic redirects."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx2.Client(base_url=base_url, timeout=30, follow_redirects=False)

    def get(self, path: str, **kwargs: Any) -> httpx2.Response:
        return self.client.get(path, **kwargs)

    def csrf(self, path: str) -> str:
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        found = _CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    def submit(self, form_path: str, action: str, fields: dict[str, str]) -> httpx2.Response:
        token = self.csrf(form_path)
        return self.client.post(action, data={**fields, "csrf_token": token})

    def register(self, code: str, email: str, password: str = PASSWORD, **extra: str) -> httpx2.Response:
        path = f"/d/{code}/register"
        return self.submit(path, path, {"email": email, "password": password, **extra})

    def login(self, code: str, email: str, password: str = PASSWORD, next_path: str = "") -> httpx2.Response:
        path = f"/d/{code}/login"
        return self.submit(path, path, {"email": email, "password": password, "next": next_path})

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def browser(live_server: Any) -> Iterator[Browser]:
    b = Browser(live_server.url)
    yield b
    b.close()


@pytest.fixture
def second_browser(live_server: Any) -> Iterator[Browser]:
    b = Browser(live_server.url)
    yield b
    b.close()
