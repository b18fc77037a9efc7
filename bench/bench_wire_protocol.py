"""The cost of the v3 request layer: an authenticated read call (`/v4/subaccount/list`: body parse,
HMAC secret check, one transaction, envelope) and a write call (`/v3/account/sso`: one-time token
insert) against the same server's no-op route, with 16 keep-alive clients; plus the server's RSS.

Runs `opencoupon serve` as a subprocess on a free loopback port with its own SQLite file, and stops
by itself in about a minute: `.venv/bin/python bench/bench_wire_protocol.py`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

BIN = Path(sys.executable).parent
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
SECONDS = 6.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def load(url: str, path: str, headers: dict[str, str]) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + SECONDS

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.post(url + path, headers=headers, data=b"") as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session) for _ in range(CLIENTS)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "errors": float(errors),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="oc-bench-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCOUPON_")}
        env.update(
            OPENCOUPON_DATABASE_URL=f"sqlite:///{tmp}/bench.db",
            OPENCOUPON_VAR_DIR=tmp,
            OPENCOUPON_BASE_URL=url,
            OPENCOUPON_RATE_LIMIT_PER_SECOND="0",
        )
        subprocess.run([str(BIN / "opencoupon"), "migrate"], env=env, check=True, capture_output=True)
        created = json.loads(
            subprocess.run(
                [str(BIN / "opencoupon"), "account", "create", "--email", "bench@example.com", "--json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        headers = {"X-Client-Id": created["client_id"], "X-Client-Secret": created["client_secret"]}
        server = subprocess.Popen(
            [str(BIN / "opencoupon"), "serve", "--port", str(port), "--no-migrate"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import urllib.request

            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            time.sleep(1)
            idle = rss_mb(server.pid)
            results: dict[str, Any] = {}
            results["noop"] = asyncio.run(load(url, "/noop", {}))
            results["subaccount/list"] = asyncio.run(load(url, "/v4/subaccount/list", headers))
            results["account/sso (write)"] = asyncio.run(load(url, "/v3/account/sso", headers))
            peak = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=20)
    ceiling = results["noop"]["rps"]
    print(f"{CLIENTS} keep-alive clients, {SECONDS:.0f} s per route, SQLite, one server process")
    print(f"{'route':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs noop':>8}")
    for name, r in results.items():
        print(
            f"{name:<22} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['errors']:>7.0f} {r['rps'] / ceiling:>8.2f}"
        )
    print(f"server RSS: idle {idle:.0f} MB, after the runs {peak:.0f} MB")


if __name__ == "__main__":
    main()
