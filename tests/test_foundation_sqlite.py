"""Concurrent writers never see "database is locked": many writing API requests at once while other
OS processes (`opencoupon account create`) write to the same database file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2

from conftest import ISSUED_SECRETS, TEST_SECRET_KEY, LiveServer, TestAccount
from helpers import assert_ok
from opencoupon.config import Settings

CLI = str(Path(sys.executable).with_name("opencoupon"))


def test_api_writes_and_a_second_process_never_see_database_is_locked(
    settings: Settings, live_server: LiveServer, account: TestAccount
) -> None:
    env = {
        **os.environ,
        "OPENCOUPON_DATABASE_URL": settings.database_url,
        "OPENCOUPON_SECRET_KEY": TEST_SECRET_KEY,
        "OPENCOUPON_VAR_DIR": str(settings.var_dir),
    }
    stamp = time.time_ns()
    processes = [
        subprocess.Popen(
            [CLI, "account", "create", "--email", f"cli-{stamp}-{i}@example.com", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    answers: list[httpx2.Response] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        made = 0
        with httpx2.Client(base_url=live_server.url, timeout=60) as client:
            # Keep writing until every CLI process is done (and at least a few times).
            while made < 5 or any(p.poll() is None for p in processes):
                response = client.post(
                    "/v4/subaccount/create",
                    json={"email": f"w{stamp}-{n}-{made}@example.com", "first_name": "Load"},
                    headers=account.headers,
                )
                with lock:
                    answers.append(response)
                made += 1
                if made > 400:
                    break

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    outputs = [p.communicate(timeout=120) for p in processes]
    for t in threads:
        t.join(timeout=120)

    for process, (out, err) in zip(processes, outputs, strict=True):
        assert "locked" not in err.lower(), err
        assert process.returncode == 0, err
        created = json.loads(out)
        ISSUED_SECRETS.append(created["client_secret"])
        # The account the other process wrote is usable through the running server at once.
        with httpx2.Client(base_url=live_server.url, timeout=30) as client:
            assert_ok(
                client.post(
                    "/v4/subaccount/list",
                    headers={
                        "X-Client-Id": created["client_id"],
                        "X-Client-Secret": created["client_secret"],
                    },
                )
            )
    assert len(answers) >= 60
    bad = [a.text for a in answers if a.status_code != 200]
    assert not bad, bad[:3]
