"""R1 at full scale (reliability-performance.md §6.1): 50 trials, each 32 threads validating one
coupon session at the same moment through /v3/couponsession/update on a real `opencoupon serve`
(SQLite). Every trial must give exactly 1 success, 31 refusals with Coupontools' error
(409, error_code 308), 1 validation row and 1 coupon_validated event. CI runs 5 trials
(tests/test_coupons_races.py); this prints the 50."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx2
from coupons_benchlib import Server, insert_sessions, server, unique_codes

CONCURRENT = 32


def trial(srv: Server, code: str) -> tuple[int, Counter[str]]:
    """32 validations of `code` released together: (successes, the other outcomes by kind)."""
    clients = [httpx2.Client(base_url=srv.url, headers=srv.headers, timeout=60) for _ in range(CONCURRENT)]
    barrier = threading.Barrier(CONCURRENT)
    results: list[Any] = [None] * CONCURRENT

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = clients[i].post(
                "/v3/couponsession/update", json={"couponsession": code, "validate": True}
            )
        except httpx2.HTTPError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for client in clients:
        client.close()
    wins = 0
    others: Counter[str] = Counter()
    for r in results:
        if not isinstance(r, httpx2.Response):
            others[f"transport error {type(r).__name__}"] += 1
        elif r.status_code == 200:
            wins += 1
        elif r.status_code == 409 and r.json()["status"]["errors"]["error_code"] == [308]:
            others["409/308 already validated"] += 1
        else:
            others[f"{r.status_code} {r.text[:80]}"] += 1
    return wins, others


def stored(srv: Server, code: str) -> tuple[int, int]:
    """Validation rows and coupon_validated events the database holds for session `code`."""
    conn = sqlite3.connect(srv.db_path)
    try:
        (rows,) = conn.execute(
            "SELECT count(*) FROM validations"
            " WHERE session_id = (SELECT id FROM coupon_sessions WHERE code = ?)",
            (code,),
        ).fetchone()
        (events,) = conn.execute(
            "SELECT count(*) FROM events WHERE type = 'coupon_validated' AND session = ?", (code,)
        ).fetchone()
    finally:
        conn.close()
    return int(rows), int(events)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    failed = 0
    with server() as srv:
        campaign = srv.call("/v4/campaigns", name="Bench races")
        codes = unique_codes(args.trials)
        insert_sessions(srv.db_path, int(campaign["id"].removeprefix("cam_")), codes)
        started = time.monotonic()
        for n, code in enumerate(codes, 1):
            wins, others = trial(srv, code)
            rows, events = stored(srv, code)
            good = wins == 1 and others == Counter({"409/308 already validated": 31}) and rows == events == 1
            failed += not good
            print(
                f"trial {n:2}: {wins} success, {dict(others)}, {rows} validation row, {events} event"
                + ("" if good else "  <-- FAILED")
            )
        took = time.monotonic() - started
    print(f"R1: {args.trials - failed}/{args.trials} trials exact in {took:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
