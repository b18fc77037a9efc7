"""/v4/privacy/export and /v4/privacy/erase for one person in an account with 1,000,000 coupon
sessions (a third of them claimed with a name and an email) and 300,000 stored claim events, on
SQLite; while the erasure runs, 16 clients keep validating other sessions, to show how long the
erasure holds up writers. The ceiling, measured in the same run: the same searches (sessions by
lower-cased email through ix_coupon_sessions_email_lower, the account's claim events whose data
holds it) on a bare sqlite3 connection.

No target in the contract: these calls are made a few times a month. The figures say how long a
large account waits, and what validations meanwhile see."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import sys
import threading
import time
from typing import Any

import httpx2
from coupons_benchlib import insert_sessions, load, report, server, unique_codes

SESSIONS = 1_000_000
EVENTS = 300_000
PERSON = 123_456  # claimed (a multiple of 3): the person asked about
CLIENTS = 16


def person(i: int) -> tuple[str, str]:
    return (f"Name{i}", f"Person{i}@Example.com") if i % 3 == 0 else ("", "")


def insert_events(db_path: Any, account_id: int, codes: list[str]) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.000000")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO events (public_id, account_id, type, campaign, session, data, created_at) "
        "VALUES (?, ?, 'coupon_claimed', 'cam_1', ?, ?, ?)",
        (
            (
                f"evt_{i:020d}",
                account_id,
                codes[i * 3],
                json.dumps(
                    {"couponsession": codes[i * 3], "firstname": person(i * 3)[0], "email": person(i * 3)[1]}
                ),
                now,
            )
            for i in range(EVENTS)
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


def main() -> int:
    with server() as srv:
        campaign = srv.call("/v4/campaigns", name="Bench privacy", validations_per_session=1000)
        campaign_id = int(campaign["id"].removeprefix("cam_"))
        codes = unique_codes(SESSIONS)
        started = time.monotonic()
        srv.stop()  # the bulk load takes the database for itself
        insert_sessions(srv.db_path, campaign_id, codes, people=person)
        conn = sqlite3.connect(srv.db_path)
        account_id = conn.execute("SELECT account_id FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[
            0
        ]
        conn.close()
        insert_events(srv.db_path, account_id, codes)
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

        erase: dict[str, float] = {}

        def erase_later() -> None:
            time.sleep(3)  # validations are under way by then
            t0 = time.monotonic()
            answer = client.post("/v4/privacy/erase", json={"email": email})
            erase["seconds"] = time.monotonic() - t0
            assert answer.status_code == 200, answer.text
            erase["sessions"] = answer.json()["erased"]["coupon_sessions"]

        eraser = threading.Thread(target=erase_later)
        eraser.start()
        # Sessions the person does not hold: every validation must still succeed, only later.
        validations = load(
            srv.url + "/v3/couponsession/update",
            srv=srv,
            clients=CLIENTS,
            seconds=8,
            headers=srv.headers,
            body_for=lambda i: {"couponsession": codes[1 + (i % 1000) * 3], "validate": True},
            ok=lambda status, body: status == 200,
        )
        eraser.join()
        print(
            f"erase: {erase['seconds'] * 1000:.0f} ms ({erase['sessions']:.0f} session), ratio to the bare "
            f"searches {ceiling / erase['seconds']:.2f}"
        )
        report("validations meanwhile", validations)
        print(
            f"  slowest validation: {max(validations.latencies) * 1000:.0f} ms "
            "(the erasure holds the write lock)"
        )
        t0 = time.monotonic()
        again = client.post("/v4/privacy/erase", json={"email": email}).json()
        print(f"erase again: {(time.monotonic() - t0) * 1000:.0f} ms, {again['erased']}")
        client.close()
        return 0 if validations.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
