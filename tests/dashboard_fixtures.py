"""Helpers for dashboard tests: a signed-in cookie-keeping client, form posts with CSRF, and the
single-use batch pages' campaign and progress polling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
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


class _FormReader(HTMLParser):
    """The fields a browser submits for the form posting to `action`, as it submits them."""

    def __init__(self, action: str) -> None:
        super().__init__(convert_charrefs=True)
        self.action = action
        self.inside = False
        self.done = False  # the first such form only
        self.fields: list[tuple[str, str]] = []
        self.select: list[Any] | None = None  # [name, chosen value, first value]
        self.textarea: list[str] | None = None  # [name, text]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = not self.done and a.get("action", "") == self.action
        if not self.inside:
            return
        if tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((a["name"], a.get("value", "on")))
            elif kind in ("text", "search", "tel", "url", "email", "password"):
                # A one-line input loses the line breaks of its value (HTML's value sanitization).
                value = a.get("value", "").replace("\r", "").replace("\n", "")
                self.fields.append((a["name"], value))
            elif kind not in ("submit", "button", "reset"):
                self.fields.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self.select = [a.get("name", ""), None, None]
        elif tag == "option" and self.select is not None:
            if self.select[2] is None:
                self.select[2] = a.get("value", "")
            if "selected" in a:
                self.select[1] = a.get("value", "")
        elif tag == "textarea":
            self.textarea = [a.get("name", ""), ""]

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            self.textarea[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.done = self.done or self.inside
            self.inside = False
        elif tag == "select" and self.select is not None:
            name, chosen, first = self.select
            self.fields.append((name, chosen if chosen is not None else first or ""))
            self.select = None
        elif tag == "textarea" and self.textarea is not None:
            name, value = self.textarea
            # The HTML parser drops a newline right after <textarea>; a browser sends every line
            # break of it as CRLF.
            value = value.removeprefix("\n")
            self.fields.append((name, value.replace("\r\n", "\n").replace("\n", "\r\n")))
            self.textarea = None


def browser_fields(html: str, action: str) -> dict[str, list[str]]:
    """The fields (each with its values in order) a browser posts when the first form of `html`
    that posts to `action` ("": a form posting to its own page) is submitted as shown, the CSRF
    token included."""
    reader = _FormReader(action)
    reader.feed(html)
    assert reader.fields, f"no form posting to {action}"
    fields: dict[str, list[str]] = {}
    for name, value in reader.fields:
        fields.setdefault(name, []).append(value)
    return fields


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
