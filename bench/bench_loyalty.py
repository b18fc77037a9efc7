"""Stamp additions through /v3/loyaltyusers/update at 16 concurrent clients, against the no-op
route of the same server in the same run.

Starts `opencoupon serve` on a free loopback port with its own SQLite database, creates an
account, a stamp card and 16 holders, then measures each route for a fixed time with 16
concurrent keep-alive clients (aiohttp): /noop (the ceiling), `loyalty/info` (an authenticated
read of one card, a quick read) and the stamp additions. Prints requests
per second, latency percentiles, the ratios to /noop, and checks that every addition landed once.

OPENCOUPON_BENCH_DATABASE_URL=postgresql://… runs against PostgreSQL instead (the database's
public schema is DROPPED first) with BENCH_WORKERS server processes (default 2).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CLIENTS = 16
DURATION = float(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = 2.0
TARGET = 1500.0
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


async def measure(
    base: str, path: str, bodies: list[dict[str, Any]], headers: dict[str, str], seconds: float
) -> tuple[int, float, list[float], int]:
    """(requests, elapsed, latencies in ms, failures) for CLIENTS clients posting for `seconds`."""
    latencies: list[float] = []
    failures = 0
    count = 0
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(base, connector=connector, headers=headers) as http:

        async def client(i: int, stop_at: float, record: bool) -> None:
            nonlocal failures, count
            body = bodies[i % len(bodies)]
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                async with http.post(path, json=body) as response:
                    await response.read()
                    ok = response.status == 200
                if record:
                    latencies.append((time.perf_counter() - started) * 1000)
                    count += 1
                    failures += 0 if ok else 1

        warm_until = time.perf_counter() + WARMUP
        await asyncio.gather(*(client(i, warm_until, False) for i in range(CLIENTS)))
        started = time.perf_counter()
        await asyncio.gather(*(client(i, started + seconds, True) for i in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    return count, elapsed, latencies, failures


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    from opencoupon.db.engine import normalize_url

    engine = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="oc-bench-loyalty-") as tmp:
        url = os.environ.get("OPENCOUPON_BENCH_DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        workers = "1"
        if url.startswith("postgres"):
            reset_postgres(url)
            workers = os.environ.get("BENCH_WORKERS", "2")
        port = free_port()
        env = {
            **os.environ,
            "OPENCOUPON_DATABASE_URL": url,
            "OPENCOUPON_SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "OPENCOUPON_BASE_URL": f"http://127.0.0.1:{port}",
            "OPENCOUPON_RATE_LIMIT_PER_SECOND": "0",
            "OPENCOUPON_VAR_DIR": tmp,
        }
        subprocess.run([str(BIN / "opencoupon"), "migrate"], env=env, check=True, capture_output=True)
        created = subprocess.run(
            [str(BIN / "opencoupon"), "account", "create", "--email", "bench@example.com", "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        account = json.loads(created.stdout)
        headers = {"X-Client-Id": account["client_id"], "X-Client-Secret": account["client_secret"]}
        server = subprocess.Popen(
            [
                str(BIN / "opencoupon"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                workers,
                "--no-migrate",
            ],
            env=env,
            start_new_session=True,
        )
        try:
            return asyncio.run(run(f"http://127.0.0.1:{port}", headers, url))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


async def run(base: str, headers: dict[str, str], url: str) -> int:
    async with aiohttp.ClientSession(base, headers=headers) as http:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with http.get("/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.1)
        async with http.post(
            "/v4/loyalty/loyalty-cards", json={"name": "Bench stamps", "type": "stamp"}
        ) as response:
            card = await response.json()
        users = []
        for i in range(CLIENTS):
            async with http.post(
                "/v3/loyaltyusers/create",
                json={"loyaltycard": str(card["id"]), "email": f"u{i}@example.com", "password": "pw"},
            ) as response:
                users.append((await response.json())["user"]["ID"])

    bodies = [{"loyaltycard": str(card["id"]), "user": user, "stamps": 1} for user in users]
    noop = await measure(base, "/noop", [{}], headers, DURATION)
    info = await measure(base, "/v3/loyalty/info", [{"loyaltycard": str(card["id"])}], headers, DURATION)
    adds = await measure(base, "/v3/loyaltyusers/update", bodies, headers, DURATION)

    async with (
        aiohttp.ClientSession(base, headers=headers) as http,
        http.post("/v3/loyaltyusers/list", json={"loyaltycard": str(card["id"])}) as response,
    ):
        listed = await response.json()
    total_stamps = sum(int(u["stamps"]) for u in listed["users"])

    noop_rate = noop[0] / noop[1]
    add_rate = adds[0] / adds[1]
    print(f"database: {url.split('://')[0]}, {CLIENTS} clients, {DURATION:.0f} s per route")
    routes = (("/noop", noop), ("loyalty/info (quick read)", info), ("loyaltyusers/update +1 stamp", adds))
    for name, (count, elapsed, lat, failed) in routes:
        print(
            f"{name:30s} {count / elapsed:8.0f} req/s  p50 {percentile(lat, 0.5):6.1f} ms  "
            f"p99 {percentile(lat, 0.99):6.1f} ms  failures {failed}"
        )
    print(f"ratio to /noop: {add_rate / noop_rate:.2f} (loyalty/info: {info[0] / info[1] / noop_rate:.2f})")
    # Warm-up requests add stamps too; every successful call must have added exactly one.
    print(f"stamps on the card: {total_stamps} (>= {adds[0] - adds[3]} measured additions)")
    print(f"target >= {TARGET:.0f}/s: {'met' if add_rate >= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
