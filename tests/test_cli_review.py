"""The command line and deployment path under ordinary mistakes and concurrent starts: two
`migrate` at once, processes generating the secret key together, a database not migrated or
unreachable, bad options; each ends in one line, not a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from opencoupon.db.engine import normalize_url

CLI = str(Path(sys.executable).with_name("opencoupon"))


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCOUPON_")}
    env["OPENCOUPON_DATABASE_URL"] = f"sqlite:///{tmp_path / 'var' / 'opencoupon.db'}"
    env["OPENCOUPON_VAR_DIR"] = str(tmp_path / "var")
    return env


def _run(env: dict[str, str], *args: str | bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr[-600:])
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    return result.stderr


def _migrate_together(env: dict[str, str], count: int = 2) -> list[tuple[int, str]]:
    processes = [
        subprocess.Popen([CLI, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    results = []
    for process in processes:
        _out, err = process.communicate(timeout=180)
        results.append((process.returncode, err))
    return results


def test_two_migrate_at_once_on_a_fresh_postgresql(clean_env: dict[str, str], scratch_postgres: str) -> None:
    env = {**clean_env, "OPENCOUPON_DATABASE_URL": scratch_postgres, "OPENCOUPON_SECRET_KEY": "k" * 40}
    for code, err in _migrate_together(env):
        assert code == 0, err[-800:]
    engine = create_engine(normalize_url(scratch_postgres))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()


def test_two_migrate_at_once_on_an_older_postgresql(clean_env: dict[str, str], scratch_postgres: str) -> None:
    from opencoupon.db.migrate import upgrade

    upgrade(scratch_postgres, "0009")
    env = {**clean_env, "OPENCOUPON_DATABASE_URL": scratch_postgres, "OPENCOUPON_SECRET_KEY": "k" * 40}
    for code, err in _migrate_together(env):
        assert code == 0, err[-800:]


def test_two_migrate_at_once_on_sqlite(clean_env: dict[str, str]) -> None:
    """SQLite: the database's write lock serializes them."""
    Path(clean_env["OPENCOUPON_VAR_DIR"]).mkdir(parents=True)
    env = {**clean_env, "OPENCOUPON_SECRET_KEY": "k" * 40}
    for code, err in _migrate_together(env):
        assert code == 0, err[-800:]


_RESOLVE_KEY = """
import sys, time
from pathlib import Path
from opencoupon.config import Settings, resolve_secret_key
start = float(sys.argv[2])
while time.time() < start:
    pass
print(resolve_secret_key(Settings(var_dir=Path(sys.argv[1]), secret_key="")))
"""


def test_processes_generating_the_secret_key_together_share_one(tmp_path: Path) -> None:
    """Processes starting at once on a fresh var dir all use the key on disk, which is 0600."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCOUPON_")}
    for attempt in range(3):
        var = tmp_path / f"var{attempt}"
        start = str(time.time() + 1.5)
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _RESOLVE_KEY, str(var), start],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        keys = {process.communicate(timeout=60)[0].strip() for process in processes}
        assert all(process.returncode == 0 for process in processes)
        assert keys == {(var / "secret_key").read_text().strip()}
        assert stat.S_IMODE((var / "secret_key").stat().st_mode) == 0o600
        assert [p.name for p in var.iterdir()] == ["secret_key"]


@pytest.mark.parametrize(
    "args",
    [
        ("account", "create", "--email", "a@example.com", "--json"),
        ("account", "rotate-secret", "--email", "a@example.com"),
        ("demo",),
    ],
)
def test_a_database_not_migrated_is_one_line(clean_env: dict[str, str], args: tuple[str, ...]) -> None:
    err = _one_line_error(_run(clean_env, *args))
    assert "the database is not migrated: run opencoupon migrate" in err


@pytest.mark.parametrize(
    "args",
    [
        ("migrate",),
        ("demo",),
        ("account", "create", "--email", "a@example.com", "--json"),
        ("singleuse", "create", "--campaign", "cam_1", "--csv", "/dev/null"),
    ],
)
def test_an_unreachable_database_is_one_line_without_the_password(
    clean_env: dict[str, str], args: tuple[str, ...]
) -> None:
    env = {**clean_env, "OPENCOUPON_DATABASE_URL": "postgresql://someone:hunter2secret@127.0.0.1:1/x"}
    err = _one_line_error(_run(env, *args))
    assert "cannot open the database" in err
    assert "hunter2secret" not in err
    assert len(err.strip().splitlines()) <= 2, err


def test_a_bad_setting_is_one_line(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "OPENCOUPON_MAX_BODY_BYTES": "1MB"}
    for args in (("migrate",), ("openapi",), ("demo",)):
        err = _one_line_error(_run(env, *args))
        assert err.startswith("error: OPENCOUPON_MAX_BODY_BYTES: "), err


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENCOUPON_WEBHOOK_TIMEOUT_SECONDS", "nan"),
        ("OPENCOUPON_BULK_SEND_RATE", "nan"),
        ("OPENCOUPON_BULK_SEND_RATE", "0"),
        ("OPENCOUPON_WORKER_LEASE_SECONDS", "-5"),
        ("OPENCOUPON_RATE_LIMIT_PER_SECOND", "inf"),
    ],
)
def test_a_number_setting_that_means_nothing_is_refused_in_one_line(
    clean_env: dict[str, str], name: str, value: str
) -> None:
    """nan, inf or a non-positive time were taken as they came: a webhook timeout of nan waited
    forever, a bulk rate of nan queued one email every 100 seconds, a negative lease claimed
    every running job again at once."""
    err = _one_line_error(_run({**clean_env, name: value}, "migrate"))
    assert err.startswith(f"error: {name}: "), err


def _newer(clean_env: dict[str, str], tmp_path: Path) -> None:
    assert _run(clean_env, "migrate").returncode == 0
    with sqlite3.connect(tmp_path / "var" / "opencoupon.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")


@pytest.mark.parametrize(
    "args",
    [("migrate",), ("serve", "--port", "1"), ("demo",), ("account", "create", "--email", "a@example.com")],
)
def test_a_database_of_a_newer_version_is_one_line(
    clean_env: dict[str, str], tmp_path: Path, args: tuple[str, ...]
) -> None:
    _newer(clean_env, tmp_path)
    err = _one_line_error(_run(clean_env, *args))
    assert "the database was migrated by a newer OpenCoupon (revision 0999); upgrade OpenCoupon" in err


@pytest.mark.parametrize("command", ["create", "rotate-secret"])
@pytest.mark.parametrize("option", ["--email", "--password"])
def test_account_options_that_are_not_utf8(clean_env: dict[str, str], command: str, option: str) -> None:
    assert _run(clean_env, "migrate").returncode == 0
    if command == "rotate-secret" and option == "--password":
        return
    args: list[str | bytes] = ["account", command, "--email", "a@example.com", option, b"\xffabcdefghij"]
    result = _run(clean_env, *args)
    assert result.returncode == 2, result.stderr[-600:]
    assert "Traceback" not in result.stderr
    assert "not UTF-8 text" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--no-migrate", "--port", "99999"),
        ("serve", "--no-migrate", "--port", "-1"),
        ("serve", "--no-migrate", "--workers", "0"),
        ("serve", "--no-migrate", "--workers", "-1"),
        ("worker", "--concurrency", "0"),
        ("worker", "--once", "--concurrency", "-3"),
        # Each job thread may hold a database connection (SQLite's pool has no limit).
        ("worker", "--once", "--concurrency", "100000"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(clean_env: dict[str, str], args: tuple[str, ...]) -> None:
    """They were accepted: --port 99999 listened elsewhere, --concurrency 0 crashed later."""
    try:
        result = subprocess.run(
            [CLI, *args], env=clean_env, capture_output=True, text=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the command started")
    assert result.returncode == 2, result.stderr[-600:]
    assert "Invalid value" in result.stderr


def _urls(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith("http") else []
    if isinstance(value, dict):
        return [url for item in value.values() for url in _urls(item)]
    if isinstance(value, list):
        return [url for item in value for url in _urls(item)]
    return []


def test_demo_prints_its_links_under_the_current_base_url(clean_env: dict[str, str]) -> None:
    """`demo` again after the port or host changed printed the links of the first run."""
    first_env = {**clean_env, "OPENCOUPON_BASE_URL": "http://127.0.0.1:8000"}
    assert _run(first_env, "migrate").returncode == 0
    first = _run(first_env, "demo")
    assert first.returncode == 0, first.stderr[-600:]
    first_urls = _urls(json.loads(first.stdout))
    assert len(first_urls) >= 3
    assert all(url.startswith("http://127.0.0.1:8000/") for url in first_urls)
    again = _run({**clean_env, "OPENCOUPON_BASE_URL": "https://coupons.example.com/oc/"}, "demo")
    assert again.returncode == 0, again.stderr[-600:]
    urls = _urls(json.loads(again.stdout))
    assert urls == [
        url.replace("http://127.0.0.1:8000", "https://coupons.example.com/oc") for url in first_urls
    ]
