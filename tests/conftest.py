"""Test fixtures: the real app served by uvicorn on loopback, the real database (a SQLite file, or
PostgreSQL when OPENCOUPON_TEST_DATABASE_URL is set), and accounts made through the real service."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from sqlalchemy import create_engine, make_url, text

from opencoupon.accounts import service as accounts
from opencoupon.app import create_app
from opencoupon.config import Settings
from opencoupon.db.engine import normalize_url
from opencoupon.db.migrate import upgrade
from opencoupon.kit import clock, lockout
from opencoupon.runtime import Runtime

TEST_SECRET_KEY = "test-secret-key-not-for-production-0123456789"


def _database_url(tmp: Path) -> str:
    url = os.environ.get("OPENCOUPON_TEST_DATABASE_URL")
    if not url:
        return f"sqlite:///{tmp / 'test.db'}"
    engine = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def var_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="opencoupon-test-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def settings(var_dir: Path) -> Settings:
    url = _database_url(var_dir)
    upgrade(url)
    return Settings(
        database_url=url,
        secret_key=TEST_SECRET_KEY,
        base_url="http://testserver.local",
        var_dir=var_dir,
        allow_private_webhooks=True,
        run_worker_in_process=False,
        rate_limit_per_second=0,
        # The suite signs in from 127.0.0.1 far more often than a person would; the limits have
        # their own tests with their own app (test_dashboard_security.py).
        login_attempts_per_minute=10_000,
    )


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime.from_settings(settings)
    yield rt
    rt.db.dispose()


@pytest.fixture(autouse=True)
def _fresh_attempt_counters(runtime: Runtime) -> None:
    """Wrong-PIN lockouts and sign-in limits are counted in the database, shared by every app on
    it (the suite's server and the tests' own): each test starts with none counted."""
    with runtime.db.transaction() as session:
        lockout.forget_all(session)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving an app on a loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def served_with(settings: Settings, **changes: Any) -> Iterator[tuple[LiveServer, Runtime]]:
    """The real app on its own loopback port, on the suite's database, with these settings
    changed (the suite's own server allows far more than the defaults, limits included)."""
    unknown = set(changes) - set(Settings.model_fields)
    assert not unknown, f"no such settings: {unknown}"  # model_copy would take a typo silently
    changed = settings.model_copy(update=changes)
    runtime = Runtime.from_settings(changed)
    server = LiveServer(create_app(changed, runtime=runtime))
    server.start()
    try:
        yield server, runtime
    finally:
        server.stop()
        runtime.db.dispose()


@pytest.fixture
def scratch_postgres(settings: Settings) -> Iterator[str]:
    """A new, empty PostgreSQL database beside the suite's (the suite's role may create one),
    dropped afterwards; skipped on SQLite."""
    if not settings.database_url.startswith("postgres"):
        pytest.skip("PostgreSQL only")
    name = f"oc_scratch_{secrets.token_hex(4)}"
    admin = create_engine(normalize_url(settings.database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield str(make_url(settings.database_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(scope="session")
def app(settings: Settings, runtime: Runtime) -> Any:
    return create_app(settings, runtime=runtime)


@pytest.fixture(scope="session")
def live_server(app: Any) -> Iterator[LiveServer]:
    server = LiveServer(app)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx2.Client]:
    """A plain HTTP client against the live server (no credentials)."""
    with httpx2.Client(base_url=live_server.url, timeout=30) as client:
        yield client


@dataclass
class TestAccount:
    __test__ = False  # a fixture value, not a test class
    id: int
    email: str
    client_id: str
    client_secret: str
    client: httpx2.Client

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Client-Id": self.client_id, "X-Client-Secret": self.client_secret}

    def call(self, path: str, **params: Any) -> httpx2.Response:
        """POST a v3 call with JSON params and header credentials."""
        return self.client.post(path, json=params, headers=self.headers)


_counter = iter(range(1, 10**9))

# Every client secret, password and token the tests hand out: the dump test
# (test_foundation_security.py, run last) checks none of them is stored in clear.
ISSUED_SECRETS: list[str] = []


@pytest.fixture
def remember_secret() -> Any:
    """`remember_secret(value)`: add a secret your test created to the clear-text dump check."""
    return ISSUED_SECRETS.append


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests marked to run last (the database dump) see what the whole suite stored.
    last = [item for item in items if item.get_closest_marker("run_last")]
    if last:
        items[:] = [item for item in items if item not in last] + last


def make_account(
    runtime: Runtime,
    live_server: LiveServer,
    *,
    parent_id: int | None = None,
    password: str | None = "correct horse battery",
) -> TestAccount:
    email = f"user{next(_counter)}-{time.time_ns()}@example.com"
    with runtime.db.transaction() as session:
        parent = None
        if parent_id is not None:
            from opencoupon.models import Account

            parent = session.get(Account, parent_id)
        account, secret = accounts.create_account(
            session, runtime.keyring, email=email, password=password, parent=parent
        )
        account_id, client_id = account.id, account.client_id
    ISSUED_SECRETS.append(secret)
    if password:
        ISSUED_SECRETS.append(password)
    client = httpx2.Client(base_url=live_server.url, timeout=30)
    return TestAccount(account_id, email, client_id, secret, client)


@pytest.fixture
def account(runtime: Runtime, live_server: LiveServer) -> Iterator[TestAccount]:
    acc = make_account(runtime, live_server)
    yield acc
    acc.client.close()


@pytest.fixture
def other_account(runtime: Runtime, live_server: LiveServer) -> Iterator[TestAccount]:
    acc = make_account(runtime, live_server)
    yield acc
    acc.client.close()


@pytest.fixture
def subaccount(runtime: Runtime, live_server: LiveServer, account: TestAccount) -> Iterator[TestAccount]:
    acc = make_account(runtime, live_server, parent_id=account.id)
    yield acc
    acc.client.close()


@pytest.fixture
def clock_offset() -> Iterator[Any]:
    """Move the service clock: `clock_offset(dt.timedelta(days=2))`. Reset after the test."""
    yield clock.set_offset
    clock.set_offset(clock.get_offset() * 0)


# Directory tests: a consumer's browser (cookies, CSRF) — see tests/directories_fixtures.py.
from directories_fixtures import browser, second_browser  # noqa: E402, F401

# Distribution: SMTP and SMS stand-ins, campaigns made through the ORM.
from distribution_fixtures import dist_campaign, dist_dropping_smtp, dist_sms, dist_smtp  # noqa: E402, F401

# Single-use links: campaigns made through the ORM (tests/singleuse_fixtures.py).
from singleuse_fixtures import su_campaign, su_other_campaign  # noqa: E402, F401
