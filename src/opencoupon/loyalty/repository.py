"""Every query on loyalty tables. Callers pass the tenancy condition (`ctx.scope(...)`) where the
caller is an API client; consumer pages look cards up by their public code."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from opencoupon.db import raw
from opencoupon.db.session import upsert_insert
from opencoupon.kit import ids
from opencoupon.kit.params import INT32_MAX
from opencoupon.models import (
    Campaign,
    CouponSession,
    LoyaltyCard,
    LoyaltyHolder,
    LoyaltyLedgerEntry,
    LoyaltyReward,
    LoyaltyRewardGrant,
)
from opencoupon.models.loyalty import email_key

PAGE_SIZE = 100


def card(session: Session, card_id: int) -> LoyaltyCard | None:
    """By primary key (the caller checks the owner); a deleted card is missing."""
    found = raw.load_one(session, _CARD, {"card_id": card_id}, LoyaltyCard)
    return None if found is None or found[0].deleted_at is not None else found[0]


# The stamp path's statements, and the card lookup every card call makes, run on the raw driver
# (db/raw.py).
_CARD = raw.RawStatement(f"SELECT {raw.columns(LoyaltyCard, 'c')} FROM loyalty_cards c WHERE c.id = :card_id")
_CARD_AND_HOLDER = raw.RawStatement(
    f"SELECT {raw.columns(LoyaltyCard, 'c')}, {raw.columns(LoyaltyHolder, 'h')} "
    "FROM loyalty_cards c JOIN loyalty_holders h ON h.card_id = c.id "
    "WHERE c.id = :card_id AND h.id = :holder_id AND c.deleted_at IS NULL"
)


def card_and_holder(
    session: Session, card_id: int, holder_id: int
) -> tuple[LoyaltyCard, LoyaltyHolder] | None:
    """Both in one query (the stamp path); None when either is missing or they do not belong together."""
    found = raw.load_one(
        session, _CARD_AND_HOLDER, {"card_id": card_id, "holder_id": holder_id}, LoyaltyCard, LoyaltyHolder
    )
    return None if found is None else (found[0], found[1])


def card_by_code(session: Session, code: str) -> LoyaltyCard | None:
    return session.scalar(
        select(LoyaltyCard).where(LoyaltyCard.code == code, LoyaltyCard.deleted_at.is_(None))
    )


def code_taken(session: Session, code: str) -> bool:
    return session.scalar(select(LoyaltyCard.id).where(LoyaltyCard.code == code)) is not None


def cards(
    session: Session, scope: ColumnElement[bool], *, only_active: bool, descending: bool
) -> Sequence[LoyaltyCard]:
    query = select(LoyaltyCard).where(LoyaltyCard.deleted_at.is_(None), scope)
    if only_active:
        query = query.where(LoyaltyCard.active.is_(True))
    order = (
        (LoyaltyCard.created_at.desc(), LoyaltyCard.id.desc())
        if descending
        else (
            LoyaltyCard.created_at,
            LoyaltyCard.id,
        )
    )
    return session.scalars(query.order_by(*order)).all()


# Built once: building a statement costs more than running it (loyalty/info runs both below).
_ACTIVE_REWARDS = (
    select(LoyaltyReward)
    .where(LoyaltyReward.card_id == bindparam("card_id"), LoyaltyReward.active.is_(True))
    .order_by(LoyaltyReward.threshold, LoyaltyReward.id)
)
_HOLDER_COUNT = select(func.count()).where(LoyaltyHolder.card_id == bindparam("card_id"))


def rewards(session: Session, card_id: int) -> Sequence[LoyaltyReward]:
    return session.scalars(_ACTIVE_REWARDS, {"card_id": card_id}).all()


def holder_count(session: Session, card_id: int) -> int:
    return int(session.scalar(_HOLDER_COUNT, {"card_id": card_id}) or 0)


def retire_rewards(session: Session, card_id: int, reward_ids: list[int] | None = None) -> None:
    """Retire the card's rewards (only `reward_ids` when given); grants keep pointing at them."""
    statement = update(LoyaltyReward).where(LoyaltyReward.card_id == card_id)
    if reward_ids is not None:
        if not reward_ids:
            return
        statement = statement.where(LoyaltyReward.id.in_(reward_ids))
    session.execute(statement.execution_options(synchronize_session=False).values(active=False))


def campaign(session: Session, account_id: int, campaign_id: int) -> Campaign | None:
    return session.scalar(
        select(Campaign).where(
            Campaign.id == campaign_id, Campaign.account_id == account_id, Campaign.deleted_at.is_(None)
        )
    )


def campaigns_by_id(session: Session, ids: set[int]) -> dict[int, Campaign]:
    if not ids:
        return {}
    return {c.id: c for c in session.scalars(select(Campaign).where(Campaign.id.in_(ids)))}


def holder(session: Session, card_id: int, holder_id: int) -> LoyaltyHolder | None:
    found = session.get(LoyaltyHolder, holder_id)
    return found if found is not None and found.card_id == card_id else None


def holder_by_short_code(session: Session, card_id: int, short_code: str) -> LoyaltyHolder | None:
    return session.scalar(
        select(LoyaltyHolder).where(
            LoyaltyHolder.card_id == card_id, LoyaltyHolder.short_code == short_code.upper()
        )
    )


def holder_by_token(session: Session, card_id: int, token: str) -> LoyaltyHolder | None:
    return session.scalar(
        select(LoyaltyHolder).where(LoyaltyHolder.card_id == card_id, LoyaltyHolder.token == token)
    )


def holder_in_scope(session: Session, scope: ColumnElement[bool], holder_id: int) -> LoyaltyHolder | None:
    return session.scalar(select(LoyaltyHolder).where(LoyaltyHolder.id == holder_id, scope))


def lock_card(session: Session, card_id: int) -> None:
    """Hold the card's row until the transaction ends (PostgreSQL; SQLite's write transactions
    are serial already), so two joins with one email cannot both pass the email check. FOR NO
    KEY UPDATE: stamps and ledger rows of the card's holders, which only refer to it, go on."""
    session.execute(select(LoyaltyCard.id).where(LoyaltyCard.id == card_id).with_for_update(key_share=True))


_GOAL = raw.RawStatement("SELECT reward_goal FROM loyalty_cards WHERE id = :card_id")
_GOAL_HELD = raw.RawStatement("SELECT reward_goal FROM loyalty_cards WHERE id = :card_id FOR SHARE")


def reward_goal_held(session: Session, card_id: int) -> int | None:
    """The card's goal as committed now, its row held FOR SHARE until the transaction ends
    (PostgreSQL; SQLite's write transactions run one at a time): a card edit, which updates the
    row, waits for this transaction, or this read waits for the edit's commit and then sees its
    goal and its rewards together. SHARE, not KEY SHARE: only SHARE waits for an UPDATE of the
    row's other columns; additions hold it together, and joins (`lock_card`) take turns with them."""
    postgres = session.get_bind().dialect.name == "postgresql"
    goal = raw.scalar(session, _GOAL_HELD if postgres else _GOAL, {"card_id": card_id})
    return None if goal is None else int(goal)


def holder_by_email(session: Session, card_id: int, email: str) -> LoyaltyHolder | None:
    """As stored now, even when the session holds the holder already: read after `lock_card`,
    it may be the one a concurrent link just put on the card, loaded unlinked with the request.

    A holder written by a process of the version before migration 0018, still running after it,
    has an empty key: it is matched by its email in SQL's letter case (ASCII only on SQLite), as
    that version matched it."""
    return session.scalar(
        select(LoyaltyHolder)
        .where(LoyaltyHolder.card_id == card_id, _has_email(email))
        .limit(1)
        .execution_options(populate_existing=True)
    )


def _has_email(email: str) -> ColumnElement[bool]:
    """Holders with this email in any letter case, by its key (see holder_by_email)."""
    unkeyed = and_(LoyaltyHolder.email_key == "", func.lower(LoyaltyHolder.email) == func.lower(email))
    return or_(LoyaltyHolder.email_key == email_key(email), unkeyed)


def short_code_taken(session: Session, card_id: int | None, short_code: str) -> bool:
    return (
        session.scalar(
            select(LoyaltyHolder.id).where(
                LoyaltyHolder.card_id == card_id, LoyaltyHolder.short_code == short_code
            )
        )
        is not None
    )


def holders_page(
    session: Session, card_id: int, *, page: int, include_voided: bool = True, filters: dict[str, str]
) -> tuple[int, Sequence[LoyaltyHolder]]:
    conditions: list[ColumnElement[bool]] = [LoyaltyHolder.card_id == card_id]
    if not include_voided:
        conditions.append(LoyaltyHolder.voided.is_(False))
    for name, value in filters.items():
        # An email as the card matches it (its uniqueness check): in any letter case.
        conditions.append(_has_email(value) if name == "email" else getattr(LoyaltyHolder, name) == value)
    where = and_(*conditions)
    total = session.scalar(select(func.count()).select_from(LoyaltyHolder).where(where)) or 0
    rows = session.scalars(
        select(LoyaltyHolder)
        .where(where)
        .order_by(LoyaltyHolder.id)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return total, rows


def search_holders(session: Session, card_id: int, term: str) -> Sequence[LoyaltyHolder]:
    # "_" is allowed in a search (the vendor's characters) and is LIKE's any-character wildcard.
    like = "%" + term.lower().replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"
    matches: list[ColumnElement[bool]] = [
        func.lower(LoyaltyHolder.first_name).like(like, escape="\\"),
        func.lower(LoyaltyHolder.last_name).like(like, escape="\\"),
        func.lower(LoyaltyHolder.email).like(like, escape="\\"),
        LoyaltyHolder.phone.like(like, escape="\\"),
        LoyaltyHolder.short_code == term.upper(),
    ]
    # Only a number an ID column holds: PostgreSQL refuses a larger one in the query (int4).
    if number := ids.stored_id(term):
        matches.append(LoyaltyHolder.id == number)
    return session.scalars(
        select(LoyaltyHolder)
        .where(LoyaltyHolder.card_id == card_id, or_(*matches))
        .order_by(LoyaltyHolder.id)
        .limit(PAGE_SIZE)
    ).all()


# The hot path (every stamp) runs raw statements on the driver (db/raw.py): no ORM flush,
# no statement building.


def _add_statement(unit: str, collecting: bool) -> raw.RawStatement:
    collected = ", last_collected_at = :now" if collecting else ""
    return raw.RawStatement(
        f"UPDATE loyalty_holders SET {unit} = {unit} + :delta, updated_at = :now{collected} "
        # The bounds are moved to the parameters' side: `balance + delta` near the top would
        # overflow PostgreSQL's integer arithmetic before being compared.
        f"WHERE id = :holder_id AND voided = :no AND {unit} >= :at_least AND {unit} <= :at_most "
        f"RETURNING {unit}, cycle"
    )


_ADD = {(unit, up): _add_statement(unit, up) for unit in ("points", "stamps") for up in (True, False)}
# What a balance column (INTEGER) holds: PostgreSQL refuses more with an error.
MAX_BALANCE = INT32_MAX
_INSERT_LEDGER = raw.RawStatement(
    "INSERT INTO loyalty_ledger (account_id, card_id, holder_id, unit, delta, balance_after, kind, "
    "source, created_at) VALUES (:account_id, :card_id, :holder_id, :unit, :delta, :balance_after, "
    ":kind, :source, :created_at)"
)


def add_balance(
    session: Session, holder_id: int, unit: str, delta: int, now: dt.datetime
) -> tuple[int, int] | None:
    """Add `delta` (signed) in one atomic statement; None when the holder is voided or the
    balance would go below zero or above MAX_BALANCE. Returns (balance after, card cycle)."""
    params = {
        "holder_id": holder_id,
        "delta": delta,
        "now": now,
        "no": False,
        "at_least": -delta,  # the balance after is 0 or more
        "at_most": MAX_BALANCE - delta,  # and MAX_BALANCE or less
    }
    row = raw.execute(session, _ADD[(unit, delta > 0)], params).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def complete_cycle(session: Session, holder_id: int, unit: str, goal: int, cycle: int) -> int | None:
    """Trade one full card for its reward: take `goal` off and open the next cycle, only if the
    holder is still in `cycle` with a full card. Returns the balance after."""
    column = getattr(LoyaltyHolder, unit)
    row = session.execute(
        update(LoyaltyHolder)
        .execution_options(synchronize_session=False)
        .where(LoyaltyHolder.id == holder_id, LoyaltyHolder.cycle == cycle, column >= goal)
        .values({unit: column - goal, "cycle": LoyaltyHolder.cycle + 1})
        .returning(column)
    ).first()
    return None if row is None else int(row[0])


def expire_balance(
    session: Session, holder_id: int, unit: str, seen_balance: int, cutoff: dt.datetime, now: dt.datetime
) -> bool:
    """Set an expired balance to zero, only if nobody collected or spent since it was read."""
    column = getattr(LoyaltyHolder, unit)
    result = session.execute(
        update(LoyaltyHolder)
        .execution_options(synchronize_session=False)
        .where(
            LoyaltyHolder.id == holder_id,
            column == seen_balance,
            column > 0,
            LoyaltyHolder.last_collected_at < cutoff,
        )
        .values({unit: 0, "updated_at": now})
    )
    return (result.rowcount or 0) == 1  # type: ignore[attr-defined]


def set_voided(session: Session, holder_id: int, voided: bool, now: dt.datetime) -> tuple[int, int] | None:
    """Void or unvoid the holder; its (points, stamps) as this UPDATE left them (an addition may
    have committed since the holder was read), or None when it already was so."""
    row = session.execute(
        update(LoyaltyHolder)
        .execution_options(synchronize_session=False)
        .where(LoyaltyHolder.id == holder_id, LoyaltyHolder.voided.is_(not voided))
        .values(voided=voided, updated_at=now)
        .returning(LoyaltyHolder.points, LoyaltyHolder.stamps)
    ).first()
    return None if row is None else (int(row[0]), int(row[1]))


def add_ledger(
    session: Session,
    holder: LoyaltyHolder,
    *,
    unit: str,
    delta: int,
    balance_after: int,
    kind: str,
    source: str,
    now: dt.datetime,
) -> None:
    raw.execute(
        session,
        _INSERT_LEDGER,
        {
            "account_id": holder.account_id,
            "card_id": holder.card_id,
            "holder_id": holder.id,
            "unit": unit,
            "delta": delta,
            "balance_after": balance_after,
            "kind": kind,
            "source": source,
            "created_at": now,
        },
    )


def ledger(session: Session, holder_id: int, limit: int = 50) -> Sequence[LoyaltyLedgerEntry]:
    return session.scalars(
        select(LoyaltyLedgerEntry)
        .where(LoyaltyLedgerEntry.holder_id == holder_id)
        .order_by(LoyaltyLedgerEntry.id.desc())
        .limit(limit)
    ).all()


def claim_grant(
    session: Session, holder: LoyaltyHolder, reward: LoyaltyReward, cycle: int, now: dt.datetime
) -> int | None:
    """Record that `holder` reached `reward` in `cycle`; the grant's id for the one caller that
    records it, None when it was already granted."""
    return session.execute(
        upsert_insert(session, LoyaltyRewardGrant)
        .values(
            account_id=holder.account_id,
            card_id=reward.card_id,
            holder_id=holder.id,
            reward_id=reward.id,
            cycle=cycle,
            campaign_id=reward.campaign_id,
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(LoyaltyRewardGrant.id)
    ).scalar()


def attach_session(session: Session, grant_id: int, coupon_session_id: int) -> None:
    session.execute(
        update(LoyaltyRewardGrant)
        .execution_options(synchronize_session=False)
        .where(LoyaltyRewardGrant.id == grant_id)
        .values(coupon_session_id=coupon_session_id)
    )


def grants_with_sessions(
    session: Session, holder_id: int
) -> Sequence[tuple[LoyaltyRewardGrant, LoyaltyReward, CouponSession | None, Campaign | None]]:
    rows = session.execute(
        select(LoyaltyRewardGrant, LoyaltyReward, CouponSession, Campaign)
        .join(LoyaltyReward, LoyaltyReward.id == LoyaltyRewardGrant.reward_id)
        .outerjoin(CouponSession, CouponSession.id == LoyaltyRewardGrant.coupon_session_id)
        .outerjoin(Campaign, Campaign.id == LoyaltyRewardGrant.campaign_id)
        .where(LoyaltyRewardGrant.holder_id == holder_id)
        .order_by(LoyaltyRewardGrant.id.desc())
    ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def holder_counts(session: Session, card_ids: list[int]) -> dict[int, int]:
    if not card_ids:
        return {}
    rows = session.execute(
        select(LoyaltyHolder.card_id, func.count())
        .where(LoyaltyHolder.card_id.in_(card_ids))
        .group_by(LoyaltyHolder.card_id)
    ).all()
    return {int(r[0] or 0): int(r[1]) for r in rows}


def link_unlinked(session: Session, holder_id: int, card_id: int, short_code: str, now: dt.datetime) -> bool:
    """Put an unlinked holder on the card; False when it is on a card already (linked meanwhile)."""
    done = session.execute(
        update(LoyaltyHolder)
        .where(LoyaltyHolder.id == holder_id, LoyaltyHolder.card_id.is_(None))
        .values(card_id=card_id, short_code=short_code, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]
