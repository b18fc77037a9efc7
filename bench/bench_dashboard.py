"""Dashboard pages against the same server's /noop ceiling: the campaign page (funnel, 30-day chart
and the first page of the sessions table) on a campaign with 100,000 sessions, the same page with
a search, and the CSV export of all 100,000 sessions. Signed in through the real login form."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx2
from coupons_benchlib import BIN, LoadResult, Server, free_port, insert_sessions, report, unique_codes

SESSIONS = 100_000
CLIENTS = 4
SECONDS = 4.0
PASSWORD = "bench password 123"


async def _load(url: str, cookies: dict[str, str], expect: str, seconds: float) -> LoadResult:
    latencies: list[float] = []
    done = errors = 0
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector, cookies=cookies) as http:
        start = time.monotonic()
        measure_from, stop = start + 1.0, start + 1.0 + seconds

        async def worker() -> None:
            nonlocal done, errors
            while (t0 := time.monotonic()) < stop:
                async with http.get(url) as resp:
                    body = await resp.text()
                    status = resp.status
                if t0 >= measure_from:
                    done += 1
                    latencies.append(time.monotonic() - t0)
                    errors += status != 200 or expect not in body

        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return LoadResult(done, errors, seconds, latencies)


def measure(srv: Server, path: str, cookies: dict[str, str], expect: str) -> LoadResult:
    before = srv.cpu_seconds()
    result = asyncio.run(_load(srv.url + path, cookies, expect, SECONDS))
    result.server_cpu = (srv.cpu_seconds() - before) * SECONDS / (SECONDS + 1.0)
    return result


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="opencoupon-bench-") as tmp:
        db_path = Path(tmp) / "bench.db"
        port = free_port()
        env = {
            **os.environ,
            "OPENCOUPON_DATABASE_URL": f"sqlite:///{db_path}",
            "OPENCOUPON_SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "OPENCOUPON_BASE_URL": f"http://127.0.0.1:{port}",
            "OPENCOUPON_RATE_LIMIT_PER_SECOND": "0",
        }
        subprocess.run([str(BIN / "opencoupon"), "migrate"], env=env, check=True, capture_output=True)
        made = subprocess.run(
            [str(BIN / "opencoupon"), "account", "create", "--email", "bench@example.com",
             "--password", PASSWORD, "--json"],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        account = json.loads(made.stdout)
        url = f"http://127.0.0.1:{port}"
        srv = Server(url, db_path, env, account["client_id"], account["client_secret"])
        srv.start()
        try:
            created = httpx2.post(srv.url + "/v4/campaigns", json={"name": "Bench"}, headers=srv.headers)
            campaign = created.json()["id"]
            srv.stop()
            today = dt.date.today()

            def dates(i: int) -> tuple[str | None, str | None, str | None]:
                stamp = f"{(today - dt.timedelta(days=i % 30)).isoformat()} 12:00:00.000000"
                return stamp, stamp if i % 3 == 0 else None, stamp if i % 5 == 0 else None

            started = time.monotonic()
            codes = unique_codes(SESSIONS)
            insert_sessions(db_path, int(campaign.removeprefix("cam_")), codes, dates)
            print(f"inserted {SESSIONS} sessions in {time.monotonic() - started:.1f} s")
            srv.start()
            with httpx2.Client(base_url=srv.url, timeout=60) as web:
                form = web.get("/dashboard/login").text
                token = form.split('name="csrf_token" value="')[1].split('"')[0]
                signed = web.post(
                    "/dashboard/login",
                    data={
                        "email": "bench@example.com",
                        "password": PASSWORD,
                        "csrf_token": token,
                        "next": "/dashboard/",
                    },
                )
                assert signed.status_code == 303, signed.text
                cookies = dict(web.cookies.items())
                noop = measure(srv, "/noop", cookies, "")
                report("GET /noop (ceiling)", noop)
                page = measure(srv, f"/dashboard/campaigns/{campaign}", cookies, "data-session")
                report("GET campaign page (100k sessions)", page)
                found = measure(
                    srv, f"/dashboard/campaigns/{campaign}?q={codes[777][:8]}", cookies, "data-session"
                )
                report("GET campaign page, search", found)
                t0 = time.monotonic()
                exported = web.get(f"/dashboard/campaigns/{campaign}/sessions.csv")
                rows = exported.text.count("\n") - 1
                seconds = time.monotonic() - t0
                print(f"CSV export: {rows} rows, {len(exported.content) / 1e6:.1f} MB in {seconds:.2f} s")
                print(f"ratio to /noop: campaign page {page.rate / noop.rate:.3f}")
                print(f"ratio to /noop: search {found.rate / noop.rate:.3f}")
                ok = page.errors == 0 and found.errors == 0 and rows == SESSIONS
        finally:
            srv.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
