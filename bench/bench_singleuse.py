"""100,000 single-use links with automated codes in one call, end to end over HTTP.

Starts `opencoupon serve` on a free loopback port with its own temporary SQLite database, measures
the no-op route `/noop` (the ceiling of the same server), then alternates, twice:
  * raw: the same kind of rows (100,000 links with their codes and every column the server
    writes) inserted straight through the database driver in one transaction (sqlite3
    executemany; psycopg COPY on PostgreSQL), with the connection settings the server uses;
  * api: POST /v3/multiplesingleuse/create amount=100000 automated_codes=true, timed from the
    request to the parsed JSON answer.
Prints each run, the best of each, the ratio raw/api (target >= 0.25), the 5 s budget check and the
server's peak RSS (VmHWM; budget 600 MB).

With OPENCOUPON_BENCH_PG_URL=postgresql://... the same runs against that PostgreSQL database too.
That database is emptied first (schema public dropped and recreated): use a scratch database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from sqlalchemy import create_engine, text

from opencoupon.accounts import service as accounts
from opencoupon.config import Settings
from opencoupon.db.engine import normalize_url
from opencoupon.db.migrate import upgrade
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime
from opencoupon.singleuse.codes import ALPHANUMERIC, SESSION_ALPHABET, random_strings

AMOUNT = 100_000
ROUNDS = 3
BUDGET_S = 5.0
TARGET_RATIO = 0.25
RSS_BUDGET_MB = 600
SECRET = "bench-secret-key-0123456789-0123456789-0123456789"
OPENCOUPON = str(Path(sys.executable).parent / "opencoupon")
PARAMS = {
    "amount": AMOUNT,
    "automated_codes": True,
    "code_prefix": "B-",
    "code_length": 12,
    "code_type": "alphanumeric",
}
# What the server writes besides id, code, short_code and custom_validation_code.
CONSTANT_COLUMNS = [
    "account_id",
    "campaign_id",
    "device_id",
    "source",
    "link_status",
    "locked",
    "claimtype",
    "validation_count",
    "value",
    "customid",
    "firstname",
    "lastname",
    "email",
    "phone",
    "custom_fields",
    "consent",
    "saved_to_passbook",
    "created_at",
    "updated_at",
]
COLUMNS = ["id", "code", "short_code", "custom_validation_code", *CONSTANT_COLUMNS]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class Server:
    def __init__(self, url: str, var_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "OPENCOUPON_DATABASE_URL": url,
            "OPENCOUPON_SECRET_KEY": SECRET,
            "OPENCOUPON_BASE_URL": "https://links.example",
            "OPENCOUPON_VAR_DIR": str(var_dir),
            "OPENCOUPON_RATE_LIMIT_PER_SECOND": "0",
        }
        self.process = subprocess.Popen(
            [OPENCOUPON, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def setup(url: str, var_dir: Path) -> tuple[Runtime, int, dict[str, str]]:
    upgrade(url)
    runtime = Runtime.from_settings(Settings(database_url=url, secret_key=SECRET, var_dir=var_dir))
    with runtime.db.transaction() as session:
        account, secret = accounts.create_account(
            session, runtime.keyring, email=f"bench-{time.time_ns()}@example.com", password=None
        )
        headers = {"X-Client-Id": account.client_id, "X-Client-Secret": secret}
        return runtime, account.id, headers


def new_campaign(runtime: Runtime, account_id: int) -> int:
    now = utcnow()
    with runtime.db.transaction() as session:
        campaign = Campaign(
            account_id=account_id, code=ids.random_code(6), name="Bench", created_at=now, updated_at=now
        )
        session.add(campaign)
        session.flush()
        return campaign.id


def rows_for(campaign_id: int, account_id: int, first_id: int, postgres: bool) -> list[tuple[Any, ...]]:
    """100,000 rows as the server writes them: unique short codes, unique custom codes, both in
    sorted order."""
    codes = sorted({c[:6]: c for c in random_strings(AMOUNT + 100, 21, SESSION_ALPHABET)}.values())[:AMOUNT]
    custom = sorted({"B-" + c for c in random_strings(AMOUNT + 100, 12, ALPHANUMERIC)})[:AMOUNT]
    now = utcnow()
    stamp: Any = now if postgres else now.strftime("%Y-%m-%d %H:%M:%S.%f")
    false: Any = False if postgres else 0
    constants = (account_id, campaign_id, "", "single_use", "normal", false, "", 0, "", "", "", "", "", "")
    constants += ("{}", false, false, stamp, stamp)
    return [
        (first_id + i, code, code[:6], value, *constants)
        for i, (code, value) in enumerate(zip(codes, custom, strict=True))
    ]


def raw_sqlite(path: Path, runtime: Runtime, account_id: int) -> tuple[float, float]:
    campaign_id = new_campaign(runtime, account_id)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    # The server's connection settings, and the page cache it uses while inserting a batch.
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "cache_size=-65536"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("BEGIN IMMEDIATE")
    top = conn.execute("SELECT coalesce(max(id), 0) FROM coupon_sessions").fetchone()[0]
    # Only the insert and the commit are timed: the rows are ready beforehand.
    rows = rows_for(campaign_id, account_id, top + 1, postgres=False)
    start, cpu = time.perf_counter(), time.process_time()
    marks = ", ".join("?" * len(COLUMNS))
    conn.executemany(f"INSERT INTO coupon_sessions ({', '.join(COLUMNS)}) VALUES ({marks})", rows)
    conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    conn.close()
    return elapsed, cpu


def raw_postgres(url: str, runtime: Runtime, account_id: int) -> tuple[float, float]:
    import psycopg

    campaign_id = new_campaign(runtime, account_id)
    rows = rows_for(campaign_id, account_id, 0, postgres=True)
    with psycopg.connect(url) as conn:
        # Timed: drawing the ids from the sequence (as the server does), COPY and commit.
        start, cpu = time.perf_counter(), time.process_time()
        with conn.cursor() as cursor:
            ids_ = [
                r[0]
                for r in cursor.execute(
                    "SELECT nextval(pg_get_serial_sequence('coupon_sessions', 'id')) "
                    "FROM generate_series(1, %s) ORDER BY 1",
                    (AMOUNT,),
                )
            ]
            rows = [(ids_[i], *row[1:]) for i, row in enumerate(rows)]
            with cursor.copy(f"COPY coupon_sessions ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        conn.commit()
        return time.perf_counter() - start, time.process_time() - cpu


def api_call(server: Server, headers: dict[str, str], campaign: str) -> tuple[float, float]:
    """(seconds to the first byte of the answer, seconds to the parsed answer)."""
    start = time.perf_counter()
    with httpx2.stream(
        "POST",
        server.base + "/v3/multiplesingleuse/create",
        json={"campaign": campaign, **PARAMS},
        headers=headers,
        timeout=120,
    ) as response:
        first_byte = time.perf_counter() - start
        body = json.loads(response.read())
    total = time.perf_counter() - start
    if response.status_code != 200 or len(body["data"]) != AMOUNT:
        raise RuntimeError(f"call failed: {response.status_code} {str(body)[:300]}")
    return first_byte, total


def noop_ceiling(server: Server, seconds: float = 2.0) -> tuple[float, float]:
    latencies = []
    with httpx2.Client(base_url=server.base) as client:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            client.post("/noop")
            latencies.append(time.perf_counter() - t)
    return len(latencies) / seconds, statistics.median(latencies) * 1000


def run(label: str, url: str, var_dir: Path, raw: Any) -> dict[str, Any]:
    runtime, account_id, headers = setup(url, var_dir)
    server = Server(url, var_dir)
    try:
        idle_rss, _ = peak_rss_mb(server.process.pid)
        noop_rps, noop_p50 = noop_ceiling(server)
        raws, apis, ttfbs = [], [], []
        for round_ in range(1, ROUNDS + 1):
            raw_s, raw_cpu = raw(runtime, account_id)
            raws.append(raw_s)
            campaign = f"cam_{new_campaign(runtime, account_id)}"
            before = cpu_seconds(server.process.pid)
            client_cpu = time.process_time()
            ttfb, total = api_call(server, headers, campaign)
            server_cpu = cpu_seconds(server.process.pid) - before
            client_cpu = time.process_time() - client_cpu
            ttfbs.append(ttfb)
            apis.append(total)
            print(
                f"  [{label}] round {round_}: raw driver insert {raw_s:.2f} s (client CPU {raw_cpu:.2f} s); "
                f"API call {total:.2f} s, answer starts after {ttfb:.2f} s (server CPU {server_cpu:.2f} s, "
                f"client CPU {client_cpu:.2f} s)",
                flush=True,
            )
        _, peak_rss = peak_rss_mb(server.process.pid)
    finally:
        server.stop()
        runtime.db.dispose()
    best_raw, best_api = min(raws), min(apis)
    result = {
        "backend": label,
        "noop_req_per_s": round(noop_rps),
        "noop_p50_ms": round(noop_p50, 2),
        "raw_insert_s": round(best_raw, 2),
        "api_call_s": round(best_api, 2),
        "api_first_byte_s": round(min(ttfbs), 2),
        "links_per_s": round(AMOUNT / best_api),
        "ratio_raw_over_api": round(best_raw / best_api, 2),
        "server_idle_rss_mb": round(idle_rss),
        "server_peak_rss_mb": round(peak_rss),
    }
    print(
        f"{label}: 100,000 links in one call: {best_api:.2f} s end to end "
        f"({AMOUNT / best_api:,.0f} links/s; budget {BUDGET_S:.0f} s: "
        f"{'OK' if best_api <= BUDGET_S else 'OVER'}); raw driver insert of the same rows "
        f"{best_raw:.2f} s; ratio {best_raw / best_api:.2f} (target >= {TARGET_RATIO}: "
        f"{'OK' if best_raw / best_api >= TARGET_RATIO else 'UNDER'}); server RSS idle "
        f"{idle_rss:.0f} MB, peak {peak_rss:.0f} MB (budget {RSS_BUDGET_MB} MB: "
        f"{'OK' if peak_rss <= RSS_BUDGET_MB else 'OVER'}); /noop ceiling {noop_rps:,.0f} req/s "
        f"(p50 {noop_p50:.2f} ms)",
        flush=True,
    )
    return result


def reset_postgres(url: str) -> None:
    engine = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def main() -> None:
    print(f"bench_singleuse {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs", flush=True)
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-singleuse-"))
    try:
        path = tmp / "bench.db"
        results.append(
            run(
                "sqlite",
                f"sqlite:///{path}",
                tmp,
                lambda runtime, account_id: raw_sqlite(path, runtime, account_id),
            )
        )
        pg_url = os.environ.get("OPENCOUPON_BENCH_PG_URL")
        if pg_url:
            reset_postgres(pg_url)
            results.append(
                run(
                    "postgresql",
                    pg_url,
                    tmp,
                    lambda runtime, account_id: raw_postgres(pg_url, runtime, account_id),
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
