"""Every query of the single-use capability, including the bulk insert of a batch of links."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, bindparam, func, or_, select, text
from sqlalchemy.orm import Session

from opencoupon.db import raw
from opencoupon.events import service as events_service
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, CouponSession, Event
from opencoupon.singleuse.codes import random_strings
from opencoupon.worker import queue

SOURCE = "single_use"
# Values per IN (...) probe: far below SQLite's 32,766 bound variables and PostgreSQL's 65,535.
PROBE_CHUNK = 5000
# SQLite page cache while a batch is inserted (KiB). Rows go in index order, so each index page is
# visited once: 8 MB inserts 100,000 rows as fast as 64 MB did (measured on tables of up to 900,000
# rows), and the memory it held stays with the process after the batch, scattered among others.
BULK_CACHE_KIB = 8 * 1024

_TABLE = CouponSession.__table__


def campaign_in_scope(session: Session, scope: ColumnElement[bool], campaign_id: int) -> Campaign | None:
    return session.scalar(
        select(Campaign).where(Campaign.id == campaign_id, scope, Campaign.deleted_at.is_(None))
    )


def campaign_by_id(session: Session, campaign_id: int) -> Campaign | None:
    return session.scalar(select(Campaign).where(Campaign.id == campaign_id, Campaign.deleted_at.is_(None)))


# First key of the PostgreSQL advisory locks taken here ("SU"); the second is the campaign id.
ADVISORY_NAMESPACE = 0x5355


def lock_campaign(session: Session, campaign: Campaign) -> None:
    """Serialise link creation per campaign on PostgreSQL until commit, so the pre-check of
    clashing codes (and the duplicate check) stays true. An advisory lock, not a row lock: the
    campaign row takes counter updates on every open, claim and validation, which must not wait
    for a batch. On SQLite every write transaction already holds the database's write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :id)"), {"ns": ADVISORY_NAMESPACE, "id": campaign.id}
        )


def taken(session: Session, campaign_id: int, column_name: str, values: Sequence[str]) -> set[str]:
    """Which of `values` the campaign already uses in `column_name` (short_code or
    custom_validation_code)."""
    column = _TABLE.c[column_name]
    in_campaign = _TABLE.c.campaign_id == campaign_id
    existing = int(session.scalar(select(func.count()).select_from(_TABLE).where(in_campaign)) or 0)
    if existing == 0:
        return set()
    if existing <= max(4 * len(values), 10_000):
        # Reading the campaign's keys off its unique index beats probing it value by value.
        have = set(session.scalars(select(column).where(in_campaign, column.is_not(None))))
        return have.intersection(values)
    found: set[str] = set()
    for start in range(0, len(values), PROBE_CHUNK):
        chunk = values[start : start + PROBE_CHUNK]
        found.update(session.scalars(select(column).where(in_campaign, column.in_(chunk))))
    return found


@contextmanager
def bulk_cache(session: Session) -> Iterator[None]:
    """On SQLite, a page cache big enough for a batch's index pages while it is inserted (the
    default 2 MB makes every random-key index insert spill and re-read pages); the connection's
    own size comes back afterwards, so a pooled connection does not keep the memory."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        yield
        return
    before = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    connection.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size={int(before or -2000)}")


def count_custom_codes_of_shape(session: Session, campaign_id: int, prefix: str, total_length: int) -> int:
    """Custom validation codes of the campaign that start with `prefix` and have `total_length`
    characters: the part of a code space already used."""
    column = CouponSession.custom_validation_code
    conditions = [
        CouponSession.campaign_id == campaign_id,
        column.is_not(None),
        func.length(column) == total_length,
    ]
    if prefix:
        # Exact comparison: LIKE is case-insensitive on SQLite, and a range compare follows the
        # collation on PostgreSQL. The campaign's unique index bounds the rows looked at.
        conditions.append(func.substr(column, 1, len(prefix)) == prefix)
    return int(session.scalar(select(func.count()).select_from(CouponSession).where(*conditions)) or 0)


# Built once: called for every recipient of an import, where building the expression each time
# cost more than running the query.
_CUSTOM_CODE_IN_USE = select(CouponSession.id).where(
    CouponSession.campaign_id == bindparam("campaign_id"),
    CouponSession.custom_validation_code == bindparam("code"),
)


def custom_code_in_use(session: Session, campaign_id: int, code: str) -> bool:
    return session.scalar(_CUSTOM_CODE_IN_USE, {"campaign_id": campaign_id, "code": code}) is not None


def _live_single_use(now: Any) -> list[ColumnElement[bool]]:
    """A single-use link that is live: not removed, not voided, not past its own expiry (a link
    that can no longer be used is not handed back as the person's link; a used one still is)."""
    return [
        _TABLE.c.source == SOURCE,
        _TABLE.c.removed_at.is_(None),
        _TABLE.c.link_status != "voided",
        or_(_TABLE.c.expires_at.is_(None), _TABLE.c.expires_at > now),
    ]


def _live_link_with(column: Any) -> Select[CouponSession]:
    return (
        select(CouponSession)
        .where(
            CouponSession.campaign_id == bindparam("campaign_id"),
            column == bindparam("value"),
            *_live_single_use(bindparam("now")),
        )
        .order_by(CouponSession.id)
        .limit(1)
    )


_LIVE_LINK_WITH = {
    "email": _live_link_with(CouponSession.email),
    "phone": _live_link_with(CouponSession.phone),
    "customid": _live_link_with(CouponSession.customid),
}


def duplicate_link(
    session: Session, campaign_id: int, *, email: str, phone: str, customid: str, now: dt.datetime
) -> CouponSession | None:
    """The oldest live single-use link of the campaign with the same email, phone or customid.

    One indexed query per key given ((campaign_id, email) and so on) rather than an OR, which
    the planners may answer with a scan of the campaign's sessions."""
    best: CouponSession | None = None
    for name, value in (("email", email), ("phone", phone), ("customid", customid)):
        if not value:
            continue
        row = session.scalar(_LIVE_LINK_WITH[name], {"campaign_id": campaign_id, "value": value, "now": now})
        if row is not None and (best is None or row.id < best.id):
            best = row
    return best


@dataclass(frozen=True)
class HeldLink:
    """A live link found by live_links_by: what an import answers for someone who holds it."""

    id: int
    code: str
    short_code: str
    custom_validation_code: str | None
    customid: str

    @property
    def rank(self) -> tuple[int, int]:
        return (0, self.id)  # the oldest first, before any link an import is making


def live_links_by(
    session: Session, campaign_id: int, column_name: str, values: Iterable[str], now: dt.datetime
) -> dict[str, HeldLink]:
    """duplicate_link for many values of one column (email, phone or customid) at once: each
    value's oldest live single-use link in the campaign, PROBE_CHUNK values per query."""
    column = _TABLE.c[column_name]
    wanted = sorted(values)
    found: dict[str, HeldLink] = {}
    for start in range(0, len(wanted), PROBE_CHUNK):
        rows = session.execute(
            select(
                column,
                _TABLE.c.id,
                _TABLE.c.code,
                _TABLE.c.short_code,
                _TABLE.c.custom_validation_code,
                _TABLE.c.customid,
            )
            .where(
                _TABLE.c.campaign_id == campaign_id,
                column.in_(wanted[start : start + PROBE_CHUNK]),
                *_live_single_use(now),
            )
            .order_by(_TABLE.c.id)
        )
        for value, *link in rows:
            found.setdefault(value, HeldLink(*link))
    return found


def insert_events(
    session: Session,
    account_id: int,
    type_: str,
    campaign: str,
    events: Sequence[tuple[str, dict[str, Any]]],
) -> None:
    """events.emit for many events of one kind at once, (session code, data) each: written through
    the driver as a batch's links are (ids reserved up front, no RETURNING), and a delivery job
    per event when the account has somewhere to deliver to (the same check, in the same
    transaction)."""
    if not events:
        return
    table = cast(Table, Event.__table__)
    numbers = reserve_ids(session, len(events), table)
    public_ids = random_strings(len(events), 20, ids.ALNUM)  # as ids.event_id draws them
    writer = BulkInsert(
        session,
        ("id", "public_id", "session", "data"),
        {"account_id": account_id, "type": type_, "campaign": campaign, "created_at": utcnow()},
        table,
    )
    writer.write(
        (number, "evt_" + public_id, code, json.dumps(data, default=str))
        for number, public_id, (code, data) in zip(numbers, public_ids, events, strict=True)
    )
    if (
        raw.scalar(session, events_service.HAS_SUBSCRIBER, {"account_id": account_id, "yes": True})
        is not None
    ):
        queue.enqueue_many(session, "event.dispatch", [{"event_id": number} for number in numbers])


def link_by_code(
    session: Session, scope: ColumnElement[bool], code: str
) -> tuple[CouponSession, Campaign] | None:
    row = session.execute(
        select(CouponSession, Campaign)
        .join(Campaign, Campaign.id == CouponSession.campaign_id)
        # A deleted campaign's links are gone with it, as from every other call.
        .where(
            CouponSession.code == code,
            CouponSession.source == SOURCE,
            scope,
            Campaign.deleted_at.is_(None),
        )
        # Held until the removal commits (PostgreSQL): what it takes out of the statistics
        # (opened, claimed) is then what the row holds, not what it held before a claim.
        .with_for_update(of=CouponSession, key_share=True)
    ).first()
    return None if row is None else (row[0], row[1])


def reserve_ids(session: Session, count: int, table: Table | None = None) -> list[int]:
    """`count` fresh primary keys of `table` (for coupon_sessions, the vendor's sequence ids) for
    rows inserted without RETURNING.

    SQLite: the transaction holds the database's write lock (BEGIN IMMEDIATE), so nobody else can
    insert until commit and the ids after the current maximum are ours. PostgreSQL: drawn from the
    table's sequence, as the default would.
    """
    table = cast(Table, _TABLE) if table is None else table
    if session.get_bind().dialect.name == "postgresql":
        return list(
            session.scalars(
                text(
                    "SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                    "FROM generate_series(1, :n) ORDER BY 1"
                ),
                {"table": table.name, "n": count},
            )
        )
    top = int(session.scalar(select(func.coalesce(func.max(table.c.id), 0))) or 0)
    return list(range(top + 1, top + 1 + count))


def _python_default(column: Any) -> tuple[bool, Any]:
    default = column.default
    if default is None or getattr(default, "is_sequence", False):
        return False, None
    if default.is_callable:
        return True, default.arg(None)
    return True, default.arg


def _sqlite_literal(value: Any) -> str:
    """A driver-ready constant as SQLite SQL text (ints, floats, text, NULL only)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQLite literal for {type(value).__name__}")


class BulkInsert:
    """Insert many rows of `table` (coupon_sessions unless told) through the database driver in the
    caller's transaction.

    Rows give the `varying` columns; every other column gets its value from `fixed` or the
    model's default, converted for the driver once per batch. This is the raw driver's
    executemany (SQLite; the constants are written into the statement, so each row binds only
    its own values) or COPY (PostgreSQL): no per-row work in SQLAlchemy.
    """

    def __init__(
        self, session: Session, varying: Sequence[str], fixed: dict[str, Any], table: Table | None = None
    ) -> None:
        table = cast(Table, _TABLE) if table is None else table
        self.connection = session.connection()
        self.dialect = self.connection.dialect
        self.varying = list(varying)
        self.constant_columns: list[str] = []
        constants: list[Any] = []
        for column in table.columns:
            if column.name in varying:
                continue
            if column.name in fixed:
                value = fixed[column.name]
            else:
                has_default, value = _python_default(column)
                if not has_default:
                    if column.nullable or column.server_default is not None:
                        continue
                    raise ValueError(f"{table.name}.{column.name} needs a value")
            self.constant_columns.append(column.name)
            constants.append(self._convert(column, value))
        self.constants = tuple(constants)
        names = ", ".join(self.varying + self.constant_columns)
        if self.is_postgresql:
            self.statement = f"COPY {table.name} ({names}) FROM STDIN"
        else:
            values = ["?"] * len(self.varying) + [_sqlite_literal(v) for v in self.constants]
            self.statement = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join(values)})"

    @property
    def integrity_error(self) -> type[Exception]:
        """The driver's own IntegrityError (raw driver calls are not wrapped by SQLAlchemy)."""
        error: type[Exception] = self.dialect.loaded_dbapi.IntegrityError
        return error

    @property
    def is_postgresql(self) -> bool:
        return self.dialect.name == "postgresql"

    def _convert(self, column: Any, value: Any) -> Any:
        if value is None:
            return None
        if self.is_postgresql:
            # COPY text format: psycopg writes str/int/bool/datetime itself; JSON goes as text.
            return json.dumps(value) if isinstance(value, dict | list) else value
        processor: Callable[[Any], Any] | None = column.type.dialect_impl(self.dialect).bind_processor(
            self.dialect
        )
        return processor(value) if processor else value

    def write(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Insert `rows`, tuples of the `varying` columns' values."""
        raw: Any = self.connection.connection.driver_connection
        if self.is_postgresql:
            constants = self.constants
            with raw.cursor() as cursor, cursor.copy(self.statement) as copy:
                for row in rows:
                    copy.write_row(row + constants)
            return
        raw.executemany(self.statement, rows)
