"""Races, run for real: threads hitting the live server at the same moment."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import httpx2
from sqlalchemy import select

from directories_fixtures import PAY_URL, create_directory, create_user
from opencoupon.models import Event
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
