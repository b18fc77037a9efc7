"""All or nothing: a real `opencoupon serve` process killed with SIGKILL in the middle of a
100,000-link call leaves either the whole batch or none of it, and never a duplicate code."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import text

from conftest import TEST_SECRET_KEY
from opencoupon.accounts import service as accounts
from opencoupon.config import Settings
from opencoupon.db.migrate import upgrade
from opencoupon.runtime import Runtime
from serve_process import ServeProcess, serve_env
from singleuse_fixtures import CampaignRef, make_campaign

AMOUNT = 100_000
OPENCOUPON = str(Path(sys.executable).parent / "opencoupon")
BATCH = {"automated_codes": True, "code_length": 12, "code_type": "alphanumeric", "code_prefix": "K-"}


@dataclass
class Target:
    """A database, a server process on it, and how to tell that a call is inside its transaction."""

    url: str
    runtime: Runtime
    in_transaction: Callable[[], bool]
    var_dir: Path
    client_id: str = ""
    client_secret: str = ""
    server: ServeProcess | None = None
    base: str = ""
    account_id: int = 0

    def start(self) -> None:
        env = serve_env(
            self.url,
            self.var_dir,
            OPENCOUPON_BASE_URL="http://links.example",
            # Only the call under test writes, so "the database is busy" means "inside the call".
            OPENCOUPON_RUN_WORKER_IN_PROCESS="false",
        )
        self.server = ServeProcess(env)
        self.base = self.server.start()

    def kill(self) -> None:
        assert self.server is not None
        self.server.kill()

    def stop(self) -> None:
        if self.server is not None:
            self.server.kill()


def _sqlite_busy(path: Path) -> Callable[[], bool]:
    def busy() -> bool:
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            conn.close()

    return busy


def _postgres_busy(runtime: Runtime) -> Callable[[], bool]:
    def busy() -> bool:
        with runtime.db.engine.connect() as conn:
            # A transaction that has written (the batch locks its campaign row first).
            found = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
                )
            ).scalar()
            return bool(found)

    return busy


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path, settings: Settings) -> Iterator[Target]:
    if request.param == "sqlite":
        path = tmp_path / "kill.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        runtime = Runtime.from_settings(
            Settings(database_url=url, secret_key=TEST_SECRET_KEY, var_dir=tmp_path)
        )
        busy = _sqlite_busy(path)
    else:
        if not settings.database_url.startswith("postgresql"):
            pytest.skip("PostgreSQL kill test runs when OPENCOUPON_TEST_DATABASE_URL is set")
        url = settings.database_url
        runtime = Runtime.from_settings(settings)
        busy = _postgres_busy(runtime)
    tgt = Target(url, runtime, busy, tmp_path)
    with runtime.db.transaction() as session:
        account, secret = accounts.create_account(
            session, runtime.keyring, email=f"kill-{time.time_ns()}@example.com", password=None
        )
        tgt.client_id, tgt.client_secret = account.client_id, secret
        tgt.account_id = account.id
    yield tgt
    tgt.stop()
    runtime.db.dispose()


def _inspect(runtime: Runtime, campaign: CampaignRef) -> dict[str, int]:
    """What a crash left behind, read through a fresh connection."""
    with runtime.db.transaction() as session:

        def one(sql: str) -> int:
            return int(session.execute(text(sql), {"c": campaign.id}).scalar() or 0)

        return {
            "rows": one("SELECT count(*) FROM coupon_sessions WHERE campaign_id = :c"),
            "batch_events": one(
                "SELECT count(*) FROM events WHERE type = 'singleuse_created' "
                "AND campaign = 'cam_' || CAST(:c AS VARCHAR(20))"
            ),
            "duplicate_codes": one(
                "SELECT count(*) FROM (SELECT code FROM coupon_sessions GROUP BY code HAVING count(*) > 1) d"
            ),
            "duplicate_short_codes": one(
                "SELECT count(*) FROM (SELECT short_code FROM coupon_sessions WHERE campaign_id = :c "
                "GROUP BY short_code HAVING count(*) > 1) d"
            ),
            "duplicate_custom_codes": one(
                "SELECT count(*) FROM (SELECT custom_validation_code FROM coupon_sessions "
                "WHERE campaign_id = :c AND custom_validation_code IS NOT NULL "
                "GROUP BY custom_validation_code HAVING count(*) > 1) d"
            ),
        }


def _kill_during_call(
    tgt: Target, campaign: CampaignRef, when: str, delay: float
) -> tuple[dict[str, int], Any]:
    """Start a 100,000-link call and SIGKILL the server `delay` seconds after its transaction is
    seen (when="transaction") or as soon as the answer starts to arrive (when="answer")."""
    tgt.start()
    outcome: dict[str, Any] = {}
    answer_started = threading.Event()

    def call() -> None:
        try:
            with httpx2.stream(
                "POST",
                tgt.base + "/v3/multiplesingleuse/create",
                json={"campaign": campaign.public_id, "amount": AMOUNT, **BATCH},
                headers={"X-Client-Id": tgt.client_id, "X-Client-Secret": tgt.client_secret},
                timeout=120,
            ) as response:
                outcome["status"] = response.status_code
                answer_started.set()
                outcome["body"] = response.read()
        except httpx2.HTTPError as exc:
            outcome["error"] = repr(exc)
        finally:
            answer_started.set()

    client = threading.Thread(target=call)
    client.start()
    deadline = time.monotonic() + 60
    if when == "answer":
        assert answer_started.wait(timeout=60), "no answer"
    else:
        while not tgt.in_transaction():
            assert time.monotonic() < deadline, "the call never started its transaction"
            assert not answer_started.is_set(), f"the call ended before the kill: {outcome}"
            time.sleep(0.01)
        time.sleep(delay)
    tgt.kill()
    client.join(timeout=30)
    if tgt.url.startswith("postgresql"):
        # The server's backend ends (and rolls back) once it notices its client is gone.
        while tgt.in_transaction():
            assert time.monotonic() < deadline + 30, "the killed server's transaction lingers"
            time.sleep(0.05)
    return _inspect(tgt.runtime, campaign), outcome


@pytest.mark.slow
def test_sigkill_mid_call_leaves_all_or_nothing_and_no_duplicate(target: Target) -> None:
    account_id = target.account_id
    seen: list[str] = []
    for when, delay in [("transaction", 0.2), ("transaction", 1.0), ("answer", 0.0)]:
        campaign = make_campaign(target.runtime, account_id, "Kill test")
        state, outcome = _kill_during_call(target, campaign, when, delay)
        assert state["rows"] in (0, AMOUNT), (when, delay, state, outcome)
        assert state["batch_events"] == (1 if state["rows"] else 0), state
        assert state["duplicate_codes"] == 0
        assert state["duplicate_short_codes"] == 0
        assert state["duplicate_custom_codes"] == 0
        if outcome.get("status") == 200:
            # The server answered, so it had committed: everything must be there.
            assert state["rows"] == AMOUNT
        seen.append("all" if state["rows"] else "none")
    # After two crashes the database took a whole new batch, committed before the answer began.
    assert seen[-1] == "all"

    if target.url.startswith("sqlite"):
        db_path = target.url.removeprefix("sqlite:///")
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
