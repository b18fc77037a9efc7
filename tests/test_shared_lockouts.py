"""Wrong-PIN lockouts and sign-in limits are counted in the database, so they hold across API
processes: two real `opencoupon serve` processes on the suite's database (SQLite or PostgreSQL),
with attempts split between them, lock out after the limit in total, not the limit per process.
Concurrent attempts lose no count; counts past their window are read as zero and purged."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select

from conftest import TestAccount
from coupons_fixtures import PIN, create_campaign, csrf_token
from dashboard_fixtures import PASSWORD
from directories_fixtures import Browser, create_directory
from foundation_fixtures import browser, sign_in
from loyalty_fixtures import create_card, create_holder
from opencoupon.config import Settings
from opencoupon.kit.clock import utcnow
from opencoupon.kit.lockout import EscalatingLockout, Lockout
from opencoupon.models import AttemptCounter
from opencoupon.runtime import Runtime
from opencoupon.worker import housekeeping
from serve_process import ServeProcess, serve_env

# Sign-ins allowed per minute and email in the two servers below (x 6 per client address).
SIGN_INS = 3


@pytest.fixture(scope="module")
def servers(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two separate `opencoupon serve` processes on the suite's database: (base URL, base URL)."""
    env = serve_env(
        settings.database_url,
        tmp_path_factory.mktemp("shared-lockouts"),
        OPENCOUPON_LOGIN_ATTEMPTS_PER_MINUTE=str(SIGN_INS),
        OPENCOUPON_RUN_WORKER_IN_PROCESS="false",
    )
    first, second = ServeProcess(env), ServeProcess(env)
    try:
        yield first.start(), second.start()
    finally:
        first.stop()
        second.stop()


def counted(runtime: Runtime, purpose: str) -> int:
    """Attempts counted under every key of `purpose` (each test starts with none)."""
    with runtime.db.read() as session:
        total = session.scalar(
            select(func.coalesce(func.sum(AttemptCounter.count), 0)).where(
                AttemptCounter.key.startswith(f"{purpose}:")
            )
        )
    return int(total or 0)


def _form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


# --- across processes -----------------------------------------------------------------------------


def test_wrong_pins_on_the_phone_split_between_processes_lock_out_after_ten(
    account: TestAccount, servers: tuple[str, str]
) -> None:
    """Ten wrong PINs in total (each on a new coupon, five on each server): both servers refuse
    the eleventh, the right PIN too. In process memory, each would have allowed ten."""
    campaign = create_campaign(account, validation_methods="pin,qr")
    for attempt in range(10):
        with httpx2.Client(base_url=servers[attempt % 2], timeout=30) as phone:
            location = phone.get(f"/p/{campaign['code']}").headers["location"]
            form = {"csrf": csrf_token(phone, location), "pin": "0000"}
            wrong = phone.post(f"{location}/validate", data=form, follow_redirects=True)
            assert wrong.status_code == 403, wrong.text
    for base in servers:
        with httpx2.Client(base_url=base, timeout=30) as phone:
            location = phone.get(f"/p/{campaign['code']}").headers["location"]
            form = {"csrf": csrf_token(phone, location), "pin": PIN}
            refused = phone.post(f"{location}/validate", data=form, follow_redirects=True)
            assert refused.status_code == 429, refused.text
            assert "Too many wrong PINs" in refused.text


def test_wrong_pins_on_the_staff_page_split_between_processes_lock_out_after_ten(
    account: TestAccount, servers: tuple[str, str]
) -> None:
    campaign = create_campaign(account, validation_methods="widget")
    staff = f"/p/{campaign['code']}/staff"
    tills = [httpx2.Client(base_url=base, timeout=30) for base in servers]
    try:
        for attempt in range(10):
            till = tills[attempt % 2]
            form = {"csrf": csrf_token(till, staff), "pin": "0000", "code": "abcdef"}
            wrong = till.post(staff, data=form, follow_redirects=True)
            assert wrong.status_code == 403, wrong.text
        for till in tills:
            form = {"csrf": csrf_token(till, staff), "pin": PIN, "code": "abcdef"}
            refused = till.post(staff, data=form, follow_redirects=True)
            assert refused.status_code == 429, refused.text
    finally:
        for till in tills:
            till.close()


def test_concurrent_wrong_staff_pins_get_exactly_ten_checks(
    account: TestAccount, servers: tuple[str, str], runtime: Runtime
) -> None:
    """24 wrong PINs sent at once to the coupon staff page through two processes: a guess is
    counted before it is checked, so exactly ten are checked and the rest refused unchecked.
    (Checking first and counting after let every guess that arrived together through.)"""
    campaign = create_campaign(account, validation_methods="widget")
    staff = f"/p/{campaign['code']}/staff"
    attempts = 24
    tills = [httpx2.Client(base_url=servers[i % 2], timeout=30) for i in range(attempts)]
    try:
        tokens = [csrf_token(till, staff) for till in tills]
        start = threading.Barrier(attempts)

        def guess(i: int) -> int:
            start.wait(timeout=30)
            form = {"csrf": tokens[i], "pin": f"{i:04d}", "code": "abcdef"}
            return int(tills[i].post(staff, data=form, follow_redirects=True).status_code)

        with ThreadPoolExecutor(attempts) as pool:
            answers = list(pool.map(guess, range(attempts)))
    finally:
        for till in tills:
            till.close()
    assert sorted(answers) == [403] * 10 + [429] * (attempts - 10)
    assert counted(runtime, "staff-pin") == attempts


def test_right_pins_do_not_use_up_the_limit(account: TestAccount, servers: tuple[str, str]) -> None:
    """Staff who type the right PIN all day are never locked out by it: only wrong guesses count."""
    campaign = create_campaign(account, validation_methods="widget")
    staff = f"/p/{campaign['code']}/staff"
    with httpx2.Client(base_url=servers[0], timeout=30) as till:

        def post(pin: str) -> int:
            form = {"csrf": csrf_token(till, staff), "pin": pin, "code": "abcdef"}
            return int(till.post(staff, data=form, follow_redirects=True).status_code)

        assert [post("0000") for _ in range(9)] == [403] * 9
        # The right PIN gets past the lockout (no coupon has this code: 404), twenty times over.
        assert [post(PIN) for _ in range(20)] == [404] * 20
        assert post("0000") == 403  # the tenth wrong one
        assert post(PIN) == 429


def test_wrong_loyalty_pins_split_between_processes_lock_out_after_ten(
    account: TestAccount, servers: tuple[str, str]
) -> None:
    card = create_card(account, type="points", pin="2468")
    holder = create_holder(account, card["id"])
    staff = f"/l/{card['code']}/staff"
    tills = [httpx2.Client(base_url=base, timeout=30) for base in servers]
    try:
        tokens = [_form_token(till.get(staff).text) for till in tills]
        for attempt in range(10):
            form = {"form_token": tokens[attempt % 2], "holder": holder["code"], "pin": "1111"}
            assert tills[attempt % 2].post(staff, data=form).status_code == 403
        for till, form_token in zip(tills, tokens, strict=True):
            right = till.post(staff, data={"form_token": form_token, "holder": holder["code"], "pin": "2468"})
            assert right.status_code == 429, right.text
    finally:
        for till in tills:
            till.close()


def test_dashboard_sign_ins_split_between_processes_are_limited_in_total(
    account: TestAccount, servers: tuple[str, str]
) -> None:
    """SIGN_INS per email and six times that per client address, per minute, whichever server
    the attempt reaches."""
    webs = [browser(base) for base in servers]
    try:
        same_email = [sign_in(webs[i % 2], account.email, "wrong-password").status_code for i in range(4)]
        right = sign_in(webs[0], account.email, PASSWORD)
        # 18 per address: 5 used above, 13 more on other emails pass, the next does not.
        sprayed = [sign_in(webs[i % 2], f"spray{i}@example.com", "wrong").status_code for i in range(14)]
    finally:
        for web in webs:
            web.close()
    assert same_email == [401] * SIGN_INS + [429]
    assert right.status_code == 429
    assert sprayed == [401] * 13 + [429]


def test_directory_sign_ins_split_between_processes_are_limited_in_total(
    account: TestAccount, servers: tuple[str, str]
) -> None:
    directory = create_directory(account, name="Members", access="login")
    code = directory["code"]
    browsers = [Browser(base) for base in servers]
    try:
        assert browsers[0].register(code, "member@example.com").status_code == 303
        for attempt in range(SIGN_INS):
            wrong = browsers[attempt % 2].login(code, "member@example.com", "not the password")
            assert wrong.status_code == 401, wrong.text
        for each in browsers:
            refused = each.login(code, "Member@example.com")
            assert refused.status_code == 429, refused.text
    finally:
        for each in browsers:
            each.close()


# --- races -----------------------------------------------------------------------------------------


def test_concurrent_sign_ins_on_two_processes_let_exactly_the_limit_through(
    account: TestAccount, servers: tuple[str, str], runtime: Runtime
) -> None:
    """Counting an attempt and reading its number is one statement: of 24 concurrent sign-ins,
    split between the servers, exactly SIGN_INS are let through, and all 24 are counted."""
    directory = create_directory(account, name="Raced", access="login")
    code = directory["code"]
    attempts = 24
    browsers = [Browser(servers[i % 2]) for i in range(attempts)]
    try:
        tokens = [b.csrf(f"/d/{code}/login") for b in browsers]
        start = threading.Barrier(attempts)

        def attempt(i: int) -> int:
            start.wait(timeout=30)
            fields = {"email": "nobody@example.com", "password": "guess", "csrf_token": tokens[i]}
            return int(browsers[i].client.post(f"/d/{code}/login", data=fields).status_code)

        with ThreadPoolExecutor(attempts) as pool:
            answers = sorted(pool.map(attempt, range(attempts)))
    finally:
        for b in browsers:
            b.close()
    assert answers == [401] * SIGN_INS + [429] * (attempts - SIGN_INS)
    assert counted(runtime, "directory-login-address") == attempts


def test_concurrent_failures_from_two_runtimes_lose_no_count(settings: Settings) -> None:
    """Two Runtime objects (two engines, as two processes have) and many threads each: every
    failure is counted once, and each gets its own number, 1 to N."""
    lockout = Lockout("race-test", limit=10)
    runtimes, threads, each = 2, 8, 10
    apps = [Runtime.from_settings(settings) for _ in range(runtimes)]
    start = threading.Barrier(runtimes * threads)

    def fail(app: Runtime) -> list[int]:
        start.wait(timeout=30)
        numbers = []
        for _ in range(each):
            with app.db.transaction() as session:
                numbers.append(lockout.add(session, app.keyring, "camp_1", "198.51.100.9"))
        return numbers

    try:
        with ThreadPoolExecutor(runtimes * threads) as pool:
            results = list(pool.map(fail, [app for app in apps for _ in range(threads)]))
        with apps[0].db.read() as session:
            total = lockout.count(session, apps[0].keyring, "camp_1", "198.51.100.9")
            assert lockout.count(session, apps[1].keyring, "camp_1", "198.51.100.9") >= lockout.limit
    finally:
        for app in apps:
            app.db.dispose()
    numbers = sorted(n for result in results for n in result)
    assert numbers == list(range(1, runtimes * threads * each + 1))
    assert total == runtimes * threads * each


def test_concurrent_wrong_pins_on_two_processes_are_all_counted(
    account: TestAccount, servers: tuple[str, str], runtime: Runtime
) -> None:
    """A guess is counted before it is checked: of 24 wrong PINs sent at once to two processes,
    exactly ten are checked ("Wrong PIN"), the other fourteen are refused unchecked, and every one
    of them is counted."""
    card = create_card(account, type="points", pin="2468")
    holder = create_holder(account, card["id"])
    staff = f"/l/{card['code']}/staff"
    attempts = 24
    tills = [httpx2.Client(base_url=servers[i % 2], timeout=30) for i in range(attempts)]
    try:
        tokens = [_form_token(till.get(staff).text) for till in tills]
        start = threading.Barrier(attempts)

        def attempt(i: int) -> int:
            start.wait(timeout=30)
            form = {"form_token": tokens[i], "holder": holder["code"], "pin": "1111"}
            return int(tills[i].post(staff, data=form).status_code)

        with ThreadPoolExecutor(attempts) as pool:
            answers = list(pool.map(attempt, range(attempts)))
    finally:
        for till in tills:
            till.close()
    assert sorted(answers) == [403] * 10 + [429] * (attempts - 10)
    assert counted(runtime, "loyalty-pin") == attempts


# --- windows, keys and the purge ---------------------------------------------------------------------


def test_a_window_ends_and_the_count_starts_again(runtime: Runtime) -> None:
    lockout = Lockout("window-test", limit=3, window=dt.timedelta(minutes=15))
    start = utcnow()
    with runtime.db.transaction() as session:
        for n in range(1, 4):
            assert lockout.add(session, runtime.keyring, 7, "203.0.113.7", now=start) == n
        assert lockout.count(session, runtime.keyring, 7, "203.0.113.7", now=start) >= lockout.limit
        # Another client, another campaign: not held up.
        assert lockout.count(session, runtime.keyring, 7, "203.0.113.8", now=start) < lockout.limit
        assert lockout.count(session, runtime.keyring, 8, "203.0.113.7", now=start) < lockout.limit
        # Failures late in the window do not extend it.
        late = start + dt.timedelta(minutes=14)
        assert lockout.add(session, runtime.keyring, 7, "203.0.113.7", now=late) == 4
        over = start + dt.timedelta(minutes=15)
        assert lockout.count(session, runtime.keyring, 7, "203.0.113.7", now=over) < lockout.limit
        assert lockout.count(session, runtime.keyring, 7, "203.0.113.7", now=over) == 0
        assert lockout.add(session, runtime.keyring, 7, "203.0.113.7", now=over) == 1
        assert lockout.attempt(session, runtime.keyring, 7, "203.0.113.7", now=over)
        assert lockout.attempt(session, runtime.keyring, 7, "203.0.113.7", now=over)
        assert not lockout.attempt(session, runtime.keyring, 7, "203.0.113.7", now=over)
        keys = list(session.scalars(select(AttemptCounter.key)))
    # Client addresses (and emails) are stored only as keyed digests.
    assert keys
    assert all(key.startswith("window-test:") and "203.0.113" not in key for key in keys)


def test_a_backstop_locks_twice_as_long_each_time_and_forgets_one_doubling_a_quiet_day(
    runtime: Runtime,
) -> None:
    """A campaign's backstop on wrong PINs: wrong guesses count for a day (staying under the limit
    gains no new allowance every 15 minutes); each time the limit is reached the key is refused for
    twice as long as the time before, 15 minutes up to a day; a day without the limit reached
    takes one doubling back, so waiting a day does not bring the short lockouts back."""
    backstop = EscalatingLockout("escalation-test", limit=3)
    start = utcnow()

    def lockout_at(at: dt.datetime) -> int:
        """The limit's guesses and one more at `at`: the minutes the key is then refused."""
        with runtime.db.transaction() as session:
            for _ in range(3):
                assert backstop.attempt(session, runtime.keyring, 7, now=at)
            assert not backstop.attempt(session, runtime.keyring, 7, now=at)
            return round(backstop.seconds_left(session, runtime.keyring, 7, now=at) / 60)

    lengths, at = [], start
    for _ in range(9):
        lengths.append(lockout_at(at))
        with runtime.db.transaction() as session:  # refused to its last second, and not lengthened
            before_end = at + dt.timedelta(minutes=lengths[-1], seconds=-1)
            assert not backstop.attempt(session, runtime.keyring, 7, now=before_end)
        at += dt.timedelta(minutes=lengths[-1])
    assert lengths == [15, 30, 60, 120, 240, 480, 960, 1440, 1440]
    # One quiet day: one doubling less. Seven quiet days: all forgotten.
    at += dt.timedelta(days=1)
    assert lockout_at(at) == 960
    at += dt.timedelta(minutes=960, days=7)
    assert lockout_at(at) == 15
    # Wrong guesses spread out: the count is the day's, not the quarter-hour's.
    with runtime.db.transaction() as session:
        later = at + dt.timedelta(days=2)
        assert backstop.attempt(session, runtime.keyring, 8, now=later)
        assert backstop.attempt(session, runtime.keyring, 8, now=later + dt.timedelta(hours=6))
        assert backstop.attempt(session, runtime.keyring, 8, now=later + dt.timedelta(hours=12))
        assert not backstop.attempt(session, runtime.keyring, 8, now=later + dt.timedelta(hours=18))
        assert (
            backstop.seconds_left(session, runtime.keyring, 8, now=later + dt.timedelta(hours=18)) == 15 * 60
        )
        # Another key (campaign) is not held up.
        assert backstop.attempt(session, runtime.keyring, 9, now=later + dt.timedelta(hours=18))


def test_housekeeping_deletes_counts_whose_window_is_over(runtime: Runtime) -> None:
    """A flood of client addresses leaves rows for one window only: the worker deletes them once
    it is over, in batches, and keeps the counts still running (a blocked client stays blocked)."""
    lockout = Lockout("purge-test", limit=2, window=dt.timedelta(minutes=10))
    now = utcnow()
    earlier = now - dt.timedelta(minutes=11)
    with runtime.db.transaction() as session:
        for client in range(25):
            lockout.add(session, runtime.keyring, f"10.0.0.{client}", now=earlier)
        lockout.add(session, runtime.keyring, "10.0.1.1", now=now)
        lockout.add(session, runtime.keyring, "10.0.1.1", now=now)
    swept = housekeeping.sweep(runtime, now=now, batch=10)  # three batches
    assert swept.attempt_counters == 25
    assert counted(runtime, "purge-test") == 2
    with runtime.db.read() as session:
        assert lockout.count(session, runtime.keyring, "10.0.1.1", now=now) >= lockout.limit


def test_housekeeping_keeps_a_count_whose_window_started_again_meanwhile(runtime: Runtime) -> None:
    """The purge and a new attempt on an expired count at the same moment: the attempt's
    transaction restarts the window, the purge waits for it, and must then leave the fresh count.
    (PostgreSQL re-checks only the outer condition of a DELETE on a row changed meanwhile.)"""
    lockout = Lockout("purge-race", limit=10, window=dt.timedelta(minutes=15))
    now = utcnow()
    with runtime.db.transaction() as session:
        assert lockout.add(session, runtime.keyring, "10.9.9.9", now=now - dt.timedelta(minutes=16)) == 1
    swept: list[housekeeping.Swept] = []
    with runtime.db.transaction() as session:
        for n in range(1, 6):
            assert lockout.add(session, runtime.keyring, "10.9.9.9", now=now) == n
        purge = threading.Thread(target=lambda: swept.append(housekeeping.sweep(runtime, now=now)))
        purge.start()
        purge.join(timeout=0.5)  # it waits for this transaction (row lock, or SQLite's one writer)
    purge.join(timeout=30)
    assert len(swept) == 1
    assert swept[0].attempt_counters == 0
    with runtime.db.read() as session:
        assert lockout.count(session, runtime.keyring, "10.9.9.9", now=now) == 5


def _staff_guesses(base: str, campaign: dict[str, Any], pins_by_address: list[tuple[str, str]]) -> list[int]:
    """Staff-page PIN guesses, each from the client address given (the servers trust the
    X-Forwarded-For of a loopback proxy, as behind nginx)."""
    staff = f"/p/{campaign['code']}/staff"
    with httpx2.Client(base_url=base, timeout=30) as till:
        token = csrf_token(till, staff)
        return [
            int(
                till.post(
                    staff,
                    data={"csrf": token, "pin": pin, "code": "abcdef"},
                    headers={"X-Forwarded-For": address},
                    follow_redirects=True,
                ).status_code
            )
            for address, pin in pins_by_address
        ]


def test_one_address_cannot_lock_the_staff_out(account: TestAccount, servers: tuple[str, str]) -> None:
    """Wrong PINs are limited per campaign and client address: someone who found the public staff
    page and typed ten wrong PINs is held, the till at another address goes on."""
    campaign = create_campaign(account, validation_methods="widget")
    attacker = [("198.51.100.7", "0000")] * 11
    assert _staff_guesses(servers[0], campaign, attacker) == [403] * 10 + [429]
    # The till's right PIN is checked (no coupon has the code typed: 404), not refused.
    assert _staff_guesses(servers[1], campaign, [("198.51.100.8", PIN)]) == [404]


def test_guesses_spread_over_many_addresses_meet_a_campaign_backstop(
    account: TestAccount, servers: tuple[str, str]
) -> None:
    """Ten addresses, ten wrong PINs each: a hundred guesses at one campaign's PIN, and the next
    address is refused before its first. (Per address alone, enough addresses try every PIN.)"""
    campaign = create_campaign(account, validation_methods="widget")
    spread = [(f"203.0.113.{n}", f"{n:02d}{i:02d}") for n in range(10) for i in range(10)]
    answers = _staff_guesses(servers[0], campaign, spread)
    assert answers == [403] * 100
    assert _staff_guesses(servers[1], campaign, [("203.0.113.99", "9999")]) == [429]


def test_an_ipv6_network_counts_as_one_client(account: TestAccount, servers: tuple[str, str]) -> None:
    """One subscriber line holds a whole /64: its addresses share one count."""
    campaign = create_campaign(account, validation_methods="widget")
    line = [(f"2001:db8:1:2::{n:x}", "0000") for n in range(1, 12)]
    assert _staff_guesses(servers[0], campaign, line) == [403] * 10 + [429]
    assert _staff_guesses(servers[0], campaign, [("2001:db8:1:3::1", "0000")]) == [403]
