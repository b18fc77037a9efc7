"""Helpers for tests of HTML pages: a cookie-keeping browser-like client, CSRF tokens from forms,
and sign-in through the real login form."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx2

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


def path_of(url: str) -> str:
    """`http://testserver.local/sso/abc` -> `/sso/abc` (API answers use OPENCOUPON_BASE_URL)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def browser(base_url: str) -> httpx2.Client:
    return httpx2.Client(base_url=base_url, timeout=30, headers={"Accept": "text/html"})


def browser_from(base_url: str, address: str, accept: str = "text/html") -> httpx2.Client:
    """A new browser (no cookies) connecting from `address`: any 127.x.y.z reaches loopback, so
    tests of limits per client address can play several clients."""
    transport = httpx2.HTTPTransport(local_address=address)
    return httpx2.Client(base_url=base_url, timeout=30, headers={"Accept": accept}, transport=transport)


def sign_in(client: httpx2.Client, email: str, password: str) -> httpx2.Response:
    """Open the login page, post the form with its CSRF token; returns the POST's answer."""
    page = client.get("/dashboard/login")
    assert page.status_code == 200, page.text
    return client.post(
        "/dashboard/login",
        data={
            "email": email,
            "password": password,
            "csrf_token": csrf_from(page.text),
            "next": "/dashboard/",
        },
    )
