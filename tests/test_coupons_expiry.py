"""Expiry modes, evaluated in the account's time zone, with the service clock moved."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from zoneinfo import ZoneInfo

import httpx2
from sqlalchemy import select

from conftest import LiveServer
from coupons_fixtures import Acct, bulk_sessions, create_campaign, open_session, session_status
from directories_fixtures import make_campaign
from helpers import assert_error, assert_ok
from opencoupon.coupons import expiry, repository, service
from opencoupon.coupons.sessions import new_session
from opencoupon.kit import clock
from opencoupon.models import Account, Campaign, CouponSession
from opencoupon.runtime import Runtime

Move = Callable[[dt.timedelta], None]


def _set_timezone(runtime: Runtime, account: Acct, name: str) -> None:
    with runtime.db.transaction() as s:
        row = s.get(Account, account.id)
        assert row is not None
        row.timezone = name


def _move_to(clock_offset: Move, when: dt.datetime) -> None:
    """Set the service clock to `when` (naive UTC)."""
    clock_offset(dt.timedelta(0))
    clock_offset(when - clock.utcnow())


def test_fixed_date_lasts_until_the_end_of_that_local_day(
    account: Acct, runtime: Runtime, live_server: LiveServer, clock_offset: Move
) -> None:
    _set_timezone(runtime, account, "America/Los_Angeles")
    day = clock.utcnow().date() + dt.timedelta(days=10)
    campaign = create_campaign(account, expiry_mode="fixed_date", expiry_date=day.isoformat())
    early, late = bulk_sessions(runtime, campaign["id"], 2)
    local_end = dt.datetime.combine(
        day + dt.timedelta(days=1), dt.time(0), tzinfo=ZoneInfo("America/Los_Angeles")
    )
    end_utc = local_end.astimezone(dt.UTC).replace(tzinfo=None)
    # Already the next day in UTC, still the expiry day in Los Angeles: the coupon works.
    assert end_utc - dt.timedelta(minutes=2) > dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0))
    _move_to(clock_offset, end_utc - dt.timedelta(minutes=2))
    assert session_status(account, early)["expired"] == "0"
    # The last valid second, the moment coupon_info's expirydate (23:59:59 local) names too.
    last_second = end_utc - dt.timedelta(seconds=1)
    assert session_status(account, early)["expiry_date_utc"] == last_second.strftime("%Y-%m-%d %H:%M:%S")
    assert_ok(account.call("/v3/couponsession/update", couponsession=early, validate=True))
    _move_to(clock_offset, end_utc + dt.timedelta(minutes=2))
    assert session_status(account, late)["expired"] == "1"
    body = assert_error(account.call("/v3/couponsession/update", couponsession=late, validate=True), 409, 308)
    assert "expired" in body["status"]["errors"]["error_message_description"][0]
    info = account.call("/v3/coupon/info", campaign=campaign["id"]).json()["coupon_info"]
    assert info["expirydate"] == f"{day.isoformat()} 23:59:59"
    with httpx2.Client(base_url=live_server.url) as phone:
        page = phone.get(f"/p/{campaign['code']}/{late}")
        assert "This coupon has expired." in page.text
        assert "America/Los_Angeles" in page.text


def test_window_after_first_open(
    account: Acct, runtime: Runtime, live_server: LiveServer, clock_offset: Move
) -> None:
    campaign = create_campaign(account, expiry_mode="after_open", expiry_minutes=60)
    first = open_session(live_server, campaign["code"])
    second = open_session(live_server, campaign["code"])
    # Not opened yet: the window has not started (single-use links wait for their first visit).
    (link,) = bulk_sessions(runtime, campaign["id"], 1, source="single_use")
    clock_offset(dt.timedelta(minutes=59))
    assert_ok(account.call("/v3/couponsession/update", couponsession=first, validate=True))
    clock_offset(dt.timedelta(minutes=61))
    assert session_status(account, second)["expired"] == "1"
    assert_error(account.call("/v3/couponsession/update", couponsession=second, validate=True), 409, 308)
    with httpx2.Client(base_url=live_server.url) as phone:
        assert "This coupon has expired." not in phone.get(f"/p/{campaign['code']}/{link}").text
    clock_offset(dt.timedelta(minutes=61 + 59))
    assert_ok(account.call("/v3/couponsession/update", couponsession=link, validate=True))
    # A link never opened at all is not expired by the window, however late it is used.
    (unopened,) = bulk_sessions(runtime, campaign["id"], 1, source="single_use")
    clock_offset(dt.timedelta(days=30))
    status = session_status(account, unopened)
    assert (status["opened"], status["expired"], status["expiry_date_utc"]) == ("0", "0", "")
    assert_ok(account.call("/v3/couponsession/update", couponsession=unopened, validate=True))


def test_expiry_settings_beyond_any_date_are_refused(account: Acct) -> None:
    """A limit past the year 9999 cannot be computed or shown: refused when saved (300), never
    a 500 on the campaign's pages and calls afterwards."""
    refused = [
        {"expiry_mode": "fixed_date", "expiry_date": "9999-12-31"},
        {"expiry_mode": "after_open", "expiry_minutes": 10_000_000_000},
        {"expiry_mode": "after_claim", "expiry_days": 1_000_000_000},
        {"start_date": "9999-12-31"},
    ]
    for fields in refused:
        response = account.client.post("/v4/campaigns", json={"name": "x", **fields}, headers=account.headers)
        assert_error(response, 422, 300)
    longest = create_campaign(account, expiry_mode="after_claim", expiry_days=36_500)
    info = assert_ok(account.call("/v3/coupon/info", campaign=longest["id"]))
    assert json.dumps(info).count(f'"expiry_minutes": "{36_500 * 24 * 60}"') == 1


def test_window_after_claim(account: Acct, runtime: Runtime, clock_offset: Move) -> None:
    _set_timezone(runtime, account, "Asia/Tokyo")
    campaign = create_campaign(account, expiry_mode="after_claim", expiry_days=1)
    claimed, unclaimed, other = bulk_sessions(runtime, campaign["id"], 3)
    clock_offset(dt.timedelta(days=2))
    assert session_status(account, unclaimed)["expired"] == "0"
    assert_ok(account.call("/v3/couponsession/update", couponsession=claimed, claim=True))
    assert_ok(account.call("/v3/couponsession/update", couponsession=other, claim=True))
    clock_offset(dt.timedelta(days=2, hours=23))
    assert_ok(account.call("/v3/couponsession/update", couponsession=claimed, validate=True))
    clock_offset(dt.timedelta(days=3, minutes=1))
    assert session_status(account, other)["expired"] == "1"
    assert_error(account.call("/v3/couponsession/update", couponsession=other, validate=True), 409, 308)
    assert_error(account.call("/v3/couponsession/update", couponsession=other, claim=True), 409, 308)
    assert_ok(account.call("/v3/couponsession/update", couponsession=unclaimed, validate=True))


def test_campaign_start_and_end_dates_gate_new_sessions(
    account: Acct, live_server: LiveServer, clock_offset: Move
) -> None:
    now = clock.utcnow()
    start = (now + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    end = (now + dt.timedelta(days=3)).strftime("%Y-%m-%d")
    campaign = create_campaign(account, start_date=start, end_date=end)
    with httpx2.Client(base_url=live_server.url) as phone:
        assert "not started yet" in phone.get(f"/p/{campaign['code']}").text
        clock_offset(dt.timedelta(days=2))
        assert phone.get(f"/p/{campaign['code']}").status_code == 303
        clock_offset(dt.timedelta(days=4))
        # The device that opened it keeps its session; a new device cannot open one.
        assert phone.get(f"/p/{campaign['code']}").status_code == 303
    with httpx2.Client(base_url=live_server.url) as newcomer:
        assert "has ended" in newcomer.get(f"/p/{campaign['code']}").text


def test_a_start_or_end_date_alone_is_a_whole_day_of_the_account(
    account: Acct, runtime: Runtime, live_server: LiveServer, clock_offset: Move
) -> None:
    """`end_date=D` runs through D and `start_date=D` from its first moment, in the account's time
    zone (as `expiry_date`); a date with a time is UTC, as every date of the API."""
    _set_timezone(runtime, account, "America/New_York")
    zone = ZoneInfo("America/New_York")
    day = clock.utcnow().date() + dt.timedelta(days=5)
    campaign = create_campaign(account, start_date=day.isoformat(), end_date=day.isoformat())
    first = dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC).replace(tzinfo=None)
    after = first + dt.timedelta(days=1)
    info = assert_ok(account.call("/v3/coupon/info", campaign=campaign["id"]))["coupon_info"]
    assert (info["start_date"], info["end_date"]) == (
        f"{first:%Y-%m-%d %H:%M:%S}",
        f"{after:%Y-%m-%d %H:%M:%S}",
    )
    with httpx2.Client(base_url=live_server.url) as phone:
        _move_to(clock_offset, first - dt.timedelta(minutes=1))
        assert "not started yet" in phone.get(f"/p/{campaign['code']}").text
        _move_to(clock_offset, first + dt.timedelta(hours=12))  # noon in New York on the day
        assert phone.get(f"/p/{campaign['code']}").status_code == 303
    with httpx2.Client(base_url=live_server.url) as late:
        _move_to(clock_offset, after - dt.timedelta(minutes=1))  # 23:59 in New York
        assert late.get(f"/p/{campaign['code']}").status_code == 303
    with httpx2.Client(base_url=live_server.url) as too_late:
        _move_to(clock_offset, after)
        assert "has ended" in too_late.get(f"/p/{campaign['code']}").text
    timed = create_campaign(account, end_date=f"{day} 12:00")
    timed_info = assert_ok(account.call("/v3/coupon/info", campaign=timed["id"]))["coupon_info"]
    assert timed_info["end_date"] == f"{day} 12:00:00"


def test_a_link_made_before_the_campaign_starts_waits_for_the_start(
    account: Acct, runtime: Runtime, live_server: LiveServer, clock_offset: Move
) -> None:
    """Single-use links may be sent ahead of the start; before it they can be opened (the page
    says so) but not claimed or validated, on any path; from the start they work."""
    start = clock.utcnow() + dt.timedelta(days=3)
    campaign = create_campaign(account, start_date=f"{start:%Y-%m-%d %H:%M}")
    (link,) = bulk_sessions(runtime, campaign["id"], 1, source="single_use")
    for flags in ({"validate": True}, {"claim": True}):
        body = assert_error(account.call("/v3/couponsession/update", couponsession=link, **flags), 409, 308)
        assert body["status"]["errors"]["error_message_description"] == ["This campaign has not started yet."]
    with httpx2.Client(base_url=live_server.url) as phone:
        page = phone.get(f"/p/{campaign['code']}/{link}")
        assert page.status_code == 200
        assert "This campaign has not started yet." in page.text
        assert 'name="pin"' not in page.text
    assert session_status(account, link)["validated"] == "0"
    _move_to(clock_offset, start + dt.timedelta(minutes=1))
    assert_ok(account.call("/v3/couponsession/update", couponsession=link, validate=True))


def test_a_link_looked_at_before_the_start_keeps_its_whole_window(
    account: Acct, runtime: Runtime, live_server: LiveServer, clock_offset: Move
) -> None:
    """An after_open window starts at the first visit, but never before the campaign does."""
    start = clock.utcnow() + dt.timedelta(days=3)
    campaign = create_campaign(
        account, start_date=f"{start:%Y-%m-%d %H:%M}", expiry_mode="after_open", expiry_minutes=60
    )
    (link,) = bulk_sessions(runtime, campaign["id"], 1, source="single_use")
    with httpx2.Client(base_url=live_server.url) as phone:
        assert phone.get(f"/p/{campaign['code']}/{link}").status_code == 200
    _move_to(clock_offset, start + dt.timedelta(minutes=59))
    assert session_status(account, link)["expired"] == "0"
    assert_ok(account.call("/v3/couponsession/update", couponsession=link, validate=True))


def test_a_date_without_leading_zeros_is_a_whole_day_too(account: Acct, runtime: Runtime) -> None:
    _set_timezone(runtime, account, "Asia/Tokyo")
    padded = create_campaign(account, end_date="2030-01-31")
    bare = create_campaign(account, end_date="2030-1-31")
    ends = [
        assert_ok(account.call("/v3/coupon/info", campaign=c["id"]))["coupon_info"]["end_date"]
        for c in (padded, bare)
    ]
    assert ends == ["2030-01-31 15:00:00", "2030-01-31 15:00:00"]  # midnight after 31 January in Tokyo


def test_pages_show_the_last_valid_moment_in_the_account_time_zone(
    account: Acct, runtime: Runtime, live_server: LiveServer, clock_offset: Move
) -> None:
    """ "Valid until 31 March" shows 31 March 23:59 local time, as coupon_info's `expirydate` does,
    never the first moment after it (1 April 00:00)."""
    fixed = create_campaign(account, expiry_mode="fixed_date", expiry_date="2027-03-31")
    windowed = create_campaign(account, expiry_mode="after_claim", expiry_minutes=90)
    with httpx2.Client(base_url=live_server.url) as phone:
        for zone in ("Europe/Brussels", "UTC"):
            _set_timezone(runtime, account, zone)
            phone.cookies.clear()
            page = phone.get(phone.get(f"/p/{fixed['code']}").headers["location"]).text
            assert f"Valid until 31 March 2027 23:59 ({zone})." in page, page
            assert "01 April" not in page
        info = account.call("/v3/coupon/info", campaign=fixed["id"]).json()["coupon_info"]
        assert info["expirydate"] == "2027-03-31 23:59:59"
        # A window that starts at the claim: said before the claim, its end shown after it.
        _set_timezone(runtime, account, "UTC")
        location = phone.get(f"/p/{windowed['code']}").headers["location"]
        assert "Valid for 90 minutes once claimed." in phone.get(location).text
        code = location.rsplit("/", 1)[1]
        _move_to(clock_offset, dt.datetime(2027, 1, 5, 10, 0, 0))
        assert_ok(account.call("/v3/couponsession/update", couponsession=code, claim=True))
        # Claimed a moment after 10:00:00, so valid through a moment after 11:30:00.
        assert "Valid until 05 January 2027 11:30 (UTC)." in phone.get(location).text
        _move_to(clock_offset, dt.datetime(2027, 1, 5, 11, 31, 0))
        assert "It was valid until 05 January 2027 11:30 (UTC)." in phone.get(location).text


STATE_ZONES = ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "America/Santiago", "Asia/Kathmandu"]


def test_the_dashboard_state_filter_agrees_with_the_state_at_time_zone_and_expiry_edges(
    runtime: Runtime, account: Acct
) -> None:
    """The sessions table filters by state in SQL (repository.sessions_table) and shows the state
    computed in Python (service.state); a filter that disagreed listed a session under a word the
    table did not show. Random campaigns (each expiry mode, start dates at the window's edge,
    inactive ones) in zones far from UTC, sessions in every condition, and `now` at the local end
    of the expiry day and a microsecond before it: each filter lists exactly the sessions whose
    state is its word."""
    rnd = random.Random(7)
    base = dt.datetime(2025, 3, 30, 12, 0, 0)
    mismatches = []
    for trial in range(20):
        zone = rnd.choice(STATE_ZONES)
        tz = expiry.zone(zone)
        expiry_day = (base + dt.timedelta(days=rnd.randint(-2, 2))).date()
        starts = [
            None,
            base - dt.timedelta(hours=3),
            base + dt.timedelta(minutes=30),
            base - dt.timedelta(minutes=60),
        ]
        campaign_ref = make_campaign(
            runtime,
            account.id,
            status=rnd.choice(["active", "active", "inactive"]),
            expiry_mode=rnd.choice(["none", "fixed_date", "after_open", "after_claim"]),
            expiry_minutes=rnd.choice([None, 0, 1, 60, 1440]),
            expiry_date=expiry_day,
            start_at=rnd.choice(starts),
            validations_per_session=rnd.choice([1, 2, 3]),
        )

        def moment() -> dt.datetime | None:
            minutes = rnd.choice([0, 1, 59, 60, 61, 1440, 3000])
            return rnd.choice(
                [
                    None,
                    base - dt.timedelta(minutes=minutes),
                    base - dt.timedelta(minutes=60, microseconds=1),
                    base,
                ]
            )

        with runtime.db.transaction() as session:
            owner = session.get(Account, account.id)
            assert owner is not None
            owner.timezone = zone
            campaign = session.get(Campaign, campaign_ref.id)
            assert campaign is not None
            for _ in range(15):
                row = new_session(session, campaign)
                row.opened_at, row.claimed_at, row.expires_at = moment(), moment(), moment()
                row.locked = rnd.random() < 0.15
                row.link_status = "voided" if rnd.random() < 0.15 else "normal"
                row.validation_count = rnd.choice([0, 0, 1, 2, 3])
        day_end = expiry.end_of_local_day(expiry_day, tz)
        moments = [base, day_end, day_end - dt.timedelta(microseconds=1), base + dt.timedelta(minutes=30)]
        with runtime.db.read() as session:
            campaign = session.get(Campaign, campaign_ref.id)
            assert campaign is not None
            rows = list(
                session.scalars(select(CouponSession).where(CouponSession.campaign_id == campaign.id))
            )
            for now in moments:
                shown = {row.id: service.state(campaign, row, tz, now) for row in rows}
                for word in repository.SESSION_STATE_FILTERS:
                    listed = {
                        r.id for r in repository.sessions_table(session, campaign, tz=tz, now=now, state=word)
                    }
                    expected = {row_id for row_id, state in shown.items() if state == word}
                    if listed != expected:
                        mismatches.append((trial, zone, now, word, sorted(listed ^ expected)[:3]))
    assert not mismatches, mismatches[:5]
