"""/v3/couponsession/data at 16 concurrent clients on SQLite, against the same server's /noop
ceiling. Target: >= 2,000 requests/s."""

from __future__ import annotations

import datetime as dt
import sys

from coupons_benchlib import insert_sessions, load, report, server, unique_codes

CLIENTS = 16
SECONDS = 10.0
SESSIONS = 20_000


def main() -> int:
    with server() as srv:
        campaign = srv.call("/v4/campaigns", name="Bench session data")
        campaign_id = int(campaign["id"].removeprefix("cam_"))
        codes = unique_codes(SESSIONS)
        opened = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.000000")
        insert_sessions(srv.db_path, campaign_id, codes, lambda i: (opened, opened if i % 2 else None, None))
        noop = load(srv.url + "/noop", srv=srv, clients=CLIENTS, seconds=5, body_for=lambda _i: None)
        report("GET /noop (ceiling)", noop)
        data = load(
            srv.url + "/v3/couponsession/data",
            srv=srv,
            clients=CLIENTS,
            seconds=SECONDS,
            headers=srv.headers,
            body_for=lambda i: {"couponsession": codes[(i * 7919) % SESSIONS]},
            ok=lambda status, body: status == 200 and body["data"]["status"]["opened"] == "1",
        )
        report("POST couponsession/data", data)
        ratio = data.rate / noop.rate
        cpu_ratio = noop.cpu_ms_per_request / data.cpu_ms_per_request
        print(f"ratio to /noop: {ratio:.2f} (by server CPU per request: {cpu_ratio:.2f})")
        print("target (>= 2000 req/s):", "met" if data.rate >= 2000 else "NOT met")
        return 0 if data.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
