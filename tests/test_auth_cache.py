"""Authentication is cached briefly per process; changes made in this process apply at once."""

from __future__ import annotations

import datetime as dt

from conftest import TestAccount
from helpers import assert_error, assert_ok
from opencoupon.accounts import repository
from opencoupon.accounts import service as accounts
from opencoupon.runtime import Runtime


def test_blocking_a_subaccount_takes_effect_on_its_next_call(
    account: TestAccount, subaccount: TestAccount
) -> None:
    assert_ok(subaccount.call("/v3/directory/list"))  # warms the cache for the subaccount
    assert_ok(account.call("/v4/subaccount/update", subaccount=f"sub_{subaccount.id}", block=True))
    assert_error(subaccount.call("/v3/directory/list"), 403, 101)
    assert_ok(account.call("/v4/subaccount/update", subaccount=f"sub_{subaccount.id}", block=False))
    assert_ok(subaccount.call("/v3/directory/list"))


def test_an_expired_master_locks_out_its_cached_subaccount(
    runtime: Runtime, account: TestAccount, subaccount: TestAccount
) -> None:
    assert_ok(subaccount.call("/v3/directory/list"))
    with runtime.db.transaction() as session:
        master = repository.by_id(session, account.id)
        assert master is not None
        master.expiry_date = dt.date(2000, 1, 1)
    assert_error(subaccount.call("/v3/directory/list"), 403, 101)
    assert_error(account.call("/v3/directory/list"), 403, 101)


def test_rotated_secret_and_the_old_one_both_work_during_the_grace_period(
    runtime: Runtime, account: TestAccount
) -> None:
    assert_ok(account.call("/v4/subaccount/list"))
    with runtime.db.transaction() as session:
        acc = repository.by_id(session, account.id)
        assert acc is not None
        new_secret = accounts.rotate_secret(session, runtime.keyring, acc, dt.timedelta(seconds=0))
    # A zero grace period: the old secret stops at once, even though it was just cached.
    assert account.call("/v4/subaccount/list").status_code == 401
    account.client_secret = new_secret
    assert_ok(account.call("/v4/subaccount/list"))
