"""Vendor date formats: "yyyy-MM-dd HH:mm:ss" in UTC, "" when unset."""

from __future__ import annotations

import datetime as dt
import re

from opencoupon.errors import bad_date, bad_value

VENDOR_FORMAT = "%Y-%m-%d %H:%M:%S"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# The latest year a stored date may have: Python's dates end with 9999, and a limit shown in the
# account's time zone, or a day added to it, must stay representable.
LAST_YEAR = 9000
# The earliest (a date converted from a time zone ahead of UTC must stay representable too).
FIRST_YEAR = 1900


def fmt(value: dt.datetime | None) -> str:
    if not value:
        return ""
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)  # the wall time as stored, as strftime gave it
    # VENDOR_FORMAT, a third of strftime's cost (a session answer formats ten dates).
    return value.isoformat(" ", "seconds")


def fmt_date(value: dt.date | None) -> str:
    if not value:
        return ""
    # Not strftime: glibc's %Y does not pad, so 0999-01-01 was shown as 999-01-01, which the same
    # call then refused (303). `fmt` pads through isoformat.
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def parse_datetime(name: str, raw: str, formats: list[str], shown: str) -> dt.datetime:
    """Parse with the first matching format or raise error 303 naming `shown`."""
    text = raw.strip()
    for f in formats:
        try:
            return dt.datetime.strptime(text, f)
        except ValueError:
            continue
    raise bad_date(name, shown)


def parse_date(name: str, raw: str) -> dt.date:
    return parse_datetime(name, raw, ["%Y-%m-%d"], "yyyy-MM-dd").date()


def parse_birthday(name: str, raw: str, today: dt.date) -> dt.date:
    """A birthday: `yyyy-MM-dd` (303 otherwise; not the week dates and other forms
    `date.fromisoformat` takes) from 1900 up to today, give or take a time zone (300)."""
    if not _DAY.fullmatch(raw.strip()):
        raise bad_date(name, "yyyy-MM-dd")
    day = parse_date(name, raw)
    if not dt.date(FIRST_YEAR, 1, 1) <= day <= today + dt.timedelta(days=1):
        raise bad_value(name, f"A birthday lies between {FIRST_YEAR} and today.")
    return day
