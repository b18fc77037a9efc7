"""API credentials: subaccount keys shown to the master work, secrets rotate with a grace period
(two secrets active at once), SQLite runs in WAL mode."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from sqlalchemy import func, select, text

from conftest import ISSUED_SECRETS, TestAccount
from helpers import assert_error, assert_ok
from opencoupon.accounts import service as accounts
from opencoupon.models import Account, ApiSecret
from opencoupon.runtime import Runtime


def _list(client: httpx2.Client, client_id: str, secret: str) -> httpx2.Response:
    return client.post("/v4/subaccount/list", headers={"X-Client-Id": client_id, "X-Client-Secret": secret})


def test_subaccount_credentials_from_info_work_and_cannot_manage_subaccounts(
    http: httpx2.Client, account: TestAccount
) -> None:
    created = assert_ok(account.call("/v4/subaccount/create", email=f"keys-{account.id}@example.com"))[
        "subaccount"
    ]
    info = assert_ok(account.call("/v4/subaccount", subaccount=created["ID"]))["subaccount"]
    assert info["api_key"] == created["api_key"]
    assert info["api_secret"] == created["api_secret"]
    assert len(info["api_key"]) == 27
    assert info["api_key"].isdigit()
    ISSUED_SECRETS.append(info["api_secret"])
    headers = {"X-Client-Id": info["api_key"], "X-Client-Secret": info["api_secret"]}
    assert_ok(http.post("/v3/account/sso", headers=headers))
    assert_error(http.post("/v4/subaccount/list", headers=headers), 403, 102)


def test_rotated_secret_keeps_working_for_the_grace_period(
    runtime: Runtime, http: httpx2.Client, account: TestAccount, clock_offset: Callable[[dt.timedelta], None]
) -> None:
    with runtime.db.transaction() as session:
        acc = session.get(Account, account.id)
        assert acc is not None
        new_secret = accounts.rotate_secret(session, runtime.keyring, acc, dt.timedelta(hours=24))
    ISSUED_SECRETS.append(new_secret)
    # Two secrets are active at once.
    assert_ok(_list(http, account.client_id, account.client_secret))
    assert_ok(_list(http, account.client_id, new_secret))
    clock_offset(dt.timedelta(hours=24, seconds=1))
    assert _list(http, account.client_id, account.client_secret).status_code == 401
    assert_ok(_list(http, account.client_id, new_secret))


def test_a_rotation_without_grace_ends_a_secret_still_in_an_earlier_grace(
    runtime: Runtime, http: httpx2.Client, account: TestAccount
) -> None:
    """Rotate with 24 h of grace, then (the first secret leaked) again with none: the first one
    kept working for the rest of its 24 hours."""
    secrets_made = []
    for grace in (dt.timedelta(hours=24), dt.timedelta(0)):
        with runtime.db.transaction() as session:
            acc = session.get(Account, account.id)
            assert acc is not None
            secrets_made.append(accounts.rotate_secret(session, runtime.keyring, acc, grace))
    ISSUED_SECRETS.extend(secrets_made)
    assert _list(http, account.client_id, account.client_secret).status_code == 401
    assert _list(http, account.client_id, secrets_made[0]).status_code == 401
    assert_ok(_list(http, account.client_id, secrets_made[1]))


def test_rotations_at_once_leave_one_secret_that_does_not_expire(
    runtime: Runtime, http: httpx2.Client, account: TestAccount
) -> None:
    """A double click on the dashboard's Rotate: on PostgreSQL each rotation's UPDATE missed the
    secret the other was adding, and every secret made stayed valid for good."""
    barrier = threading.Barrier(4)

    def rotate() -> str:
        barrier.wait(timeout=30)  # before the transaction: on SQLite it waits for the write lock
        with runtime.db.transaction() as session:
            acc = session.get(Account, account.id)
            assert acc is not None
            return accounts.rotate_secret(session, runtime.keyring, acc, dt.timedelta(0))

    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _i: rotate(), range(4)))
    ISSUED_SECRETS.extend(made)
    working = [secret for secret in made if _list(http, account.client_id, secret).status_code == 200]
    assert len(working) == 1
    with runtime.db.read() as session:
        lasting = session.scalar(
            select(func.count())
            .select_from(ApiSecret)
            .where(ApiSecret.account_id == account.id, ApiSecret.expires_at.is_(None))
        )
    assert lasting == 1


def test_subaccount_info_shows_the_newest_secret_after_rotation(
    runtime: Runtime, account: TestAccount, subaccount: TestAccount
) -> None:
    with runtime.db.transaction() as session:
        sub = session.get(Account, subaccount.id)
        assert sub is not None
        newest = accounts.rotate_secret(session, runtime.keyring, sub, dt.timedelta(hours=1))
    ISSUED_SECRETS.append(newest)
    info = assert_ok(account.call("/v4/subaccount", subaccount=f"sub_{subaccount.id}"))["subaccount"]
    assert info["api_secret"] == newest


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(runtime: Runtime) -> None:
    if not runtime.db.is_sqlite:
        pytest.skip("SQLite only")
    with runtime.db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
