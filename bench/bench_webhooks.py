"""Webhook deliveries to a local 204 receiver (P6). Starts `opencoupon serve` (SQLite) and a receiver
process on loopback, measures the server's /noop ceiling and the raw HTTP client choice (aiohttp vs
httpx2, signed POSTs from one process), then, with one `opencoupon worker` process:

- throughput: 20,000 events committed first, then the worker started -> time until the receiver
  has every webhook-id (fan-out, signing, delivery and bookkeeping included);
- latency: with the worker running, events committed one per transaction at a steady 200/s for
  5 s -> commit to first attempt, p50/p99.

Targets: >= 1,000 deliveries/s; commit -> first attempt p99 <= 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SECRET_KEY = "bench-secret-key-0123456789-0123456789-abcdef"
THROUGHPUT_EVENTS = 20_000
TRICKLE_RATE = 200
TRICKLE_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def processes(tmp: Path) -> Iterator[dict[str, Any]]:
    env = {
        **os.environ,
        "OPENCOUPON_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
        "OPENCOUPON_SECRET_KEY": SECRET_KEY,
        "OPENCOUPON_VAR_DIR": str(tmp),
        "OPENCOUPON_ALLOW_PRIVATE_WEBHOOKS": "1",
        "OPENCOUPON_RATE_LIMIT_PER_SECOND": "0",
        "OPENCOUPON_RUN_WORKER_IN_PROCESS": "0",
    }
    subprocess.run([str(BIN / "opencoupon"), "migrate"], env=env, check=True, capture_output=True)
    account = json.loads(
        subprocess.run(
            [str(BIN / "opencoupon"), "account", "create", "--email", "bench@example.com", "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    port, receiver_port = free_port(), free_port()
    server = subprocess.Popen(
        [str(BIN / "opencoupon"), "serve", "--port", str(port), "--no-migrate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receiver = subprocess.Popen(
        [sys.executable, str(HERE / "webhook_receiver.py"), "--port", str(receiver_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        wait_http(f"http://127.0.0.1:{receiver_port}/stats")
        yield {
            "env": env,
            "account": account,
            "url": f"http://127.0.0.1:{port}",
            "receiver": f"http://127.0.0.1:{receiver_port}",
            "server_pid": server.pid,
        }
    finally:
        for proc in (server, receiver):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _load(url: str, seconds: float, concurrency: int, method: str = "GET") -> float:
    done = 0
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession() as client:

        async def one() -> None:
            nonlocal done
            while time.monotonic() < stop:
                async with client.request(method, url) as resp:
                    await resp.read()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        return done / (time.monotonic() - started)


def client_choice(receiver: str) -> dict[str, float]:
    """Signed POSTs from one process for 3 s each: the HTTP client decides the ceiling."""
    from opencoupon.webhooks import signing

    secret = signing.new_secret()
    body = json.dumps({"id": "evt_" + "a" * 20, "type": "coupon_validated", "data": {"x": 1}})
    headers = signing.headers([secret], "evt_" + "a" * 20, int(time.time()), body)
    url = receiver + "/client-test"
    results: dict[str, float] = {}

    async def with_aiohttp(concurrency: int) -> float:
        done = 0
        stop = time.monotonic() + 3
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as client:

            async def one() -> None:
                nonlocal done
                while time.monotonic() < stop:
                    async with client.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                    done += 1

            started = time.monotonic()
            await asyncio.gather(*(one() for _ in range(concurrency)))
            return done / (time.monotonic() - started)

    async def with_httpx(concurrency: int) -> float:
        done = 0
        stop = time.monotonic() + 3
        limits = httpx2.Limits(max_connections=concurrency)
        async with httpx2.AsyncClient(limits=limits) as client:

            async def one() -> None:
                nonlocal done
                while time.monotonic() < stop:
                    await client.post(url, content=body, headers=headers)
                    done += 1

            started = time.monotonic()
            await asyncio.gather(*(one() for _ in range(concurrency)))
            return done / (time.monotonic() - started)

    results["aiohttp c64"] = asyncio.run(with_aiohttp(64))
    results["httpx2 c64"] = asyncio.run(with_httpx(64))
    results["httpx2 c8"] = asyncio.run(with_httpx(8))
    return results


def emit_events(env: dict[str, str], account_id: int, count: int, *, per_transaction: int) -> None:
    from opencoupon.config import Settings
    from opencoupon.events import service as events
    from opencoupon.runtime import Runtime

    runtime = Runtime.from_settings(
        Settings(
            database_url=env["OPENCOUPON_DATABASE_URL"],
            secret_key=SECRET_KEY,
            var_dir=Path(env["OPENCOUPON_VAR_DIR"]),
        )
    )
    try:
        for start in range(0, count, per_transaction):
            with runtime.db.transaction() as session:
                for n in range(start, min(count, start + per_transaction)):
                    events.emit(
                        session, account_id, "coupon_validated", {"n": n, "t": time.time()}, campaign="cam_1"
                    )
    finally:
        runtime.db.dispose()


def trickle(env: dict[str, str], account_id: int) -> None:
    from opencoupon.config import Settings
    from opencoupon.events import service as events
    from opencoupon.runtime import Runtime

    runtime = Runtime.from_settings(
        Settings(
            database_url=env["OPENCOUPON_DATABASE_URL"],
            secret_key=SECRET_KEY,
            var_dir=Path(env["OPENCOUPON_VAR_DIR"]),
        )
    )
    try:
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < TRICKLE_SECONDS:
            due = started + n / TRICKLE_RATE
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            with runtime.db.transaction() as session:
                # The commit follows within microseconds of this stamp.
                events.emit(
                    session, account_id, "coupon_validated", {"n": n, "t": time.time()}, campaign="cam_1"
                )
            n += 1
    finally:
        runtime.db.dispose()


def wait_unique(receiver: str, expected: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = dict(httpx2.get(receiver + "/stats", timeout=10).json())
        if stats["unique"] >= expected or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), load-independent cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp, processes(Path(tmp)) as ctx:
        noop = asyncio.run(_load(ctx["url"] + "/noop", 3, 32))
        print(f"GET /noop (ceiling, same server): {noop:,.0f} req/s")
        for name, rate in client_choice(ctx["receiver"]).items():
            print(f"HTTP client {name}: {rate:,.0f} signed POSTs/s")
        httpx2.post(ctx["receiver"] + "/reset")
        account = ctx["account"]
        headers = {"X-Client-Id": account["client_id"], "X-Client-Secret": account["client_secret"]}
        created = httpx2.post(
            ctx["url"] + "/v4/webhooks",
            json={"url": ctx["receiver"] + "/hook", "events": ["*"]},
            headers=headers,
        )
        assert created.status_code == 201, created.text

        emit_events(ctx["env"], account["account_id"], THROUGHPUT_EVENTS, per_transaction=1000)
        started = time.time()
        worker = subprocess.Popen(
            [str(BIN / "opencoupon"), "worker"],
            env=ctx["env"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            stats = wait_unique(ctx["receiver"], THROUGHPUT_EVENTS, timeout=60)
            elapsed = stats["last"] - started
            rate = stats["unique"] / elapsed if elapsed > 0 else 0.0
            steady = stats["unique"] / max(1e-9, stats["last"] - stats["first"])
            cpu = cpu_seconds(worker.pid)
            print(
                f"throughput: {stats['unique']:,} of {THROUGHPUT_EVENTS:,} events delivered "
                f"{elapsed:.2f} s after the worker started -> {rate:,.0f} deliveries/s end to end "
                f"({steady:,.0f}/s from first to last delivery); {stats['requests']:,} requests"
            )
            print(
                f"worker CPU: {cpu:.1f} s for {stats['unique']:,} deliveries = "
                f"{cpu / max(1, stats['unique']) * 1000:.2f} ms each (a free core would do "
                f"{stats['unique'] / max(cpu, 1e-9):,.0f}/s)"
            )
            print(f"ratio deliveries/s to /noop req/s: {rate / noop:.2f}")

            httpx2.post(ctx["receiver"] + "/reset")
            trickle(ctx["env"], account["account_id"])
            expected = int(TRICKLE_RATE * TRICKLE_SECONDS)
            stats = wait_unique(ctx["receiver"], expected - 2, timeout=20)
        finally:
            worker.terminate()
            worker.wait(10)
        lat = [v * 1000 for v in stats["latencies"]]
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        print(
            f"latency at {TRICKLE_RATE} events/s for {TRICKLE_SECONDS:.0f} s ({len(lat)} events): "
            f"commit -> first attempt p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(lat):.0f} ms"
        )
        ok = rate >= 1000 and p99 <= 1000 and stats["unique"] >= expected - 2
        print("targets (>= 1,000/s, p99 <= 1 s):", "met" if ok else "NOT met")
        return 0 if stats["unique"] else 1


if __name__ == "__main__":
    sys.exit(main())
