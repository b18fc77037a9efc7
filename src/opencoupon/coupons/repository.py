"""Every query of the coupon capability."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.orm import Session

from opencoupon.coupons import expiry
from opencoupon.models import Campaign, CampaignCustomCode, CouponSession

PAGE_SIZE = 5000


def campaign_by_code(session: Session, code: str) -> Campaign | None:
    return session.scalar(select(Campaign).where(Campaign.code == code, Campaign.deleted_at.is_(None)))


def code_taken(session: Session, code: str) -> bool:
    return session.scalar(select(Campaign.id).where(Campaign.code == code)) is not None


def campaigns(
    session: Session,
    scope: ColumnElement[bool],
    *,
    only_active: bool = False,
    folder: str | None = None,
    category_id: int | None = None,
) -> list[Campaign]:
    query = select(Campaign).where(scope, Campaign.deleted_at.is_(None))
    if only_active:
        query = query.where(Campaign.status == "active")
    if folder:
        query = query.where(Campaign.folder == folder)
    if category_id is not None:
        query = query.where(Campaign.category_id == category_id)
    return list(session.scalars(query.order_by(Campaign.id)))


def folder_exists(session: Session, scope: ColumnElement[bool], folder: str) -> bool:
    """A folder exists while one of the caller's campaigns is in it (folders are campaign labels)."""
    query = select(Campaign.id).where(scope, Campaign.deleted_at.is_(None), Campaign.folder == folder)
    return session.scalar(query.limit(1)) is not None


def sessions_by_short_code(
    session: Session, scope: ColumnElement[bool], short: str, campaign_id: int | None
) -> list[CouponSession]:
    # Sessions of deleted campaigns are gone for every call: they make no short form ambiguous.
    live = select(Campaign.id).where(Campaign.id == CouponSession.campaign_id, Campaign.deleted_at.is_(None))
    query = select(CouponSession).where(CouponSession.short_code == short, scope, live.exists())
    if campaign_id is not None:
        query = query.where(CouponSession.campaign_id == campaign_id)
    return list(session.scalars(query.limit(2)))


def session_in_campaign(session: Session, campaign_id: int, code: str) -> CouponSession | None:
    return session.scalar(
        select(CouponSession).where(CouponSession.campaign_id == campaign_id, CouponSession.code == code)
    )


def session_by_short_in_campaign(session: Session, campaign_id: int, short: str) -> CouponSession | None:
    return session.scalar(
        select(CouponSession).where(
            CouponSession.campaign_id == campaign_id, CouponSession.short_code == short
        )
    )


def _custom_code_any_case(code: str) -> ColumnElement[bool]:
    """The custom validation code in any letter case (an imported "Bar-0001" typed "bar-0001"),
    through the index on (campaign_id, lower(custom_validation_code)). Both sides are lowered by
    the database: SQLite's lower() changes ASCII letters only, so a code such as "CAFÉ-01" must
    meet the same lower() it was indexed with (letter case is then ignored for A–Z)."""
    return func.lower(CouponSession.custom_validation_code) == func.lower(literal(code))


def session_by_custom_code(session: Session, campaign_id: int, code: str) -> CouponSession | None:
    """The session with this custom validation code in any letter case; the exact spelling wins
    when an imported list holds codes that differ only in case."""
    rows = session.scalars(
        select(CouponSession)
        .where(CouponSession.campaign_id == campaign_id, _custom_code_any_case(code))
        .order_by(CouponSession.id)
    ).all()
    exact = [r for r in rows if r.custom_validation_code == code]
    best = exact or rows
    return best[0] if best else None


def session_for_device(session: Session, campaign_id: int, device_id: str) -> CouponSession | None:
    """The session this browser opened on the coupon page. Only those: the device cookie is the
    browser's own word, and other sessions carry guessable device IDs (a directory member's is
    `reg_<id>`), which a made-up cookie would otherwise open, name and email included."""
    return session.scalar(
        select(CouponSession)
        .where(
            CouponSession.device_id == device_id,
            CouponSession.campaign_id == campaign_id,
            CouponSession.source == "web",
            CouponSession.removed_at.is_(None),
        )
        .order_by(CouponSession.id.desc())
        .limit(1)
    )


# First key of the PostgreSQL advisory lock of one device opening one campaign ("OD"); the second
# is a hash of both. Other two-key advisory locks use other first keys (singleuse: "SU").
DEVICE_OPEN_NAMESPACE = 0x4F44


def lock_device_opening(session: Session, campaign_id: int, device_id: str) -> None:
    """Serialise one browser's openings of one campaign on PostgreSQL until commit, so that its
    requests at the same moment (a double tap, several tabs) find the session the first one made
    instead of making one each: web sessions have no unique (campaign, device) index. Two pairs
    with the same hash only wait for each other. On SQLite every write transaction already holds
    the database's write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))"),
            {"ns": DEVICE_OPEN_NAMESPACE, "key": f"{campaign_id}:{device_id}"},
        )


# Which date column each usage-data call filters on (None: every session, by creation date).
USAGE_COLUMNS: dict[str, Any] = {
    "data": CouponSession.created_at,
    "opens": CouponSession.opened_at,
    "claims": CouponSession.claimed_at,
    "validations": CouponSession.validated_at,
}


def usage_page(
    session: Session,
    campaign_id: int,
    kind: str,
    page: int,
    start: dt.datetime | None,
    end: dt.datetime | None,
    after_id: int | None = None,
) -> list[CouponSession]:
    """One page of a usage-data call. `page` is an OFFSET over the sessions not removed, so a
    removal between two fetches moves a session back onto a page already read; `after_id`
    (keyset on the id, the `sequenceid`) does not move."""
    column = USAGE_COLUMNS[kind]
    query = select(CouponSession).where(
        CouponSession.campaign_id == campaign_id, CouponSession.removed_at.is_(None)
    )
    if after_id is not None:
        query = query.where(CouponSession.id > after_id)
    if kind != "data":
        query = query.where(column.is_not(None))
    if start is not None:
        query = query.where(column >= start)
    if end is not None:
        query = query.where(column <= end)
    query = query.order_by(CouponSession.id).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
    return list(session.scalars(query))


SEARCH_PAGE_SIZE = 100


def search(session: Session, campaign_ids: Any, text: str, page: int = 1) -> list[CouponSession]:
    """Sessions whose custom validation code (in any letter case, as on the staff page),
    customid, phone or email is `text` (email: as typed or in lower case), oldest first, by
    pages of SEARCH_PAGE_SIZE (`page` from 1)."""
    email = text.lower()
    scope = (CouponSession.campaign_id.in_(campaign_ids), CouponSession.removed_at.is_(None))
    query = (
        select(CouponSession)
        .where(
            *scope,
            or_(
                _custom_code_any_case(text),
                CouponSession.customid == text,
                CouponSession.phone == text,
                CouponSession.email == email,
                CouponSession.email == text,
            ),
        )
        .order_by(CouponSession.id)
        .limit(SEARCH_PAGE_SIZE)
        .offset((page - 1) * SEARCH_PAGE_SIZE)
    )
    return list(session.scalars(query))


# States the dashboard's sessions table filters on: every word of service.state but "removed"
# (removed sessions are not listed).
SESSION_STATE_FILTERS = (
    "open",
    "claimed",
    "validated",
    "expired",
    "locked",
    "voided",
    "scheduled",
    "inactive",
)


def _expired(campaign: Campaign, tz: ZoneInfo, now: dt.datetime) -> ColumnElement[bool]:
    """expiry.is_expired in SQL: a session is expired once any of its limits
    (expiry.session_expiry) is at or before `now`."""
    row = CouponSession
    limits: list[ColumnElement[bool]] = [and_(row.expires_at.is_not(None), row.expires_at <= now)]
    minutes = campaign.expiry_minutes
    if campaign.expiry_mode == "fixed_date" and campaign.expiry_date is not None:
        limits.append(true() if expiry.end_of_local_day(campaign.expiry_date, tz) <= now else false())
    elif campaign.expiry_mode == "after_open" and minutes:
        # The window starts at the later of the opening and the campaign's start.
        window = dt.timedelta(minutes=minutes)
        if campaign.start_at is None or campaign.start_at + window <= now:
            limits.append(and_(row.opened_at.is_not(None), row.opened_at <= now - window))
    elif campaign.expiry_mode == "after_claim" and minutes:
        window = dt.timedelta(minutes=minutes)
        limits.append(and_(row.claimed_at.is_not(None), row.claimed_at <= now - window))
    return or_(*limits)


def _session_states(campaign: Campaign, tz: ZoneInfo, now: dt.datetime) -> dict[str, ColumnElement[bool]]:
    """Each word of service.state with its own test, in the order service.state tries them; a
    session is in the first state whose test it passes."""
    row = CouponSession
    inactive = campaign.status != "active" or campaign.deleted_at is not None
    scheduled = campaign.start_at is not None and now < campaign.start_at
    return {
        "voided": row.link_status == "voided",
        "locked": row.locked.is_(True),
        "inactive": true() if inactive else false(),
        "validated": row.validation_count >= campaign.validations_per_session,
        "scheduled": true() if scheduled else false(),
        "expired": _expired(campaign, tz, now),
        "claimed": row.claimed_at.is_not(None),
        "open": true(),
    }


def session_state_is(campaign: Campaign, state: str, tz: ZoneInfo, now: dt.datetime) -> ColumnElement[bool]:
    """The sessions of `campaign` service.state calls `state` (a word of SESSION_STATE_FILTERS),
    as an SQL condition: none of the earlier states' tests, and its own."""
    tests = _session_states(campaign, tz, now)
    earlier = list(tests)[: list(tests).index(state)]
    return and_(*(not_(tests[word]) for word in earlier), tests[state])


def sessions_table(
    session: Session,
    campaign: Campaign,
    *,
    tz: ZoneInfo,
    now: dt.datetime,
    text: str = "",
    state: str = "",
    offset: int = 0,
    limit: int = 50,
) -> list[CouponSession]:
    """A page of a campaign's sessions for people, newest first: `text` matches the start of the
    code, short code, email, phone, name, customid or custom validation code, in any letter case;
    `state` keeps the sessions service.state (in the account's time zone `tz`, at `now`) calls so."""
    query = select(CouponSession).where(
        CouponSession.campaign_id == campaign.id, CouponSession.removed_at.is_(None)
    )
    if text:
        like = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # Both sides lowered by the database: PostgreSQL's LIKE minds letter case where SQLite's
        # does not, and the same lower() on both sides agrees with itself on any letter.
        pattern = func.lower(literal(like))
        columns = (
            CouponSession.code,
            CouponSession.short_code,
            CouponSession.email,
            CouponSession.phone,
            CouponSession.firstname,
            CouponSession.lastname,
            CouponSession.customid,
            CouponSession.custom_validation_code,
        )
        query = query.where(or_(*(func.lower(column).like(pattern, escape="\\") for column in columns)))
    if state:
        query = query.where(session_state_is(campaign, state, tz, now))
    # Newest first along ix_coupon_sessions_campaign_created, so a page reads only its own rows.
    order = (CouponSession.created_at.desc(), CouponSession.id.desc())
    return list(session.scalars(query.order_by(*order).offset(offset).limit(limit)))


def session_by_id_in_campaign(session: Session, campaign_id: int, session_id: int) -> CouponSession | None:
    return session.scalar(
        select(CouponSession).where(
            CouponSession.campaign_id == campaign_id,
            CouponSession.id == session_id,
            CouponSession.removed_at.is_(None),
        )
    )


def replace_custom_codes(session: Session, campaign_id: int, codes: list[str]) -> None:
    """The campaign's imported custom validation codes become `codes`, in this order."""
    session.execute(delete(CampaignCustomCode).where(CampaignCustomCode.campaign_id == campaign_id))
    if codes:
        session.execute(
            insert(CampaignCustomCode),
            [{"campaign_id": campaign_id, "position": i, "code": code} for i, code in enumerate(codes, 1)],
        )


# Codes of a new list asked about in one query when looking for those sessions already hold.
HELD_CODES_CHUNK = 500


def leading_codes_held(session: Session, campaign_id: int, codes: list[str]) -> int:
    """How many codes at the start of `codes` sessions of the campaign already hold: where a list
    given again, with codes added, continues (a fresh list starts at 0)."""
    held_so_far = 0
    for start in range(0, len(codes), HELD_CODES_CHUNK):
        chunk = codes[start : start + HELD_CODES_CHUNK]
        held = set(
            session.scalars(
                select(CouponSession.custom_validation_code).where(
                    CouponSession.campaign_id == campaign_id, CouponSession.custom_validation_code.in_(chunk)
                )
            )
        )
        for code in chunk:
            if code not in held:
                return held_so_far
            held_so_far += 1
    return held_so_far


def next_custom_code_exists() -> ColumnElement[bool]:
    """For a statement on `campaigns`: its imported list has a code after its cursor."""
    return (
        select(CampaignCustomCode.position)
        .where(
            CampaignCustomCode.campaign_id == Campaign.id,
            CampaignCustomCode.position == Campaign.custom_codes_position + 1,
        )
        .exists()
    )


def custom_code_at(session: Session, campaign_id: int, position: int) -> str | None:
    """The imported code at `position` (1 is the first), None past the end of the list."""
    return session.scalar(
        select(CampaignCustomCode.code).where(
            CampaignCustomCode.campaign_id == campaign_id, CampaignCustomCode.position == position
        )
    )


def custom_code_held(session: Session, campaign_id: int, code: str) -> bool:
    """Whether a session of the campaign already holds this custom validation code."""
    return (
        session.scalar(
            select(CouponSession.id)
            .where(CouponSession.campaign_id == campaign_id, CouponSession.custom_validation_code == code)
            .limit(1)
        )
        is not None
    )


def lock_in_order(session: Session, session_ids: list[int], campaign_ids: list[int]) -> None:
    """Lock these sessions, then their campaigns, each in ID order (PostgreSQL; SQLite's write
    transactions run one at a time). A call that changes several sessions takes its locks before
    it changes any: otherwise, holding the campaign row after its first session, it would wait
    for a session a single call holds while that call waits for the campaign row (a deadlock).
    FOR NO KEY UPDATE, the strength an UPDATE of these rows takes: rows that only refer to them
    (a new validation, a new session) are not held up."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for model, wanted in ((CouponSession, session_ids), (Campaign, campaign_ids)):
        if wanted:
            session.execute(
                select(model.id)
                .where(model.id.in_(sorted(set(wanted))))
                .order_by(model.id)
                .with_for_update(key_share=True)
            )
