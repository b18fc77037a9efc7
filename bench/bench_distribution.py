"""Distribution benchmark: `/v3/send/email` throughput against the same server's no-op route, and
how fast the in-process worker delivers the queued emails to a local SMTP server (aiosmtpd).

Runs `opencoupon serve` as a subprocess on a free loopback port with its own SQLite file and the
server-default SMTP settings pointing at an aiosmtpd started here; stops by itself in about a
minute."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
from aiosmtpd.controller import Controller

BIN = Path(sys.executable).parent
CLIENTS = 16
NOOP_SECONDS = 4.0
SEND_SECONDS = 6.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CountingHandler:
    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.count += 1
            self.last = time.monotonic()
        return "250 OK"


async def load(url: str, headers: dict[str, str], seconds: float, body: Any) -> tuple[int, int, list[float]]:
    done = 0
    errors = 0
    latencies: list[float] = []
    counter = iter(range(10**9))
    stop_at = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        while time.monotonic() < stop_at:
            payload = body(next(counter)) if body else None
            started = time.perf_counter()
            async with session.post(url, json=payload, headers=headers) as response:
                data = await response.read()
            latencies.append(time.perf_counter() - started)
            if response.status == 200 and b'"OK"' in data:
                done += 1
            else:
                errors += 1

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(CLIENTS)))
    return done, errors, latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000 if ordered else 0.0


def main() -> None:
    handler = CountingHandler()
    smtp_port = free_port()
    smtp = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    with tempfile.TemporaryDirectory(prefix="opencoupon-bench-") as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "OPENCOUPON_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
            "OPENCOUPON_SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "OPENCOUPON_BASE_URL": base,
            "OPENCOUPON_VAR_DIR": tmp,
            "OPENCOUPON_RATE_LIMIT_PER_SECOND": "0",
            "OPENCOUPON_SMTP_HOST": "127.0.0.1",
            "OPENCOUPON_SMTP_PORT": str(smtp_port),
            "OPENCOUPON_SMTP_TLS": "none",
            "OPENCOUPON_SMTP_SENDER_EMAIL": "bench@opencoupon.example",
        }
        opencoupon = str(BIN / "opencoupon")
        subprocess.run([opencoupon, "migrate"], env=env, check=True, capture_output=True)
        account = json.loads(
            subprocess.run(
                [opencoupon, "account", "create", "--email", "bench@example.com", "--json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        campaign_id = subprocess.run(
            [
                sys.executable,
                "-c",
                "from opencoupon.config import get_settings; from opencoupon.runtime import Runtime;"
                "from opencoupon.models import Campaign; from opencoupon.kit.clock import utcnow;"
                "rt = Runtime.from_settings(get_settings()); now = utcnow()\n"
                "with rt.db.transaction() as s:\n"
                f"    c = Campaign(account_id={account['account_id']}, code='bench1', name='Bench',"
                " title='Bench coupon', claim_form={}, settings={}, created_at=now, updated_at=now)\n"
                "    s.add(c); s.flush(); print(c.id)",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        server = subprocess.Popen(
            [opencoupon, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-migrate"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx2.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx2.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                time.sleep(0.1)
            headers = {"X-Client-Id": account["client_id"], "X-Client-Secret": account["client_secret"]}
            noop, _, noop_lat = asyncio.run(load(base + "/noop", {}, NOOP_SECONDS, None))
            started = time.monotonic()
            sent, errors, send_lat = asyncio.run(
                load(
                    base + "/v3/send/email",
                    headers,
                    SEND_SECONDS,
                    lambda i: {"campaign": f"cam_{campaign_id}", "email": f"r{i}@example.org"},
                )
            )
            api_done = time.monotonic()
            deadline = time.monotonic() + 45
            while handler.count < sent and time.monotonic() < deadline:
                time.sleep(0.1)
            delivered = handler.count
            delivery_seconds = (handler.last or time.monotonic()) - started
        finally:
            server.terminate()
            server.wait(timeout=10)
            smtp.stop()
    noop_rate = noop / NOOP_SECONDS
    send_rate = sent / (api_done - started)
    print(f"noop: {noop_rate:,.0f} req/s, p50 {pct(noop_lat, 50):.1f} ms, p99 {pct(noop_lat, 99):.1f} ms")
    print(
        f"/v3/send/email ({CLIENTS} clients): {send_rate:,.0f} req/s, p50 {pct(send_lat, 50):.1f} ms, "
        f"p99 {pct(send_lat, 99):.1f} ms, errors {errors}, ratio to noop {send_rate / noop_rate:.2f}"
    )
    print(
        f"delivered {delivered}/{sent} emails to the SMTP server in {delivery_seconds:.1f} s "
        f"({delivered / delivery_seconds:,.0f} emails/s, in-process worker while the API was loaded)"
    )


if __name__ == "__main__":
    main()
