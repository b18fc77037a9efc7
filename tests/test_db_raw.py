"""The raw-driver helpers the hot paths use (db/raw.py) behave like the ORM they stand in for:
objects they attach are ordinary persistent objects (unchanged until changed, changes flushed),
an adopted snapshot is copied, never shared, and values written by raw statements read back
through the ORM exactly as written. On the suite's database, SQLite or PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import inspect, select

from conftest import LiveServer, make_account
from opencoupon.db import raw
from opencoupon.models import Account
from opencoupon.runtime import Runtime

ACCOUNT_BY_ID = raw.RawStatement(f"SELECT {raw.columns(Account, 'a')} FROM accounts a WHERE a.id = :id")
SET_LOGIN = raw.RawStatement(
    "UPDATE accounts SET last_login_at = :when, expiry_date = :day, login_count = :count WHERE id = :id"
)


def _column_values(obj: Account) -> dict[str, object]:
    return {attr.key: getattr(obj, attr.key) for attr in inspect(Account).column_attrs}


def test_load_one_attaches_a_loaded_object_that_flushes_only_its_changes(
    runtime: Runtime, live_server: LiveServer
) -> None:
    account_id = make_account(runtime, live_server).id
    with runtime.db.transaction() as session:
        orm_values = _column_values(session.get_one(Account, account_id))
    with runtime.db.transaction() as session:
        found = raw.load_one(session, ACCOUNT_BY_ID, {"id": account_id}, Account)
        assert found is not None
        (account,) = found
        assert inspect(account).persistent
        assert _column_values(account) == orm_values
        assert not session.dirty
        assert not session.new
        # The session knows it: a lookup by key answers it without another object.
        assert session.get(Account, account_id) is account
        assert raw.load_one(session, ACCOUNT_BY_ID, {"id": account_id}, Account) == (account,)
        account.company_name = "Loaded raw"
        assert list(session.dirty) == [account]
    with runtime.db.transaction() as session:
        assert session.get_one(Account, account_id).company_name == "Loaded raw"
    with runtime.db.transaction() as session:
        assert raw.load_one(session, ACCOUNT_BY_ID, {"id": -1}, Account) is None


def test_adopt_copies_a_detached_snapshot_into_the_session(runtime: Runtime, live_server: LiveServer) -> None:
    account_id = make_account(runtime, live_server).id
    with runtime.db.transaction() as session:
        snapshot = session.get_one(Account, account_id)
        session.expunge(snapshot)
    assert inspect(snapshot).detached
    with runtime.db.transaction() as session:
        copy = raw.adopt(session, snapshot)
        assert copy is not snapshot
        assert inspect(copy).persistent
        assert inspect(snapshot).detached
        assert _column_values(copy) == _column_values(snapshot)
        assert raw.adopt(session, snapshot) is copy
        assert session.get(Account, account_id) is copy
        assert not session.dirty
        copy.timezone = "Europe/Brussels"
    assert snapshot.timezone == "UTC"
    with runtime.db.transaction() as session:
        assert session.get_one(Account, account_id).timezone == "Europe/Brussels"


def test_raw_statements_store_dates_as_the_orm_reads_them(runtime: Runtime, live_server: LiveServer) -> None:
    account_id = make_account(runtime, live_server).id
    cases = [
        dt.datetime(2026, 3, 1, 9, 30, 0),  # no microseconds: still the ORM's format on SQLite
        dt.datetime(2026, 3, 1, 9, 30, 0, 123456),
    ]
    for when in cases:
        with runtime.db.transaction() as session:
            params = {"when": when, "day": when.date(), "count": 7, "id": account_id}
            assert raw.rowcount(session, SET_LOGIN, params) == 1
        with runtime.db.transaction() as session:
            account = session.get_one(Account, account_id)
            assert (account.last_login_at, account.expiry_date, account.login_count) == (when, when.date(), 7)
            # Compared in SQL too: a range query over the column finds the row (text order on SQLite).
            hit = session.scalar(
                select(Account.id).where(
                    Account.id == account_id,
                    Account.last_login_at >= when - dt.timedelta(microseconds=1),
                    Account.last_login_at <= when,
                )
            )
            assert hit == account_id
