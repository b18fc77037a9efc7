"""/v3/coupon/info with show_usage_stats on a campaign with 1,000,000 sessions (inserted with the raw
sqlite3 driver, with the per-day statistics rows the service would have kept), against the same
server's /noop ceiling. Target: p50 <= 20 ms."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import time
from collections import Counter

from coupons_benchlib import insert_sessions, load, report, server, unique_codes

SESSIONS = 1_000_000
DAYS = 365
CLIENTS = 4
SECONDS = 5.0


def main() -> int:
    with server() as srv:
        campaign = srv.call("/v4/campaigns", name="Bench usage stats")
        campaign_id = int(campaign["id"].removeprefix("cam_"))
        started = time.monotonic()
        codes = unique_codes(SESSIONS)
        first_day = dt.date.today() - dt.timedelta(days=DAYS)
        opens: Counter[dt.date] = Counter()
        claims: Counter[dt.date] = Counter()
        validations: Counter[dt.date] = Counter()

        def dates(i: int) -> tuple[str | None, str | None, str | None]:
            day = first_day + dt.timedelta(days=i % DAYS)
            stamp = f"{day.isoformat()} 12:00:00.000000"
            opens[day] += 1
            claimed = i % 3 == 0
            validated = i % 5 == 0
            if claimed:
                claims[day] += 1
            if validated:
                validations[day] += 1
            return stamp, stamp if claimed else None, stamp if validated else None

        srv.stop()  # the bulk load takes the database for itself
        insert_sessions(srv.db_path, campaign_id, codes, dates)
        conn = sqlite3.connect(srv.db_path, isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO campaign_daily_stats (campaign_id, day, opens, claims, validations) "
            "VALUES (?, ?, ?, ?, ?)",
            [(campaign_id, d.isoformat(), opens[d], claims[d], validations[d]) for d in sorted(opens)],
        )
        conn.execute(
            "UPDATE campaigns SET opens_count = ?, claims_count = ?, validations_count = ? WHERE id = ?",
            (sum(opens.values()), sum(claims.values()), sum(validations.values()), campaign_id),
        )
        conn.execute("COMMIT")
        count = conn.execute(
            "SELECT count(*) FROM coupon_sessions WHERE campaign_id = ?", (campaign_id,)
        ).fetchone()[0]
        conn.close()
        print(f"inserted {count} sessions in {time.monotonic() - started:.1f} s (raw sqlite3 driver)")
        srv.start()
        noop = load(srv.url + "/noop", srv=srv, clients=CLIENTS, seconds=3, body_for=lambda _i: None)
        report("GET /noop (ceiling)", noop)
        body = {"campaign": campaign["id"], "show_usage_stats": True}
        expected = str(SESSIONS)
        info = load(
            srv.url + "/v3/coupon/info",
            srv=srv,
            clients=CLIENTS,
            seconds=SECONDS,
            headers=srv.headers,
            body_for=lambda _i: body,
            ok=lambda status, answer: (
                status == 200 and answer["coupon_info"]["usage_stats"]["opens"] == expected
            ),
        )
        report("POST coupon/info show_usage_stats", info)
        print(f"ratio to /noop: {info.rate / noop.rate:.2f}")
        print("target (p50 <= 20 ms):", "met" if info.percentile(50) <= 20 else "NOT met")
        return 0 if info.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
