"""/v4/privacy/export and /v4/privacy/erase for one person in an account with 1,000,000 coupon
sessions (a third of them claimed with a name and an email) and 300,000 stored claim events, on
SQLite; while the erasure runs, 16 clients keep validating other sessions, to show how long the
erasure holds up writers. The ceiling, measured in the same run: the same searches (sessions by
lower-cased email through ix_coupon_sessions_email_lower, the account's claim events whose data
holds it) on a bare sqlite3 connection.

Then one busy person: BUSY sessions of their own, each with its claim event, exported and erased
while the 16 clients validate other sessions (`python bench/bench_privacy.py busy` runs this part
alone, without the million sessions).

No target in the contract: these calls are made a few times a month. The figures say how long a
large account waits, and what validations meanwhile see."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2
from coupons_benchlib import insert_sessions, load, report, server, unique_codes

SESSIONS = 1_000_000
EVENTS = 300_000
PERSON = 123_456  # claimed (a multiple of 3): the person asked about
CLIENTS = 16
BUSY = 10_000  # the busy person's sessions (and claim events)
BUSY_EMAIL = "Busy.Person@Example.com"


def person(i: int) -> tuple[str, str]:
    return (f"Name{i}", f"Person{i}@Example.com") if i % 3 == 0 else ("", "")


def insert_events(
    db_path: Any, account_id: int, codes: list[str], people: Callable[[int], tuple[str, str]], first: int = 0
) -> None:
    """A coupon_claimed event for each session of `codes` (the claim's name and email:
    `people(i)`), their public IDs numbered from `first`."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.000000")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO events (public_id, account_id, type, campaign, session, data, created_at) "
        "VALUES (?, ?, 'coupon_claimed', 'cam_1', ?, ?, ?)",
        (
            (
                f"evt_{first + i:020d}",
                account_id,
                code,
                json.dumps({"couponsession": code, "firstname": people(i)[0], "email": people(i)[1]}),
                now,
            )
            for i, code in enumerate(codes)
        ),
    )
    conn.execute("COMMIT")
    conn.close()


def bare_search(db_path: Any, account_id: int, email: str) -> float:
    """Seconds for the two searches an erasure cannot avoid, on a bare driver (best of three)."""
    conn = sqlite3.connect(db_path)
    best = float("inf")
    for _ in range(3):
        started = time.monotonic()
        conn.execute(
            "SELECT id FROM coupon_sessions WHERE account_id = ? AND email <> '' AND lower(email) = ?",
            (account_id, email),
        ).fetchall()
        conn.execute(
            "SELECT id FROM events WHERE account_id = ? AND type = 'coupon_claimed' AND lower(data) LIKE ?",
            (account_id, f"%{email}%"),
        ).fetchall()
        best = min(best, time.monotonic() - started)
    conn.close()
    return best


def main(busy_only: bool) -> int:
    with server() as srv:
        errors = 0 if busy_only else large_account(srv)
        return errors + busy_person(srv)


def erase_while_validating(
    srv: Any, client: httpx2.Client, email: str, others: list[str]
) -> tuple[dict[str, Any], Any]:
    """The erasure of `email`, made 3 s into 8 s of validations of the sessions `others` (which
    the person does not hold): (its seconds and answer, the validations' result)."""
    erase: dict[str, Any] = {}

    def erase_later() -> None:
        time.sleep(3)  # validations are under way by then
        t0 = time.monotonic()
        answer = client.post("/v4/privacy/erase", json={"email": email})
        erase["seconds"] = time.monotonic() - t0
        assert answer.status_code == 200, answer.text
        erase["erased"] = answer.json()["erased"]

    eraser = threading.Thread(target=erase_later)
    eraser.start()
    # Every validation must still succeed, only later.
    validations = load(
        srv.url + "/v3/couponsession/update",
        srv=srv,
        clients=CLIENTS,
        seconds=8,
        headers=srv.headers,
        body_for=lambda i: {"couponsession": others[i % len(others)], "validate": True},
        ok=lambda status, body: status == 200,
    )
    eraser.join()
    return erase, validations


def large_account(srv: Any) -> int:
    campaign = srv.call("/v4/campaigns", name="Bench privacy", validations_per_session=1000)
    campaign_id = int(campaign["id"].removeprefix("cam_"))
    codes = unique_codes(SESSIONS)
    started = time.monotonic()
    srv.stop()  # the bulk load takes the database for itself
    insert_sessions(srv.db_path, campaign_id, codes, people=person)
    conn = sqlite3.connect(srv.db_path)
    account_id = conn.execute("SELECT account_id FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]
    conn.close()
    insert_events(srv.db_path, account_id, codes[::3][:EVENTS], lambda i: person(i * 3))
    print(f"inserted {SESSIONS:,} sessions and {EVENTS:,} events in {time.monotonic() - started:.0f} s")
    srv.start()
    email = person(PERSON)[1].lower()
    ceiling = bare_search(srv.db_path, account_id, email)
    print(f"bare sqlite3 searches (sessions by email, events by data): {ceiling * 1000:.0f} ms")

    client = httpx2.Client(base_url=srv.url, headers=srv.headers, timeout=120)
    exports = []
    for _ in range(3):
        t0 = time.monotonic()
        answer = client.get("/v4/privacy/export", params={"email": email})
        exports.append(time.monotonic() - t0)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert len(found["coupon_sessions"]) == 1, found
    print(
        f"export: {min(exports) * 1000:.0f} ms (best of 3), "
        f"ratio to the bare searches {ceiling / min(exports):.2f}"
    )
    others = [codes[1 + i * 3] for i in range(1000)]  # unclaimed: nobody's
    erase, validations = erase_while_validating(srv, client, email, others)
    print(
        f"erase: {erase['seconds'] * 1000:.0f} ms ({erase['erased']['coupon_sessions']} session), "
        f"ratio to the bare searches {ceiling / erase['seconds']:.2f}"
    )
    report("validations meanwhile", validations)
    print(
        f"  slowest validation: {max(validations.latencies) * 1000:.0f} ms (the erasure holds the write lock)"
    )
    t0 = time.monotonic()
    again = client.post("/v4/privacy/erase", json={"email": email}).json()
    print(f"erase again: {(time.monotonic() - t0) * 1000:.0f} ms, {again['erased']}")
    client.close()
    return validations.errors


def busy_person(srv: Any) -> int:
    """One person with BUSY sessions and claim events of their own, among 1,000 sessions of others."""
    campaign = srv.call("/v4/campaigns", name="Bench privacy, busy person", validations_per_session=1000)
    campaign_id = int(campaign["id"].removeprefix("cam_"))
    codes = unique_codes(BUSY + 1000)
    others, theirs = codes[:1000], codes[1000:]
    insert_sessions(
        srv.db_path, campaign_id, codes, people=lambda i: ("Busy", BUSY_EMAIL) if i >= 1000 else ("", "")
    )
    conn = sqlite3.connect(srv.db_path)
    account_id = conn.execute("SELECT account_id FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]
    conn.close()
    insert_events(srv.db_path, account_id, theirs, lambda i: ("Busy", BUSY_EMAIL), first=10**9)
    client = httpx2.Client(base_url=srv.url, headers=srv.headers, timeout=600)
    t0 = time.monotonic()
    answer = client.post("/v4/privacy/export", json={"email": BUSY_EMAIL})
    exported = time.monotonic() - t0
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert len(found["coupon_sessions"]) == BUSY, len(found["coupon_sessions"])
    assert len(found["events"]) == BUSY, len(found["events"])
    size = len(answer.content) // 1024
    print(f"busy person ({BUSY:,} sessions, {BUSY:,} events): export {exported:.2f} s, {size} KiB")
    erase, validations = erase_while_validating(srv, client, BUSY_EMAIL, others)
    counts = erase["erased"]
    assert counts["coupon_sessions"] == BUSY, counts
    assert counts["events"] == BUSY, counts
    conn = sqlite3.connect(srv.db_path)
    (event_size,) = conn.execute(
        "SELECT length(data) FROM events WHERE type = 'privacy_erased' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    conn.close()
    print(f"busy person: erase {erase['seconds']:.2f} s, privacy_erased event {event_size / 1024:.0f} KiB")
    report("validations meanwhile", validations)
    print(
        f"  slowest validation: {max(validations.latencies) * 1000:.0f} ms (the erasure holds the write lock)"
    )
    client.close()
    return validations.errors


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] == ["busy"]))
