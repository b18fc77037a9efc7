"""Loyalty rules: cards, holders, balance changes through the ledger, rewards exactly once.

Balances change only through `change_balance`: one atomic `UPDATE … SET x = x + :d WHERE x + :d >= 0`
(the database's CHECK constraint backs it), one ledger row with the balance after it, and the
events, all in the caller's transaction. Rewards are granted through a unique (holder, reward,
cycle) row, so a reward is issued once per card cycle even when additions race.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from opencoupon.accounts import service as accounts
from opencoupon.coupons import expiry
from opencoupon.coupons.service import account_zone, check_pin
from opencoupon.coupons.sessions import new_session, session_path
from opencoupon.errors import ApiError, bad_value, not_allowed
from opencoupon.events import service as events
from opencoupon.kit import ids
from opencoupon.kit.body import check_characters, load_json
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import constant_time_equals
from opencoupon.kit.dates import fmt, fmt_date
from opencoupon.kit.dates import parse_birthday as parse_birthday_day
from opencoupon.loyalty import repository as repo
from opencoupon.loyalty.schemas import CardCreate, CardUpdate, HolderIn
from opencoupon.models import (
    Campaign,
    CouponSession,
    LoyaltyCard,
    LoyaltyHolder,
    LoyaltyReward,
    LoyaltyRewardGrant,
)
from opencoupon.runtime import Runtime

CARD_NOT_FOUND = ApiError(508, "Loyalty card ID not found.")
# The vendor's own codes for these two calls (reference §7, gaps §2).
INFO_CARD_NOT_FOUND = ApiError(507, "Loyalty card not found.")
LIST_CARD_NOT_FOUND = ApiError(505, "Loyalty card ID not found.")
USER_NOT_FOUND = ApiError(512, "Loyalty user not found.")
CAMPAIGN_NOT_FOUND = ApiError(502, "Campaign ID not found.")

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SEARCH_CHARS = re.compile(r"^[A-Za-z0-9\-_@]+$")
SHORT_CODE = re.compile(r"^[A-Za-z0-9]{6}$")
JOIN_FIELDS = ("first_name", "last_name", "email", "phone")
MAX_AMOUNT = 1_000_000
MAX_CODE_ATTEMPTS = 8
# A single addition may complete at most this many cards (keeps one call bounded); one that would
# complete more is refused (309), so a card is never left holding a full card it did not trade.
MAX_CYCLES_PER_CHANGE = 1000
# Rewards a card may have, and rewards one change may issue over the cards it completes (cards
# completed × the card's rewards): each is a coupon session and an event, written while the call
# holds the write lock, so a card of many rewards cannot make one addition run for seconds.
MAX_REWARDS_PER_CARD = 50
MAX_REWARDS_PER_CHANGE = 1000
# Far beyond any card's users at 100 a page, and an OFFSET every driver takes.
MAX_PAGE = 1_000_000


def unit_of(card: LoyaltyCard) -> str:
    """What the card counts: stamps on a stamp card, points on a points or membership card."""
    return "stamps" if card.type == "stamp" else "points"


def domain(runtime: Runtime) -> str:
    return urlsplit(runtime.url("/")).netloc


def card_url(runtime: Runtime, card: LoyaltyCard) -> str:
    return runtime.url(f"/l/{card.code}")


def holder_path(card: LoyaltyCard, holder: LoyaltyHolder) -> str:
    return f"/l/{card.code}/{holder.token}"


# --- lookups -------------------------------------------------------------------------------


def parse_card_id(raw: str, not_found: ApiError) -> int:
    return ids.parse_public_id(raw, "", "loyaltycard", not_found)


def get_card(
    session: Session, may_reach: Callable[[int], bool], raw: str, not_found: ApiError = CARD_NOT_FOUND
) -> LoyaltyCard:
    """A card the caller may reach (`ApiContext.may_reach`); another account's card is missing."""
    found = repo.card(session, parse_card_id(raw, not_found))
    if found is None or not may_reach(found.account_id):
        raise not_found
    return found


def get_card_and_holder(
    session: Session, may_reach: Callable[[int], bool], raw_card: str, raw_user: str
) -> tuple[LoyaltyCard, LoyaltyHolder]:
    """The card and its holder, in one query when both are plain numeric IDs; otherwise (or when
    that finds nothing) one by one, so every error keeps its own code."""
    card_number, user_number = ids.stored_id(raw_card.strip()), ids.stored_id(raw_user.strip())
    if card_number and user_number:
        found = repo.card_and_holder(session, card_number, user_number)
        if found is not None and may_reach(found[0].account_id):
            return found
    card = get_card(session, may_reach, raw_card)
    return card, get_holder(session, card, raw_user)


def get_holder(session: Session, card: LoyaltyCard, raw: str, param: str = "user") -> LoyaltyHolder:
    """A holder of `card` by its numeric ID or its 6-character code."""
    text = raw.strip()
    found: LoyaltyHolder | None
    if ids.is_number(text):
        number = ids.stored_id(text)
        found = repo.holder(session, card.id, number) if number else None
        if found is None and SHORT_CODE.match(text):
            found = repo.holder_by_short_code(session, card.id, text)
    elif SHORT_CODE.match(text):
        found = repo.holder_by_short_code(session, card.id, text)
    else:
        raise ApiError(301, f"Invalid character in parameter: {param}.")
    if found is None:
        raise USER_NOT_FOUND
    return found


# --- public shapes -------------------------------------------------------------------------


def reward_public(reward: LoyaltyReward, campaigns: dict[int, Campaign]) -> dict[str, Any]:
    campaign = campaigns.get(reward.campaign_id) if reward.campaign_id else None
    return {
        "threshold": reward.threshold,
        "campaign": f"cam_{reward.campaign_id}" if reward.campaign_id else "",
        "name": reward.name or (campaign.name if campaign else ""),
    }


def card_v4(session: Session, runtime: Runtime, card: LoyaltyCard) -> dict[str, Any]:
    rewards = repo.rewards(session, card.id)
    campaigns = repo.campaigns_by_id(session, {r.campaign_id for r in rewards if r.campaign_id})
    return {
        "id": card.id,
        "code": card.code,
        "name": card.name,
        "domain": domain(runtime),
        "type": card.type,
        "description": card.description,
        "active": card.active,
        "url": card_url(runtime, card),
        "staff_url": runtime.url(f"/l/{card.code}/staff"),
        "reward_goal": card.reward_goal,
        "rewards": [reward_public(r, campaigns) for r in rewards],
        "has_pin": bool(card.pin_digest),
        "expire_days": card.expire_days,
        "join_fields": [f for f in card.join_fields.split(",") if f],
        "users": repo.holder_count(session, card.id),
        "created_at": fmt(card.created_at),
        "updated_at": fmt(card.updated_at),
    }


def card_v4_short(runtime: Runtime, card: LoyaltyCard) -> dict[str, Any]:
    """The vendor's v4 list item."""
    return {"id": card.id, "code": card.code, "name": card.name, "domain": domain(runtime), "type": card.type}


def card_v3(
    session: Session, runtime: Runtime, card: LoyaltyCard, users: int, *, detail: bool
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ID": str(card.id),
        "code": card.code,
        "name": card.name,
        "type": card.type,
        "domain": domain(runtime),
        "url": card_url(runtime, card),
        "status": "active" if card.active else "inactive",
        "active": "1" if card.active else "0",
        "reward_goal": str(card.reward_goal or ""),
        "amount_of_users": str(users),
        "created_date_utc": fmt(card.created_at),
    }
    if detail:
        rewards = repo.rewards(session, card.id)
        campaigns = repo.campaigns_by_id(session, {r.campaign_id for r in rewards if r.campaign_id})
        data["description"] = card.description
        data["expire_days"] = str(card.expire_days or "")
        data["join_fields"] = card.join_fields
        data["rewards"] = [{k: str(v) for k, v in reward_public(r, campaigns).items()} for r in rewards]
    return data


def holder_v3(runtime: Runtime, card: LoyaltyCard | None, holder: LoyaltyHolder) -> dict[str, Any]:
    return {
        "ID": str(holder.id),
        "code": holder.short_code,
        "loyaltycard": str(holder.card_id or ""),
        "first_name": holder.first_name,
        "last_name": holder.last_name,
        "email": holder.email,
        "phone": holder.phone,
        "gender": holder.gender,
        "birthday": fmt_date(holder.birthday),
        "city": holder.city,
        "points": str(holder.points),
        "stamps": str(holder.stamps),
        "completed_cards": str(holder.cycle),
        "voided": "1" if holder.voided else "0",
        "url": runtime.url(holder_path(card, holder)) if card else "",
        "created_date_utc": fmt(holder.created_at),
    }


def holder_v4(runtime: Runtime, card: LoyaltyCard, holder: LoyaltyHolder) -> dict[str, Any]:
    extra = holder.custom_fields or {}
    data: dict[str, Any] = {
        "id": holder.id,
        "code": holder.short_code,
        "loyalty_card_id": holder.card_id,
        "first_name": holder.first_name,
        "last_name": holder.last_name,
        "email": holder.email,
        "phone": holder.phone,
        "points": holder.points,
        "stamps": holder.stamps,
        "completed_cards": holder.cycle,
        "voided": holder.voided,
        "url": runtime.url(holder_path(card, holder)),
        "created_at": fmt(holder.created_at),
    }
    for name in ("address", "zip", *(f"custom_{i}" for i in range(1, 9))):
        data[name] = str(extra.get(name, ""))
    data["city"] = holder.city
    return data


# --- cards ---------------------------------------------------------------------------------


def _join_fields(raw: list[str] | None) -> str | None:
    if raw is None:
        return None
    for name in raw:
        if name not in JOIN_FIELDS:
            raise not_allowed("join_fields", list(JOIN_FIELDS))
    return ",".join(f for f in JOIN_FIELDS if f in raw)


def _default_join_fields(given: str | None) -> str:
    return "first_name,email" if given is None else given


def _new_card_code(session: Session) -> str:
    for _ in range(MAX_CODE_ATTEMPTS):
        code = ids.random_code(ids.SHORT_CODE_LENGTH)
        if not repo.code_taken(session, code):
            return code
    raise ApiError(309, "Could not allocate a card code; try again.")


def _resolve_rewards(
    session: Session, account_id: int, card_type: str, goal: int | None, req: CardCreate
) -> tuple[int | None, list[tuple[int, Campaign, str]]]:
    """Validate the reward list against the card type and goal; (goal, [(threshold, campaign, name)])."""
    wanted = req.rewards or []
    if card_type == "membership":
        if wanted or goal:
            raise bad_value("rewards", "A membership card has no rewards.")
        return None, []
    if len(wanted) > MAX_REWARDS_PER_CARD:
        raise bad_value("rewards", f"A card has at most {MAX_REWARDS_PER_CARD} rewards.")
    resolved: list[tuple[int, Campaign, str]] = []
    for item in wanted:
        campaign_id = ids.parse_public_id(item.campaign, "cam_", "campaign", CAMPAIGN_NOT_FOUND)
        campaign = repo.campaign(session, account_id, campaign_id)
        if campaign is None:
            raise CAMPAIGN_NOT_FOUND
        resolved.append((item.threshold, campaign, item.name or ""))
    top = max((t for t, _, _ in resolved), default=None)
    goal = goal or top
    if top is not None and goal is not None and top > goal:
        raise bad_value("rewards", "A reward threshold cannot be above the reward goal.")
    return goal, resolved


def _store_rewards(
    session: Session, card: LoyaltyCard, rewards: list[tuple[int, Campaign, str]], now: dt.datetime
) -> None:
    for threshold, campaign, name in rewards:
        session.add(
            LoyaltyReward(
                card_id=card.id,
                campaign_id=campaign.id,
                threshold=threshold,
                name=name,
                active=True,
                created_at=now,
            )
        )


def _replace_rewards(
    session: Session, card: LoyaltyCard, rewards: list[tuple[int, Campaign, str]], now: dt.datetime
) -> None:
    """Make `rewards` the card's reward list. A campaign that stays keeps its reward rows, paired
    in threshold order, with the threshold and name updated in place: grants are unique per reward
    row and cycle, so a new row (a threshold moved, a name changed) would issue the reward again
    to every holder who already won it in the current cycle."""
    kept: dict[int | None, list[LoyaltyReward]] = {}
    for current in repo.rewards(session, card.id):  # in threshold order
        kept.setdefault(current.campaign_id, []).append(current)
    added: list[tuple[int, Campaign, str]] = []
    for threshold, campaign, name in sorted(rewards, key=lambda wanted: wanted[0]):
        same_campaign = kept.get(campaign.id)
        if same_campaign:
            reward = same_campaign.pop(0)
            reward.threshold = threshold
            reward.name = name
        else:
            added.append((threshold, campaign, name))
    retired = [reward.id for left in kept.values() for reward in left]
    repo.retire_rewards(session, card.id, retired)
    _store_rewards(session, card, added, now)


def _pin_digest(runtime: Runtime, pin: str) -> str:
    if not pin:
        return ""
    # The campaigns' rule; cards saved before it keep their PIN: only setting one checks it.
    check_pin(pin)
    return runtime.keyring.digest("loyalty-pin:" + pin)


def pin_matches(runtime: Runtime, card: LoyaltyCard, pin: str) -> bool:
    if not card.pin_digest or not pin:
        return False
    return constant_time_equals(runtime.keyring.digest("loyalty-pin:" + pin), card.pin_digest)


def create_card(
    session: Session, runtime: Runtime, account_id: int, req: CardCreate, now: dt.datetime
) -> LoyaltyCard:
    goal, rewards = _resolve_rewards(session, account_id, req.type, req.reward_goal, req)
    card = LoyaltyCard(
        account_id=account_id,
        code=_new_card_code(session),
        name=req.name,
        type=req.type,
        description=req.description or "",
        active=True if req.active is None else req.active,
        reward_goal=goal,
        pin_digest=_pin_digest(runtime, req.pin or ""),
        expire_days=req.expire_days or None,
        # Not given: first name and email; given empty, as on update: the form requires nothing.
        join_fields=_default_join_fields(_join_fields(req.join_fields)),
        created_at=now,
        updated_at=now,
    )
    session.add(card)
    session.flush()
    _store_rewards(session, card, rewards, now)
    session.flush()
    return card


def update_card(
    session: Session, runtime: Runtime, card: LoyaltyCard, req: CardUpdate, now: dt.datetime
) -> None:
    fields = req.model_fields_set
    if req.type is not None and req.type != card.type:
        if repo.holder_count(session, card.id):
            raise ApiError(308, "The type of a card with users cannot change.")
        # Turning membership dropped the rewards without a word, and turning back does not bring
        # them back: the caller removes them (`rewards: []`, here or before), as on create.
        if req.type == "membership" and req.rewards is None and repo.rewards(session, card.id):
            raise bad_value(
                "type",
                "A membership card has no rewards: remove them first (send rewards: [] with the type).",
            )
        card.type = req.type
    if req.name is not None:
        card.name = req.name
    if req.description is not None:
        card.description = req.description
    if req.active is not None:
        card.active = req.active
    if req.pin is not None:
        card.pin_digest = _pin_digest(runtime, req.pin)
    if "expire_days" in fields:
        card.expire_days = req.expire_days or None
    joins = _join_fields(req.join_fields)
    if joins is not None:
        card.join_fields = joins
    if card.type == "membership":
        if req.rewards or req.reward_goal:
            raise bad_value("rewards", "A membership card has no rewards.")
        repo.retire_rewards(session, card.id)
        card.reward_goal = None
    elif req.rewards is not None or "reward_goal" in fields:
        # Additions read the goal and rewards holding the card's row (`change_balance`): held
        # from here, an addition sees this edit's goal and rewards together or neither.
        repo.lock_card(session, card.id)
        if req.rewards is not None:
            _goal, rewards = _resolve_rewards(session, card.account_id, card.type, None, req)
        else:
            current = repo.rewards(session, card.id)
            campaigns = repo.campaigns_by_id(session, {r.campaign_id for r in current if r.campaign_id})
            rewards = [
                (r.threshold, campaigns[r.campaign_id], r.name) for r in current if r.campaign_id in campaigns
            ]
        top = max((t for t, _, _ in rewards), default=None)
        if "reward_goal" in fields:
            goal = req.reward_goal or top
            if top is not None and goal is not None and top > goal:
                raise bad_value("reward_goal", "A reward threshold cannot be above the reward goal.")
        else:
            # New rewards above the current goal raise it; otherwise the goal stays.
            goal = max(card.reward_goal or 0, top or 0) or None
        card.reward_goal = goal
        _replace_rewards(session, card, rewards, now)
    card.updated_at = now
    session.flush()


def delete_card(card: LoyaltyCard, now: dt.datetime) -> None:
    card.deleted_at = now
    card.active = False
    card.updated_at = now


def copy_card(session: Session, card: LoyaltyCard, name: str | None, now: dt.datetime) -> LoyaltyCard:
    copy = LoyaltyCard(
        account_id=card.account_id,
        code=_new_card_code(session),
        name=name or (card.name + " (copy)")[:200],
        type=card.type,
        description=card.description,
        active=card.active,
        reward_goal=card.reward_goal,
        pin_digest=card.pin_digest,
        expire_days=card.expire_days,
        join_fields=card.join_fields,
        created_at=now,
        updated_at=now,
    )
    session.add(copy)
    session.flush()
    for reward in repo.rewards(session, card.id):
        session.add(
            LoyaltyReward(
                card_id=copy.id,
                campaign_id=reward.campaign_id,
                threshold=reward.threshold,
                name=reward.name,
                active=True,
                created_at=now,
            )
        )
    session.flush()
    return copy


# --- holders -------------------------------------------------------------------------------


@dataclass
class HolderFields:
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phone: str = ""
    gender: str = ""
    birthday: dt.date | None = None
    city: str = ""
    # Hashed by the caller, before its write transaction (kit.params.WithPassword).
    password_hash: str | None = None
    custom_fields: dict[str, Any] = field(default_factory=dict)


def check_email(raw: str) -> str:
    email = raw.strip()
    if email and (not EMAIL.match(email) or len(email) > 254):
        raise ApiError(305, "Email address is not valid.")
    return email


def parse_birthday(raw: str | None) -> dt.date | None:
    if not raw:
        return None
    return parse_birthday_day("birthday", raw, utcnow().date())


def fields_from(item: HolderIn) -> HolderFields:
    extra = {
        name: getattr(item, name)
        for name in ("address", "zip", *(f"custom_{i}" for i in range(1, 9)))
        if getattr(item, name)
    }
    return HolderFields(
        first_name=(item.first_name or "")[:100],
        last_name=(item.last_name or "")[:100],
        email=check_email(item.email or ""),
        phone=(item.phone or "")[:40],
        city=(item.city or "")[:100],
        custom_fields=extra,
    )


def create_holder(
    session: Session,
    runtime: Runtime,
    account_id: int,
    card: LoyaltyCard | None,
    data: HolderFields,
    now: dt.datetime,
) -> LoyaltyHolder:
    """A new holder (on `card`, or unlinked), with its loyalty_user_created event."""
    email = check_email(data.email)
    if card is not None and email:
        repo.lock_card(session, card.id)
        if repo.holder_by_email(session, card.id, email) is not None:
            raise ApiError(304, "Email already exists.")
    password_hash = data.password_hash
    for attempt in range(MAX_CODE_ATTEMPTS):
        holder = LoyaltyHolder(
            account_id=account_id,
            card_id=card.id if card else None,
            short_code=ids.random_code(ids.SHORT_CODE_LENGTH, ids.UNAMBIGUOUS),
            token=ids.random_code(24),
            first_name=data.first_name,
            last_name=data.last_name,
            email=email,
            phone=data.phone,
            gender=data.gender,
            birthday=data.birthday,
            city=data.city,
            password_hash=password_hash,
            custom_fields=data.custom_fields,
            points=0,
            stamps=0,
            cycle=0,
            voided=False,
            created_at=now,
            updated_at=now,
        )
        try:
            # A savepoint, so a clash of the random short code only redraws the code.
            with session.begin_nested():
                session.add(holder)
                session.flush()
        except IntegrityError:
            if attempt == MAX_CODE_ATTEMPTS - 1:
                raise
            continue
        break
    events.emit(
        session,
        account_id,
        "loyalty_user_created",
        {"loyaltycard": str(card.id) if card else "", "user": holder_v3(runtime, card, holder)},
    )
    return holder


def link_holder(
    session: Session, runtime: Runtime, card: LoyaltyCard, holder: LoyaltyHolder, now: dt.datetime
) -> LoyaltyHolder:
    """Put a person on `card`: an unlinked holder joins it; a holder of another card gets a new
    holder on this card with the same details (one balance per card). Only a holder the card's
    account may hold (accounts.may_hold): a subaccount's card never takes its master's or a
    sibling's people, even from the master, who reaches them all (512 as a missing one)."""
    if holder.card_id == card.id:
        return holder
    if not accounts.may_hold(session, card.account_id, holder.account_id):
        raise USER_NOT_FOUND
    if holder.email:
        repo.lock_card(session, card.id)
        existing = repo.holder_by_email(session, card.id, holder.email)
        if existing is not None:
            return existing
    if holder.card_id is None and holder.account_id == card.account_id:
        short = holder.short_code
        while repo.short_code_taken(session, card.id, short):
            short = ids.random_code(ids.SHORT_CODE_LENGTH, ids.UNAMBIGUOUS)
        # Only while it is still unlinked: two links to two cards at once put it on one, and
        # the other gets a copy, each answer saying where its holder is.
        if repo.link_unlinked(session, holder.id, card.id, short, now):
            set_committed_value(holder, "card_id", card.id)
            set_committed_value(holder, "short_code", short)
            set_committed_value(holder, "updated_at", now)
            events.emit(
                session,
                card.account_id,
                "loyalty_user_created",
                {"loyaltycard": str(card.id), "user": holder_v3(runtime, card, holder)},
            )
            return holder
        session.refresh(holder)
        if holder.card_id == card.id:
            return holder
    # A holder of another card, or an unlinked one of a subaccount put on its master's card: a
    # new holder on this card with the same details (the original stays where it is).
    copy = create_holder(
        session,
        runtime,
        card.account_id,
        card,
        HolderFields(
            first_name=holder.first_name,
            last_name=holder.last_name,
            email=holder.email,
            phone=holder.phone,
            gender=holder.gender,
            birthday=holder.birthday,
            city=holder.city,
            custom_fields=dict(holder.custom_fields or {}),
        ),
        now,
    )
    copy.password_hash = holder.password_hash
    return copy


# --- balances ------------------------------------------------------------------------------


@dataclass
class RewardIssued:
    threshold: int
    name: str
    campaign: str
    couponsession: str
    url: str


@dataclass
class Change:
    unit: str
    delta: int
    balance: int
    rewards: list[RewardIssued] = field(default_factory=list)
    # Cards this change filled up: each one's goal was taken off and a new card started, so
    # `balance` is what the new card holds (0 when the goal was met exactly).
    cards_completed: int = 0


def _not_allowed_reason(session: Session, holder: LoyaltyHolder, unit: str, delta: int) -> ApiError:
    session.refresh(holder)
    voided = ApiError(308, "This loyalty user is voided and cannot collect or spend.")
    if holder.voided:
        return voided
    balance = int(getattr(holder, unit))
    if delta > 0 and balance > repo.MAX_BALANCE - delta:
        return ApiError(309, f"Too many {unit}: a balance holds at most {repo.MAX_BALANCE}.")
    if delta < 0 and balance < -delta:
        return ApiError(308, f"Not enough {unit}: a balance cannot go below zero.")
    # The balance had room: the user was voided when the UPDATE ran, unvoided since (PostgreSQL).
    return voided


def _record_balance_change(
    session: Session,
    card: LoyaltyCard,
    holder: LoyaltyHolder,
    unit: str,
    *,
    delta: int,
    balance: int,
    kind: str,
    source: str,
    reason: str,
    now: dt.datetime,
) -> None:
    """The ledger row and the loyalty_points_changed event of a change already applied."""
    repo.add_ledger(
        session,
        holder,
        unit=unit,
        delta=delta,
        balance_after=balance,
        kind=kind,
        source=source,
        now=now,
    )
    events.emit(
        session,
        holder.account_id,
        "loyalty_points_changed",
        {
            "loyaltycard": str(card.id),
            "user": str(holder.id),
            "unit": unit,
            "amount": str(delta),
            "balance": str(balance),
            "reason": reason,
        },
    )


def apply_expiry(
    session: Session, runtime: Runtime, card: LoyaltyCard, holder: LoyaltyHolder, now: dt.datetime
) -> None:
    """Collected stamps/points expire `expire_days` after the last collection (applied when the
    holder is next read or changed, as one compare-and-set plus its ledger row)."""
    if not card.expire_days or holder.last_collected_at is None:
        return
    unit = unit_of(card)
    balance = int(getattr(holder, unit))
    cutoff = now - dt.timedelta(days=card.expire_days)
    if balance <= 0 or holder.last_collected_at >= cutoff:
        return
    if repo.expire_balance(session, holder.id, unit, balance, cutoff, now):
        set_committed_value(holder, unit, 0)
        _record_balance_change(
            session,
            card,
            holder,
            unit,
            delta=-balance,
            balance=0,
            kind="expired",
            source="expiry",
            reason="expired",
            now=now,
        )


def hold_card(session: Session, card: LoyaltyCard) -> None:
    """Hold the card's row as an addition does (FOR SHARE, PostgreSQL), before any holder's row."""
    repo.reward_goal_held(session, card.id)


def change_balance(
    session: Session,
    runtime: Runtime,
    card: LoyaltyCard,
    holder: LoyaltyHolder,
    delta: int,
    *,
    source: str,
    now: dt.datetime,
) -> Change:
    """Add (or, negative, spend) `delta` in the card's unit; issue every reward reached."""
    unit = unit_of(card)
    if abs(delta) > MAX_AMOUNT:
        raise bad_value(unit, f"At most {MAX_AMOUNT} at a time.")
    goal = None
    if delta > 0 and card.type != "membership":
        # The goal as committed now, with the card's row held: an edit of the goal and rewards
        # racing this addition is wholly before it or wholly after it (the card loaded with the
        # request may have the goal from before an edit whose rewards `reachable_rewards` would
        # read). Taken before the holder's row, in the order joins and links take theirs.
        goal = repo.reward_goal_held(session, card.id)
    apply_expiry(session, runtime, card, holder, now)
    if delta == 0:
        return Change(unit, 0, int(getattr(holder, unit)))
    result = repo.add_balance(session, holder.id, unit, delta, now)
    if result is None:
        raise _not_allowed_reason(session, holder, unit, delta)
    balance, cycle = result
    rewards: list[LoyaltyReward] = []
    campaigns: dict[int, Campaign] = {}
    if goal:
        rewards, campaigns = reachable_rewards(session, card, now)
        # The cards this addition completes, checked on the balance the UPDATE returned, so races
        # cannot pass it; the caller's transaction (or savepoint) rolls the addition back. A
        # balance already past a lowered goal is completed card by card over later additions.
        cards = balance // goal - (balance - delta) // goal
        if cards > MAX_CYCLES_PER_CHANGE:
            raise ApiError(
                309, f"Too many {unit} at once: one addition completes at most {MAX_CYCLES_PER_CHANGE} cards."
            )
        if cards * len(rewards) > MAX_REWARDS_PER_CHANGE:
            raise ApiError(
                309,
                f"Too many {unit} at once: one addition issues at most {MAX_REWARDS_PER_CHANGE} rewards "
                f"over the cards it completes; with this card's {len(rewards)} rewards, "
                f"at most {MAX_REWARDS_PER_CHANGE // len(rewards)} cards.",
            )
    set_committed_value(holder, unit, balance)
    set_committed_value(holder, "cycle", cycle)
    if delta > 0:
        set_committed_value(holder, "last_collected_at", now)
    _record_balance_change(
        session,
        card,
        holder,
        unit,
        delta=delta,
        balance=balance,
        kind="collect" if delta > 0 else "spend",
        source=source,
        reason=source,
        now=now,
    )
    change = Change(unit, delta, balance)
    if goal:
        # The cards this addition completes, plus one of a balance that was full already (past a
        # lowered goal): that surplus is traded one card per addition, so one call stays bounded.
        before = balance - delta
        most_cards = balance // goal - before // goal + (1 if before >= goal else 0)
        change.rewards = _reach_rewards(
            session,
            runtime,
            card,
            holder,
            unit,
            goal,
            (rewards, campaigns),
            balance,
            cycle,
            min(most_cards, MAX_CYCLES_PER_CHANGE),
            source,
            now,
        )
        change.balance = int(getattr(holder, unit))
        change.cards_completed = int(holder.cycle) - cycle
    return change


def campaign_gives_coupons(campaign: Campaign, tz: ZoneInfo, now: dt.datetime) -> bool:
    """Whether a session of `campaign` made now would be a usable coupon: not deleted, inactive or
    ended, and its fixed expiry date not past (a campaign that starts later still gives one: its
    session waits for the start, as a single-use link made in advance does)."""
    if campaign.status != "active" or campaign.deleted_at is not None:
        return False
    if campaign.end_at is not None and now >= campaign.end_at:
        return False
    if campaign.expiry_mode == "fixed_date" and campaign.expiry_date is not None:
        return now < expiry.end_of_local_day(campaign.expiry_date, tz)
    return True


def reachable_rewards(
    session: Session, card: LoyaltyCard, now: dt.datetime
) -> tuple[list[LoyaltyReward], dict[int, Campaign]]:
    """The card's rewards an addition can reach, with their campaigns. A reward whose coupon
    campaign cannot give a usable coupon now (deleted, inactive, ended, past its fixed expiry
    date) is not reached and not used up, rather than issued as a dead coupon: the holder's next
    addition on the same card, once the campaign can be used again, issues it."""
    rewards = repo.rewards(session, card.id)
    campaigns = repo.campaigns_by_id(session, {r.campaign_id for r in rewards if r.campaign_id})
    tz = account_zone(session, card.account_id)
    reachable = [
        r
        for r in rewards
        if not r.campaign_id
        or (r.campaign_id in campaigns and campaign_gives_coupons(campaigns[r.campaign_id], tz, now))
    ]
    return reachable, campaigns


def _reach_rewards(
    session: Session,
    runtime: Runtime,
    card: LoyaltyCard,
    holder: LoyaltyHolder,
    unit: str,
    goal: int,
    reachable: tuple[list[LoyaltyReward], dict[int, Campaign]],
    balance: int,
    cycle: int,
    most_cards: int,
    source: str,
    now: dt.datetime,
) -> list[RewardIssued]:
    """Issue the rewards reached on the current card, trade it in when full and go on with the
    next one, completing at most `most_cards` cards; the last card's rewards are issued too."""
    rewards, campaigns = reachable
    issued: list[RewardIssued] = []
    for completed in range(most_cards + 1):  # the last pass issues the new card's own rewards
        reached = min(balance, goal)
        for reward in rewards:
            if reward.threshold > reached:
                break
            grant_id = repo.claim_grant(session, holder, reward, cycle, now)
            if grant_id is not None:
                issued.append(_issue(session, runtime, card, holder, reward, campaigns, grant_id, cycle, now))
        if balance < goal or completed == most_cards:
            break
        after = repo.complete_cycle(session, holder.id, unit, goal, cycle)
        if after is None:
            break
        # Its ledger row and event: a copy of the balance kept from the events stays right.
        _record_balance_change(
            session,
            card,
            holder,
            unit,
            delta=-goal,
            balance=after,
            kind="completed",
            source=source,
            reason="completed",
            now=now,
        )
        balance, cycle = after, cycle + 1
        set_committed_value(holder, unit, balance)
        set_committed_value(holder, "cycle", cycle)
    return issued


def _issue(
    session: Session,
    runtime: Runtime,
    card: LoyaltyCard,
    holder: LoyaltyHolder,
    reward: LoyaltyReward,
    campaigns: dict[int, Campaign],
    grant_id: int,
    cycle: int,
    now: dt.datetime,
) -> RewardIssued:
    campaign = campaigns.get(reward.campaign_id) if reward.campaign_id else None
    code = url = ""
    if campaign is not None and campaign.deleted_at is None:
        coupon = new_session(
            session,
            campaign,
            source="loyalty_reward",
            firstname=holder.first_name,
            lastname=holder.last_name,
            email=holder.email,
            phone=holder.phone,
            now=now,
        )
        repo.attach_session(session, grant_id, coupon.id)
        code, url = coupon.code, runtime.url(session_path(campaign, coupon))
    issued = RewardIssued(
        threshold=reward.threshold,
        name=reward.name or (campaign.name if campaign else ""),
        campaign=f"cam_{campaign.id}" if campaign else "",
        couponsession=code,
        url=url,
    )
    events.emit(
        session,
        holder.account_id,
        "loyalty_reward_reached",
        {
            "loyaltycard": str(card.id),
            "user": str(holder.id),
            "threshold": str(reward.threshold),
            "completed_cards": str(cycle),
            "reward": issued.name,
            "campaign": issued.campaign,
            "couponsession": code,
            "url": url,
        },
        campaign=issued.campaign,
        coupon_session=code,
    )
    return issued


def set_voided(
    session: Session, card: LoyaltyCard, holder: LoyaltyHolder, voided: bool, *, source: str, now: dt.datetime
) -> None:
    balances = repo.set_voided(session, holder.id, voided, now)
    if balances is not None:
        points, stamps = balances
        set_committed_value(holder, "voided", voided)
        set_committed_value(holder, "points", points)
        set_committed_value(holder, "stamps", stamps)
        unit = unit_of(card)
        kind = "voided" if voided else "unvoided"
        # Its ledger row and event (amount 0), as every ledger row has one.
        _record_balance_change(
            session,
            card,
            holder,
            unit,
            delta=0,
            # The balance the UPDATE saw, not the one read with the request.
            balance=points if unit == "points" else stamps,
            kind=kind,
            source=source,
            reason=kind,
            now=now,
        )


def rewards_won(
    runtime: Runtime,
    grants: Sequence[tuple[LoyaltyRewardGrant, LoyaltyReward, CouponSession | None, Campaign | None]],
) -> list[dict[str, Any]]:
    out = []
    for grant, reward, coupon, campaign in grants:
        url = runtime.url(session_path(campaign, coupon)) if coupon and campaign else ""
        out.append(
            {
                "threshold": reward.threshold,
                "name": reward.name or (campaign.name if campaign else ""),
                "campaign": f"cam_{campaign.id}" if campaign else "",
                "couponsession": coupon.code if coupon else "",
                "url": url,
                "path": session_path(campaign, coupon) if coupon and campaign else "",
                "completed_cards": grant.cycle,
                "created_at": fmt(grant.created_at),
            }
        )
    return out


def validate_search(term: str) -> str:
    if len(term) < 3:
        raise bad_value("search", "At least 3 characters.")
    if not SEARCH_CHARS.match(term):
        raise ApiError(301, "Invalid character in parameter: search.")
    return term


def _object(raw: dict[str, Any] | str | None, name: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        parsed = load_json(raw)
    except ValueError:
        raise bad_value(name) from None
    if not isinstance(parsed, dict):
        raise bad_value(name)
    # Decoded after the request's character check: the same check again (a lone surrogate or
    # NUL would reach the query).
    check_characters({name: parsed})
    return parsed


def stats_filters(raw: dict[str, Any] | str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in _object(raw, "filter").items():
        if name not in JOIN_FIELDS:
            raise not_allowed("filter", list(JOIN_FIELDS))
        # Text only: str() made null the text "None" and an operator object its repr.
        if not isinstance(value, str):
            raise bad_value("filter", f"{name}: a text value.")
        out[name] = value
    return out


def stats_page(raw: dict[str, Any] | str | None) -> int:
    value = _object(raw, "pagination").get("page", 1)
    # A whole number, or its digits as text: int() also took 1.7, true and "1_0".
    if isinstance(value, str) and ids.is_number(value) and len(value) <= 18:
        page = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        page = value
    else:
        raise bad_value("pagination", f"page from 1 to {MAX_PAGE}.")
    # The page becomes an SQL OFFSET: a huge one overflows the driver's integer (a 500).
    if not 1 <= page <= MAX_PAGE:
        raise bad_value("pagination", f"page from 1 to {MAX_PAGE}.")
    return page
