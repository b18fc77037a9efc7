"""Helpers for dashboard tests: a signed-in cookie-keeping client, form posts with CSRF, and the
single-use batch pages' campaign and progress polling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2

from conftest import TestAccount
from foundation_fixtures import browser, csrf_from, path_of, sign_in
from helpers import assert_ok

PASSWORD = "correct horse battery"

# What a destructive form carries once the person said yes (the browser's confirm() sets it; a
# browser without JavaScript gets a question page first: tests/test_dashboard_confirm.py).
YES = {"confirmed": "yes"}


@contextmanager
def signed_in(base_url: str, email: str) -> Iterator[httpx2.Client]:
    with browser(base_url) as client:
        answer = sign_in(client, email, PASSWORD)
        assert answer.status_code == 303, answer.text
        yield client


def post_form(client: httpx2.Client, page_path: str, action: str, data: dict[str, Any]) -> httpx2.Response:
    """Open `page_path`, take its CSRF token, post `data` to `action` (lists become repeated fields)."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    return client.post(action, data={**data, "csrf_token": csrf_from(page.text)})


@contextmanager
def sso_client(base_url: str, master: Any, sub_id: int) -> Iterator[httpx2.Client]:
    """A browser signed in as a subaccount through the API's one-time SSO link."""
    body = assert_ok(master.call("/v3/subaccount/sso", subaccount=f"sub_{sub_id}"))
    with browser(base_url) as client:
        landing = client.get(path_of(body["subaccount"]["url"]))
        assert landing.status_code == 303, landing.text
        yield client


def singleuse_campaign(account: TestAccount, name: str = "Links") -> str:
    """A campaign for single-use link batches (validated by PIN or widget), made through the v4
    API; its id."""
    answer = account.call("/v4/campaigns", name=name, validation_methods="pin,widget")
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def wait_batch_done(web: httpx2.Client, job_path: str, seconds: float = 30) -> str:
    """Poll a single-use batch's progress fragment until it no longer asks to be polled again
    (hx-get); that final fragment."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fragment = web.get(job_path + "/progress").text
        if "hx-get" not in fragment:
            return fragment
        time.sleep(0.2)
    raise AssertionError("batch did not finish")
