"""Races, run for real: threads hitting the live server at the same moment."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from directories_fixtures import PAY_URL, create_category, create_directory, create_user, make_campaign
from helpers import race
from opencoupon.directories import repository
from opencoupon.models import Campaign, Category, Directory, DirectoryItem, Event
from opencoupon.runtime import Runtime

THREADS = 8


def _race(live_server: Any, send: Any) -> list[httpx2.Response]:
    start = threading.Barrier(THREADS)
    answers: list[httpx2.Response] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx2.Client(base_url=live_server.url, timeout=60) as client:
            start.wait()
            answer = send(client)
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == THREADS
    return answers


def test_concurrent_registrations_of_one_email_create_one_user(account: Any, live_server: Any) -> None:
    directory = create_directory(account, name="Race", access="login")
    path = f"/v4/directory/{directory['id']}/users"
    answers = _race(
        live_server, lambda c: c.post(path, json={"email": "same@example.com"}, headers=account.headers)
    )
    assert Counter(a.status_code for a in answers) == {201: 1, 422: THREADS - 1}
    assert all(a.json()["status"]["errors"]["error_code"] == [304] for a in answers if a.status_code == 422)
    users = account.client.get(path, headers=account.headers).json()
    assert [u["email"] for u in users] == ["same@example.com"]


def test_concurrent_identical_payment_reports_change_once(
    account: Any, live_server: Any, runtime: Runtime
) -> None:
    directory = create_directory(account, name="Race", access="payment", payment_url=PAY_URL)
    user = create_user(account, directory["id"], email="payer@example.com")
    body = {
        "directory": directory["id"],
        "user": user["id"],
        "status": "completed",
        "expiry_date": "2030-01-01 00:00",
    }
    answers = _race(
        live_server, lambda c: c.post("/v3/directoryusers/update", json=body, headers=account.headers)
    )
    assert all(a.status_code == 200 for a in answers)
    with runtime.db.read() as session:
        events = session.scalars(
            select(Event).where(
                Event.account_id == account.id, Event.type == "directory_payment_status_changed"
            )
        ).all()
        assert [json.loads(e.data)["user"] for e in events] == [user["id"]]


def _send(
    live_server: Any, account: Any, name: str, method: str, path: str, body: Any
) -> tuple[str, int, int | None]:
    """The call's name, HTTP status and first error code (None when it succeeded)."""
    with httpx2.Client(base_url=live_server.url, timeout=60) as client:
        answer = client.request(method, path, json=body, headers=account.headers)
    if answer.status_code < 400:
        return name, answer.status_code, None
    codes = answer.json()["status"]["errors"]["error_code"] if answer.status_code < 500 else [None]
    return name, answer.status_code, codes[0]


def test_a_category_deleted_while_it_is_being_assigned_is_never_left_behind(
    account: Any, live_server: Any, runtime: Runtime
) -> None:
    """Each round files campaigns under a new category three ways (a directory item's settings,
    a PATCH of the directory, a template copy) while the category is deleted. Each assignment
    goes first (200/201) or finds the category gone (516): a delete committed between reading the
    category and writing it gave a 500 (the item's foreign key) and left a campaign holding the
    deleted ID (PostgreSQL)."""
    first, second, third = (make_campaign(runtime, account.id, name=f"Deal {i}") for i in range(3))
    template = make_campaign(runtime, account.id, name="Template", kind="template")
    directory = create_directory(account, campaigns=[f"cam_{c.id}" for c in (first, second, third)])
    answers: Counter[tuple[str, int, int | None]] = Counter()
    for round_number in range(20):
        category = create_category(account, f"Round {round_number}")["id"]
        calls = [
            (
                "item",
                "POST",
                "/v3/directory/campaign/update",
                {"campaign": f"cam_{first.id}", "category": category},
            ),
            (
                "patch",
                "PATCH",
                f"/v4/directory/{directory['id']}",
                {
                    "campaigns": [
                        f"cam_{first.id}",
                        {"id": f"cam_{second.id}", "category": category},
                        f"cam_{third.id}",
                    ]
                },
            ),
            (
                "copy",
                "POST",
                "/v3/directory/campaign/create",
                {
                    "directory": directory["id"],
                    "template": f"cam_{template.id}",
                    "name": "Copy",
                    "category": category,
                },
            ),
            ("delete", "DELETE", f"/v4/categories/{category}", None),
        ]

        def send(i: int, todo: list[Any] = calls) -> tuple[str, int, int | None]:
            return _send(live_server, account, *todo[i])

        answers.update(race(len(calls), send))
    refused = {(name, 404, 516) for name in ("item", "patch", "copy")}
    assert {a for a in answers if a[1] not in (200, 201)} <= refused, answers
    assert answers[("delete", 200, None)] == 20, answers
    with runtime.db.read() as session:
        categories = set(session.scalars(select(Category.id)))
        on_campaigns = set(
            session.scalars(select(Campaign.category_id).where(Campaign.account_id == account.id))
        )
        on_items = set(
            session.scalars(select(DirectoryItem.category_id).where(DirectoryItem.account_id == account.id))
        )
    assert on_campaigns - {None} <= categories, "a campaign holds a deleted category"
    assert on_items - {None} <= categories, "a directory item holds a deleted category"


def test_a_template_copy_into_a_directory_deleted_meanwhile_is_refused(
    account: Any, live_server: Any, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy read the directory, then waited for its lock while the directory was deleted, and
    added its campaign to the deleted directory all the same (PostgreSQL). The copy's wait is
    made longer here, so the delete lands inside it every time; whether it did is read right
    after the copy got its lock (on SQLite the copy's write transaction holds the delete back)."""
    directory = create_directory(account, access="login")
    template = make_campaign(runtime, account.id, name="Template", kind="template")
    lock = repository.lock_directory
    deleted_at_copy_lock: list[Any] = []

    def copy_waits(session: Any, directory_id: int) -> None:
        first = not deleted_at_copy_lock
        if first:
            deleted_at_copy_lock.append(None)
            time.sleep(0.6)  # the delete, sent 0.2 s later, commits meanwhile where it can
        lock(session, directory_id)
        if first:
            deleted_at_copy_lock[0] = session.scalar(
                select(Directory.deleted_at).where(Directory.id == directory_id)
            )

    monkeypatch.setattr(repository, "lock_directory", copy_waits)

    def send(i: int) -> httpx2.Response:
        with httpx2.Client(base_url=live_server.url, timeout=60) as client:
            if i == 0:
                body = {"directory": directory["id"], "template": f"cam_{template.id}", "name": "Copy"}
                return client.post("/v3/directory/campaign/create", json=body, headers=account.headers)
            time.sleep(0.2)
            return client.delete(f"/v4/directory/{directory['id']}", headers=account.headers)

    copied, deleted = race(2, send)
    assert deleted.status_code == 200, deleted.text
    if deleted_at_copy_lock[0] is None:  # the copy went first
        assert copied.status_code == 200, copied.text
    else:
        assert copied.status_code == 404, copied.text
        assert copied.json()["status"]["errors"]["error_code"] == [507]
        with runtime.db.read() as session:
            copies = select(Campaign.id).where(Campaign.account_id == account.id, Campaign.name == "Copy")
            assert session.scalar(copies) is None
