"""Push fan-out to 10,000 subscriptions (P7). Starts `opencoupon serve` (SQLite, job runner in
process) and a push-service stand-in on loopback answering 201, stores 10,000 subscriptions (each
with its own P-256 key, as browsers make them) for one campaign, then times
`/v3/coupon/pushnotification/all` -> fan-out `done` (every payload encrypted aes128gcm for its
subscriber, VAPID-signed, POSTed), read back through `GET /v4/push/fanouts/{id}`.

Target: <= 10 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from bench_webhooks import BIN, HERE, SECRET_KEY, free_port, wait_http
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SUBSCRIPTIONS = 10_000


def seed(env: dict[str, str], account_id: int, standin: str) -> str:
    """A campaign with 100 sessions and SUBSCRIPTIONS subscriptions, through the push service
    functions the subscription route uses."""
    from opencoupon.config import Settings
    from opencoupon.coupons.sessions import new_session
    from opencoupon.kit.clock import utcnow
    from opencoupon.models import Campaign
    from opencoupon.push import service, targets
    from opencoupon.push.vapid import b64url
    from opencoupon.runtime import Runtime

    runtime = Runtime.from_settings(
        Settings(
            database_url=env["OPENCOUPON_DATABASE_URL"],
            secret_key=SECRET_KEY,
            var_dir=Path(env["OPENCOUPON_VAR_DIR"]),
        )
    )
    try:
        with runtime.db.transaction() as session:
            now = utcnow()
            campaign = Campaign(
                account_id=account_id, code="benchpsh", name="Bench push", created_at=now, updated_at=now
            )
            session.add(campaign)
            session.flush()
            codes = [new_session(session, campaign).code for _ in range(100)]
            subscribers = [targets.coupon_subscriber(session, code) for code in codes]
            items = []
            for n in range(SUBSCRIPTIONS):
                key = ec.generate_private_key(ec.SECP256R1()).public_key()
                p256dh = b64url(
                    key.public_bytes(
                        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                    )
                )
                target = subscribers[n % len(subscribers)]
                assert target is not None
                items.append((target, f"{standin}/push/{n}", p256dh, b64url(n.to_bytes(16, "big"))))
            service.subscribe_many(session, items, now)
            return f"cam_{campaign.id}"
    finally:
        runtime.db.dispose()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp_name:
        tmp = Path(tmp_name)
        env = {
            "PATH": "/usr/bin:/bin",
            "OPENCOUPON_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
            "OPENCOUPON_SECRET_KEY": SECRET_KEY,
            "OPENCOUPON_VAR_DIR": str(tmp),
            "OPENCOUPON_ALLOW_PRIVATE_WEBHOOKS": "1",
            "OPENCOUPON_RATE_LIMIT_PER_SECOND": "0",
        }
        subprocess.run([str(BIN / "opencoupon"), "migrate"], env=env, check=True, capture_output=True)
        account = json.loads(
            subprocess.run(
                [str(BIN / "opencoupon"), "account", "create", "--email", "push@example.com", "--json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        port, standin_port = free_port(), free_port()
        standin = f"http://127.0.0.1:{standin_port}"
        procs = [
            subprocess.Popen(
                [str(BIN / "opencoupon"), "serve", "--port", str(port), "--no-migrate"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "webhook_receiver.py"),
                    "--port",
                    str(standin_port),
                    "--status",
                    "201",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/healthz")
            wait_http(standin + "/stats")
            started = time.monotonic()
            noop_done = 0
            with httpx2.Client(base_url=url) as client:
                while time.monotonic() - started < 2:
                    client.get("/noop")
                    noop_done += 1
            print(f"GET /noop (ceiling, one sequential client): {noop_done / 2:,.0f} req/s")
            t0 = time.monotonic()
            campaign = seed(env, account["account_id"], standin)
            print(f"stored {SUBSCRIPTIONS:,} subscriptions in {time.monotonic() - t0:.1f} s")
            headers = {"X-Client-Id": account["client_id"], "X-Client-Secret": account["client_secret"]}
            with httpx2.Client(base_url=url, headers=headers, timeout=30) as client:
                # Make the VAPID key before timing (it is made once, on first use).
                client.get("/push/vapid-public-key")
                started = time.monotonic()
                answer = client.post(
                    "/v3/coupon/pushnotification/all", json={"campaign": campaign, "message": "Bench sale"}
                ).json()
                assert answer["queued"] == str(SUBSCRIPTIONS), answer
                progress: dict[str, object] = {}
                while time.monotonic() - started < 60:
                    progress = client.get(f"/v4/push/fanouts/{answer['notification']}").json()
                    if progress["status"] == "done":
                        break
                    time.sleep(0.05)
                elapsed = time.monotonic() - started
            received = httpx2.get(standin + "/stats").json()["requests"]
            print(
                f"fan-out: {progress['sent']:,} sent, {progress['failed']} failed, "
                f"{progress['removed']} removed of {SUBSCRIPTIONS:,} in {elapsed:.2f} s "
                f"({SUBSCRIPTIONS / elapsed:,.0f}/s); stand-in got {received:,}"
            )
            cpu = sum(_cpu(p.pid) for p in procs[:1])
            print(f"server CPU (API + in-process runner) so far: {cpu:.1f} s")
            ok = progress.get("status") == "done" and elapsed <= 10
            print("target (<= 10 s):", "met" if ok else "NOT met")
            return 0 if progress.get("status") == "done" else 1
        finally:
            for proc in procs:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _cpu(pid: int) -> float:
    from bench_webhooks import cpu_seconds

    return cpu_seconds(pid)


if __name__ == "__main__":
    sys.exit(main())
