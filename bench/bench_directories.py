"""Directory throughput: payment reports (/v3/directoryusers/update, a real write each), the
directory page, and a signed-in member opening a locked-directory coupon (gate + session), each
with 16 concurrent clients, against the same server's no-op route.

Run: .venv/bin/python bench/bench_directories.py   (starts its own server on a temp SQLite DB)"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
CLIENTS = 16
SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(env: dict[str, str]) -> dict[str, Any]:
    subprocess.run([str(BIN / "opencoupon"), "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [str(BIN / "opencoupon"), "account", "create", "--email", "bench@example.com", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    account: dict[str, Any] = json.loads(out)
    code = (
        "from opencoupon.config import get_settings\n"
        "from opencoupon.runtime import Runtime\n"
        "from opencoupon.models import Campaign\n"
        "from opencoupon.kit.clock import utcnow\n"
        "rt = Runtime.from_settings(get_settings())\n"
        "with rt.db.transaction() as s:\n"
        "    for i in range(40):\n"
        f"        s.add(Campaign(account_id={account['account_id']}, code=f'bench{{i:02d}}'[:6] + str(i),"
        " name=f'Deal {i}', description='Bench deal', created_at=utcnow(), updated_at=utcnow()))\n"
    )
    subprocess.run([str(BIN / "python"), "-c", code], env=env, check=True)
    return account


async def run_load(url: str, make: Any, seconds: float = SECONDS) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client(n: int) -> None:
            nonlocal errors
            i = 0
            while time.perf_counter() < deadline:
                method, path, kwargs, ok = make(n, i)
                i += 1
                start = time.perf_counter()
                async with http.request(method, url + path, allow_redirects=False, **kwargs) as resp:
                    await resp.read()
                    if resp.status not in ok:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "errors": errors,
        "requests": len(latencies),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-dir-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "OPENCOUPON_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "OPENCOUPON_VAR_DIR": tmp,
            "OPENCOUPON_BASE_URL": url,
            "OPENCOUPON_RATE_LIMIT_PER_SECOND": "0",
        }
        account = prepare(env)
        server = subprocess.Popen(
            [str(BIN / "opencoupon"), "serve", "--port", str(port), "--no-migrate"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(_bench(url, account))
        finally:
            server.terminate()
            server.wait(timeout=20)


async def _bench(url: str, account: dict[str, Any]) -> None:
    headers = {"X-Client-Id": account["client_id"], "X-Client-Secret": account["client_secret"]}
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        first = await _json(http, "GET", url + "/v4/directory", headers)
        assert first == []
        campaigns = [{"id": f"cam_{i}", "featured": i % 10 == 0} for i in range(1, 41)]
        directory = await _json(
            http,
            "POST",
            url + "/v4/directory",
            headers,
            {
                "name": "Bench book",
                "access": "payment",
                "payment_url": "https://pay.example.com/",
                "campaigns": campaigns,
            },
        )
        users = []
        for i in range(CLIENTS):
            user = await _json(
                http,
                "POST",
                url + f"/v4/directory/{directory['id']}/users",
                headers,
                {"email": f"b{i}@example.com"},
            )
            users.append(user["id"])
        # One signed-in, paid member (cookie from the single sign-on link).
        member = users[0]
        await _json(http, "POST", url + f"/v4/directory/{directory['id']}/users/{member}/access", headers, {})
        sso = await _json(
            http, "POST", url + f"/v4/directory/{directory['id']}/users/{member}/sso", headers, {}
        )
        async with http.get(sso["url"], allow_redirects=False) as resp:
            cookie = re.search(r"(ocd_[a-z0-9]+=[^;]+)", resp.headers.get("set-cookie", ""))
            assert cookie, resp.headers
    member_cookie = {"Cookie": cookie.group(1)}
    statuses = ["completed", "pending", "cancelled"]

    scenarios = {
        "noop": lambda n, i: ("GET", "/noop", {}, {200}),
        "directory/info (authed read)": lambda n, i: (
            "POST",
            "/v3/directory/info",
            {"headers": headers, "json": {"directory": directory["id"]}},
            {200},
        ),
        "directoryusers/update": lambda n, i: (
            "POST",
            "/v3/directoryusers/update",
            {
                "headers": headers,
                "json": {"directory": directory["id"], "user": users[n], "status": statuses[i % 3]},
            },
            {200},
        ),
        "GET /d/{code} (40 coupons)": lambda n, i: ("GET", f"/d/{directory['code']}", {}, {200}),
        "member opens coupon (gate)": lambda n, i: (
            "GET",
            f"/d/{directory['code']}/c/cam_{1 + (i % 40)}",
            {"headers": member_cookie},
            {303},
        ),
    }
    results = {}
    for name, make in scenarios.items():
        results[name] = await run_load(url, make)
    ceiling = results["noop"]["rps"]
    print(f"{CLIENTS} clients, {SECONDS:.0f} s each, SQLite, one server process")
    print(f"{'scenario':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs noop':>8} {'errors':>7}")
    for name, r in results.items():
        print(
            f"{name:32} {r['rps']:8.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
            f"{r['rps'] / ceiling:8.2f} {int(r['errors']):7d}"
        )
    if any(r["errors"] for r in results.values()):
        sys.exit(1)


async def _json(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: Any = None
) -> Any:
    async with http.request(method, url, headers=headers, json=body) as resp:
        data = await resp.json()
        assert resp.status in (200, 201), data
        return data


if __name__ == "__main__":
    main()
