"""The command line as a user runs it: `opencoupon demo` prints working credentials (again on every
run), `opencoupon serve` serves them, `opencoupon account create --json` prints one JSON object."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from conftest import ISSUED_SECRETS, free_port
from foundation_fixtures import browser, sign_in
from helpers import assert_ok

CLI = str(Path(sys.executable).with_name("opencoupon"))


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """A fresh install's environment: its own SQLite file and var dir, no secret key configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCOUPON_")}
    env["OPENCOUPON_DATABASE_URL"] = f"sqlite:///{tmp_path / 'var' / 'opencoupon.db'}"
    env["OPENCOUPON_VAR_DIR"] = str(tmp_path / "var")
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def served(clean_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**clean_env, "OPENCOUPON_BASE_URL": url}
    assert _run(env, "migrate").returncode == 0
    return url, env


def test_demo_credentials_are_printed_every_time_and_work_on_the_served_api(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = served
    first = _run(env, "demo")
    assert first.returncode == 0, first.stderr
    demo = json.loads(first.stdout)
    ISSUED_SECRETS.extend([demo["client_secret"], demo["subaccount"]["client_secret"]])
    saved = tmp_path / "var" / "demo-credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == demo
    # A second run (the database already has the demo) prints the same credentials.
    again = _run(env, "demo")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == demo

    port = url.rsplit(":", 1)[1]
    log = tmp_path / "serve.log"
    log_file = log.open("w")
    server = subprocess.Popen(
        [CLI, "serve", "--host", "127.0.0.1", "--port", port],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    try:
        with httpx2.Client(base_url=url, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
            headers = {"X-Client-Id": demo["client_id"], "X-Client-Secret": demo["client_secret"]}
            body = assert_ok(client.post("/v4/subaccount/list", headers=headers))
            assert [s["ID"] for s in body["subaccounts"]] == [demo["subaccount"]["ID"]]
            # The demo campaign has a session in every state, each by the campaign's own rules.
            flags = ("opened", "claimed", "validated", "voided", "locked", "expired", "removed")
            expected = {
                "open": "1000000",
                "claimed": "1100000",
                "validated": "1110000",
                "voided": "0001000",
                "locked": "1000100",
                "expired": "1100010",
                "removed": "1000001",
                "not_opened_single_use": "0000000",
            }
            seen = {}
            for label, session_url in demo["coupon_campaign"]["sessions"].items():
                code = session_url.rsplit("/", 1)[1]
                data = assert_ok(
                    client.post("/v3/couponsession/data", json={"couponsession": code}, headers=headers)
                )
                status = data["data"]["status"]
                seen[label] = "".join(status[flag] for flag in flags)
                # Sessions opened on the page hold one of the campaign's generated codes.
                assert bool(status["own_validation_code"]) == (status["opened"] == "1"), label
            assert seen == expected
            assert demo["dashboard"] == f"{url}/dashboard/login"
        with browser(url) as web:
            assert sign_in(web, demo["email"], demo["password"]).status_code == 303
            assert web.get("/dashboard/").status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log_file.close()


def test_demo_does_not_reprint_credentials_that_no_longer_work(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    _url, env = served
    assert _run(env, "demo").returncode == 0
    saved = tmp_path / "var" / "demo-credentials.json"
    tampered = json.loads(saved.read_text())
    tampered["client_secret"] = "not-the-secret"
    saved.write_text(json.dumps(tampered))
    again = _run(env, "demo")
    assert again.returncode == 0
    assert again.stdout == ""
    assert "nothing done" in again.stderr


def test_account_create_json_prints_one_object(clean_env: dict[str, str]) -> None:
    assert _run(clean_env, "migrate").returncode == 0
    result = _run(clean_env, "account", "create", "--email", "Owner@Example.com", "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert result.stdout.count("\n") == 1
    assert set(created) == {"account_id", "email", "client_id", "client_secret"}
    assert created["email"] == "owner@example.com"
    ISSUED_SECRETS.append(created["client_secret"])
    duplicate = _run(clean_env, "account", "create", "--email", "owner@example.com", "--json")
    assert duplicate.returncode == 1
    assert duplicate.stdout == ""


def test_openapi_prints_the_spec(clean_env: dict[str, str]) -> None:
    result = _run(clean_env, "openapi")
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    assert "/v3/subaccount/sso" in spec["paths"]
    assert set(spec["components"]["securitySchemes"]) == {"ClientId", "ClientSecret"}


def test_account_commands_apply_the_api_rules(clean_env: dict[str, str]) -> None:
    assert _run(clean_env, "migrate").returncode == 0
    for args, message in [
        (["--email", "bad email"], "error: --email: Email address is not valid."),
        (["--email", "no-at-sign.example.com"], "error: --email: Email address is not valid."),
        (["--email", "pw@example.com", "--password", "pw"], "error: --password: "),
        (["--email", "pw@example.com", "--password", "x" * 1025], "error: --password: "),
    ]:
        refused = _run(clean_env, "account", "create", *args, "--json")
        assert refused.returncode == 1, args
        assert refused.stderr.startswith(message), refused.stderr
        assert refused.stdout == ""
    created = _run(
        clean_env, "account", "create", "--email", "ok@example.com", "--password", "eight888", "--json"
    )
    assert created.returncode == 0, created.stderr
    ISSUED_SECRETS.append(json.loads(created.stdout)["client_secret"])
    for hours in ("-5", "169"):
        refused = _run(
            clean_env, "account", "rotate-secret", "--email", "ok@example.com", "--grace-hours", hours
        )
        assert refused.returncode == 1
        assert refused.stderr.strip() == "error: --grace-hours must be between 0 and 168"
        assert refused.stdout == ""
    rotated = _run(clean_env, "account", "rotate-secret", "--email", "ok@example.com", "--grace-hours", "0")
    assert rotated.returncode == 0, rotated.stderr
    ISSUED_SECRETS.append(rotated.stdout.split("client_secret: ")[1].strip())
