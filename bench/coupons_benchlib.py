"""Shared pieces of the coupon benchmarks: a real `opencoupon serve` subprocess on a loopback port
with its own SQLite file, an account made with the CLI, sessions inserted with the raw driver, and
an aiohttp keep-alive load client that measures throughput and latency percentiles."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import socket
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ALPHABET = string.ascii_lowercase + string.digits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    db_path: Path
    env: dict[str, str]
    client_id: str
    client_secret: str
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Client-Id": self.client_id, "X-Client-Secret": self.client_secret}

    def start(self) -> None:
        port = int(self.url.rsplit(":", 1)[1])
        command = [str(BIN / "opencoupon"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        self.process = subprocess.Popen(
            [*command, "--no-migrate", "--workers", str(self.workers)],
            env=self.env,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx2.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def pids(self) -> list[int]:
        """The server process and its worker processes (`--workers`)."""
        if self.process is None:
            return []
        found = [self.process.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found.append(int(stat.parent.name))
        return found

    def rss_mb(self) -> float:
        """Resident memory of the server, all its processes together."""
        total = 0.0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        return total

    def cpu_seconds(self) -> float:
        """CPU time the server has used (user + system), all its processes together."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def call(self, path: str, **params: Any) -> dict[str, Any]:
        response = httpx2.post(self.url + path, json=params, headers=self.headers, timeout=30)
        response.raise_for_status()
        return dict(response.json())


@contextmanager
def server(workers: int = 1) -> Iterator[Server]:
    """A migrated database with one account, then the server running on it (`workers` API
    processes: 1 is what `make run` serves)."""
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
        created = subprocess.run(
            [str(BIN / "opencoupon"), "account", "create", "--email", "bench@example.com", "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        account = json.loads(created.stdout)
        srv = Server(
            f"http://127.0.0.1:{port}", db_path, env, account["client_id"], account["client_secret"], workers
        )
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def unique_codes(count: int) -> list[str]:
    """Session codes whose 6-character short forms are unique too (as new_session guarantees).
    Benchmark data need not be unpredictable, so a seeded generator makes them quickly."""
    rng = random.Random(count)
    codes: list[str] = []
    shorts: set[str] = set()
    while len(codes) < count:
        code = "".join(rng.choices(ALPHABET, k=21))
        if code[:6] in shorts:
            continue
        shorts.add(code[:6])
        codes.append(code)
    return codes


SESSION_COLUMNS = (
    "account_id, campaign_id, code, short_code, device_id, source, link_status, locked, claimtype, "
    "validation_count, value, customid, firstname, lastname, email, phone, custom_fields, consent, "
    "saved_to_passbook, created_at, updated_at, pin_failures, opened_at, claimed_at, validated_at"
)


def insert_sessions(
    db_path: Path,
    campaign_id: int,
    codes: list[str],
    dates: Callable[[int], tuple[str | None, str | None, str | None]] | None = None,
    people: Callable[[int], tuple[str, str]] | None = None,
) -> None:
    """Insert sessions with the raw sqlite3 driver in one transaction (opened/claimed/validated
    dates from `dates(i)`, the claim's first name and email from `people(i)`). For large loads the
    server should be stopped: the secondary indexes are dropped during the load and built again
    afterwards, which is much faster than growing them."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.execute("PRAGMA temp_store=MEMORY")
    rebuild: list[str] = []
    if len(codes) > 100_000:
        rebuild = [
            sql
            for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'coupon_sessions' "
                "AND sql IS NOT NULL"
            )
        ]
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'coupon_sessions' "
            "AND sql IS NOT NULL"
        ).fetchall():
            conn.execute(f'DROP INDEX "{name}"')
    account_id = conn.execute("SELECT account_id FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.000000")
    conn.execute("BEGIN")

    def rows() -> Iterator[tuple[Any, ...]]:
        for i, code in enumerate(codes):
            opened, claimed, validated = dates(i) if dates else (None, None, None)
            firstname, email = people(i) if people else ("", "")
            yield (
                account_id, campaign_id, code, code[:6], "", "api", "normal", 0, "", 1 if validated else 0,
                "", "", firstname, "", email, "", "{}", 0, 0, now, now, 0, opened, claimed, validated,
            )  # fmt: skip

    conn.executemany(
        f"INSERT INTO coupon_sessions ({SESSION_COLUMNS}) VALUES ({','.join('?' * 25)})",
        rows(),
    )
    for sql in rebuild:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    server_cpu: float = 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu / self.requests * 1000 if self.requests else 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


async def _load(
    url: str,
    clients: int,
    seconds: float,
    body_for: Callable[[int], dict[str, Any] | None],
    headers: dict[str, str],
    ok: Callable[[int, dict[str, Any]], bool],
    warmup: float,
) -> LoadResult:
    counter = iter(range(10**12))
    latencies: list[float] = []
    done = errors = 0
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        start = time.monotonic()
        measure_from = start + warmup
        stop = measure_from + seconds

        async def worker() -> None:
            nonlocal done, errors
            while True:
                t0 = time.monotonic()
                if t0 >= stop:
                    return
                body = body_for(next(counter))
                if body is None:
                    async with http.get(url) as resp:
                        status = resp.status
                        payload = await resp.json(content_type=None)
                else:
                    async with http.post(url, json=body) as resp:
                        status = resp.status
                        payload = await resp.json(content_type=None)
                t1 = time.monotonic()
                if t0 >= measure_from:
                    done += 1
                    latencies.append(t1 - t0)
                    if not ok(status, payload):
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return LoadResult(done, errors, seconds, latencies)


def load(
    url: str,
    *,
    srv: Server | None = None,
    clients: int,
    seconds: float,
    body_for: Callable[[int], dict[str, Any] | None],
    headers: dict[str, str] | None = None,
    ok: Callable[[int, dict[str, Any]], bool] = lambda status, _body: status == 200,
    warmup: float = 1.0,
) -> LoadResult:
    cpu_before = srv.cpu_seconds() if srv else 0.0
    result = asyncio.run(_load(url, clients, seconds, body_for, headers or {}, ok, warmup))
    if srv is not None:
        # Includes the warm-up requests' share; close enough to compare routes in one run.
        result.server_cpu = (srv.cpu_seconds() - cpu_before) * seconds / (seconds + warmup)
    return result


def report(name: str, result: LoadResult) -> None:
    print(
        f"{name:<34} {result.rate:>8.0f} req/s  p50 {result.percentile(50):6.1f} ms  "
        f"p99 {result.percentile(99):6.1f} ms  server CPU {result.cpu_ms_per_request:5.2f} ms/req  "
        f"n={result.requests} errors={result.errors}"
    )


def sqlite_validation_floor(db_path: Path, codes: list[str], group: int = 16) -> float:
    """CPU ms per validation that SQLite alone needs: the validation's own statements (the same
    SQL the server runs, from coupons/hotpath.py and events/service.py) replayed on a bare sqlite3
    connection for `codes`, `group` validations per transaction as the server's group commit does.
    No HTTP, no Python of ours: the least any validation can cost on this machine."""
    from opencoupon.coupons import hotpath
    from opencoupon.events import service as events

    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")  # as the server's connections
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    day = now[:10]
    validated = 0
    cpu = time.process_time()
    for start in range(0, len(codes), group):
        conn.execute("BEGIN IMMEDIATE")
        for code in codes[start : start + group]:
            row = conn.execute(hotpath.SESSION_BY_CODE.sqlite_sql, {"code": code}).fetchone()
            session_id, account_id, campaign_id = row[0], row[1], row[2]
            returned = conn.execute(
                hotpath.VALIDATE_SESSION.sqlite_sql,
                {"now": now, "money": None, "value": None, "id": session_id, "allowed": 1, "no": 0},
            ).fetchone()
            if returned is None:
                continue  # validated during the load already
            ordinal = returned[0]
            validated += 1
            conn.execute(hotpath.COUNT_CAMPAIGN_VALIDATION.sqlite_sql, {"id": campaign_id})
            conn.execute(
                hotpath.INSERT_VALIDATION.sqlite_sql,
                {
                    "account_id": account_id,
                    "campaign_id": campaign_id,
                    "session_id": session_id,
                    "ordinal": ordinal,
                    "method": "api",
                    "money": None,
                    "now": now,
                },
            )
            conn.execute(
                hotpath.BUMP_DAY.sqlite_sql,
                {"campaign_id": campaign_id, "day": day, "opens": 0, "claims": 0, "validations": 1},
            )
            conn.execute(
                events.INSERT_EVENT.sqlite_sql,
                {
                    "public_id": f"evt_floor{code}",
                    "account_id": account_id,
                    "type": "coupon_validated",
                    "campaign": f"cam_{campaign_id}",
                    "session": code,
                    "data": json.dumps({"couponsession": code, "campaign": f"cam_{campaign_id}"}),
                    "now": now,
                },
            ).fetchone()
            conn.execute(events.HAS_SUBSCRIBER.sqlite_sql, {"account_id": account_id, "yes": 1}).fetchone()
        conn.execute("COMMIT")
    spent = time.process_time() - cpu
    conn.close()
    if validated < len(codes) // 2:
        raise RuntimeError("too few sessions left unvalidated to measure the floor")
    return spent / validated * 1000
