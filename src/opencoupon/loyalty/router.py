"""Loyalty calls: the vendor's v3 actions, its v4 REST calls, and card management (v4 REST)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from opencoupon.errors import ApiError, bad_value
from opencoupon.kit import ids
from opencoupon.kit.dates import fmt
from opencoupon.kit.endpoint import ApiContext, v3_endpoint, v4_endpoint
from opencoupon.kit.params import NoParams
from opencoupon.loyalty import repository as repo
from opencoupon.loyalty import service
from opencoupon.loyalty.schemas import (
    CardCopy,
    CardCreate,
    CardList,
    CardRef,
    CardUpdate,
    HolderBulk,
    HolderIn,
    StatsList,
    UserCreate,
    UserLink,
    UserList,
    UserSearch,
    UserUpdate,
)
from opencoupon.models import LoyaltyCard, LoyaltyHolder

router = APIRouter(tags=["Loyalty"])

CARDS = "/v4/loyalty/loyalty-cards"


def _card_from_path(ctx: ApiContext) -> LoyaltyCard:
    return service.get_card(ctx.session, ctx.may_reach, ctx.path_params["id"])


# --- v3 --------------------------------------------------------------------------------------


@v3_endpoint(router, ["/v3/loyalty/list"], CardList, summary="List loyalty cards")
def loyalty_list(ctx: ApiContext, req: CardList) -> dict[str, Any]:
    """Every loyalty card of the caller, by creation date (`sorting` asc, the default, or desc)."""
    cards = repo.cards(
        ctx.session,
        ctx.scope(LoyaltyCard.account_id),
        only_active=bool(req.only_active),
        descending=req.sorting == "desc",
    )
    counts = repo.holder_counts(ctx.session, [c.id for c in cards])
    return {
        "amount_of_loyaltycards": str(len(cards)),
        "loyaltycards": [
            service.card_v3(ctx.session, ctx.runtime, c, counts.get(c.id, 0), detail=False) for c in cards
        ],
    }


@v3_endpoint(router, ["/v3/loyalty/info"], CardRef, summary="Loyalty card info", read_only=True, quick=True)
def loyalty_info(ctx: ApiContext, req: CardRef) -> dict[str, Any]:
    """One card with its rewards. Unknown card: 507 (the vendor's code for this call)."""
    card = service.get_card(ctx.session, ctx.may_reach, req.loyaltycard, service.INFO_CARD_NOT_FOUND)
    users = repo.holder_count(ctx.session, card.id)
    return {"loyaltycard": service.card_v3(ctx.session, ctx.runtime, card, users, detail=True)}


@v3_endpoint(router, ["/v3/loyaltyusers/list"], UserList, summary="List the users of a loyalty card")
def loyaltyusers_list(ctx: ApiContext, req: UserList) -> dict[str, Any]:
    """100 users a page, oldest first. `amount_of_results` counts this page's users, as on every
    other v3 list (clients page until it is "0"); `total_results` counts them all. Unknown card:
    505 (the vendor's code for this call)."""
    card = service.get_card(ctx.session, ctx.may_reach, req.loyaltycard, service.LIST_CARD_NOT_FOUND)
    page = req.page or 1
    total, holders = repo.holders_page(ctx.session, card.id, page=page, filters={})
    for holder in holders:
        service.apply_expiry(ctx.session, ctx.runtime, card, holder, ctx.now)
    return {
        "amount_of_results": str(len(holders)),
        "total_results": str(total),
        "page": str(page),
        "users": [service.holder_v3(ctx.runtime, card, h) for h in holders],
    }


def _amount(req: UserUpdate) -> int | None:
    given = [v for v in (req.points, req.stamps, req.amount) if v is not None]
    if len(given) > 1:
        raise bad_value("points", "Give one of points, stamps or amount.")
    return given[0] if given else None


@v3_endpoint(
    router, ["/v3/loyaltyusers/update"], UserUpdate, summary="Add points or stamps, void a user", quick=True
)
def loyaltyusers_update(ctx: ApiContext, req: UserUpdate) -> dict[str, Any]:
    """Signed `points` or `stamps` (the card's unit), and/or `voided`. A balance never goes below
    zero (308); a voided user cannot collect (308). Send an `Idempotency-Key` to make retries safe."""
    card, holder = service.get_card_and_holder(ctx.session, ctx.may_reach, req.loyaltycard, req.user)
    amount = _amount(req)
    if amount is None and req.voided is None:
        raise ApiError(200, "Missing parameter: points")
    if req.voided is not None:
        if amount is not None:
            # The card's row before the holder's, the order additions and joins take them:
            # voiding first held the holder while the addition then waited for the card, against
            # a link holding the card and waiting for the holder (a PostgreSQL deadlock).
            service.hold_card(ctx.session, card)
        service.set_voided(ctx.session, card, holder, req.voided, source="api", now=ctx.now)
    rewards: list[service.RewardIssued] = []
    if amount is not None:
        change = service.change_balance(
            ctx.session, ctx.runtime, card, holder, amount, source="api", now=ctx.now
        )
        rewards = change.rewards
    else:
        service.apply_expiry(ctx.session, ctx.runtime, card, holder, ctx.now)
    return {
        "user": service.holder_v3(ctx.runtime, card, holder),
        "rewards_reached": [
            {
                "threshold": str(r.threshold),
                "name": r.name,
                "campaign": r.campaign,
                "couponsession": r.couponsession,
                "url": r.url,
            }
            for r in rewards
        ],
    }


@v3_endpoint(router, ["/v3/loyaltyusers/create"], UserCreate, summary="Create a loyalty user")
def loyaltyusers_create(ctx: ApiContext, req: UserCreate) -> dict[str, Any]:
    """`email` and `password` are required (the vendor's errors); with `loyaltycard` the user joins
    that card at once, otherwise `loyaltyusers/link` puts it on a card."""
    if not req.email:
        raise ApiError(200, "You need to provide an email address.")
    if not req.password:
        raise ApiError(200, "You need to provide a password.")
    card = None
    if req.loyaltycard:
        card = service.get_card(ctx.session, ctx.may_reach, req.loyaltycard)
    account_id = card.account_id if card else ctx.account.id
    holder = service.create_holder(
        ctx.session,
        ctx.runtime,
        account_id,
        card,
        service.HolderFields(
            first_name=(req.first_name or "")[:100],
            last_name=(req.last_name or "")[:100],
            email=req.email,
            phone=(req.phone or "")[:40],
            gender=req.gender or "",
            birthday=service.parse_birthday(req.birthday),
            city=(req.city or "")[:100],
            password_hash=req.password_hash,
        ),
        ctx.now,
    )
    return {"user": service.holder_v3(ctx.runtime, card, holder)}


@v3_endpoint(router, ["/v3/loyaltyusers/link"], UserLink, summary="Link a loyalty user to a card")
def loyaltyusers_link(ctx: ApiContext, req: UserLink) -> dict[str, Any]:
    """Put a user (from `loyaltyusers/create`, or a user of another card) on this card."""
    card = service.get_card(ctx.session, ctx.may_reach, req.loyaltycard)
    text = req.user.strip()
    if not ids.is_number(text):
        raise ApiError(301, "Invalid character in parameter: user.")
    number = ids.stored_id(text)
    holder = (
        repo.holder_in_scope(ctx.session, ctx.scope(LoyaltyHolder.account_id), number) if number else None
    )
    if holder is None:
        raise service.USER_NOT_FOUND
    linked = service.link_holder(ctx.session, ctx.runtime, card, holder, ctx.now)
    service.apply_expiry(ctx.session, ctx.runtime, card, linked, ctx.now)
    return {"user": service.holder_v3(ctx.runtime, card, linked)}


@v3_endpoint(router, ["/v3/loyaltyusers/search"], UserSearch, summary="Search the users of a loyalty card")
def loyaltyusers_search(ctx: ApiContext, req: UserSearch) -> dict[str, Any]:
    """By first name, last name, email, phone, ID or 6-character code (at least 3 characters,
    `A-Za-z0-9-_@`, as the vendor allows); at most 100 results."""
    card = service.get_card(ctx.session, ctx.may_reach, req.loyaltycard)
    term = service.validate_search(req.search)
    found = repo.search_holders(ctx.session, card.id, term)
    for holder in found:
        service.apply_expiry(ctx.session, ctx.runtime, card, holder, ctx.now)
    return {
        "amount_of_results": str(len(found)),
        "users": [service.holder_v3(ctx.runtime, card, h) for h in found],
    }


# --- v4: cards -------------------------------------------------------------------------------


@v4_endpoint(router, "GET", CARDS, NoParams, summary="List loyalty cards (v4)")
def cards_list(ctx: ApiContext, req: NoParams) -> list[Any]:
    """The vendor's bare array of `id`, `code`, `name`, `domain`, `type`."""
    cards = repo.cards(ctx.session, ctx.scope(LoyaltyCard.account_id), only_active=False, descending=False)
    return [service.card_v4_short(ctx.runtime, c) for c in cards]


@v4_endpoint(router, "POST", CARDS, CardCreate, summary="Create a loyalty card", status_code=201)
def cards_create(ctx: ApiContext, req: CardCreate) -> dict[str, Any]:
    """A stamp, points or membership card; rewards are coupon campaigns (`cam_…`) issued at their
    threshold."""
    card = service.create_card(ctx.session, ctx.runtime, ctx.account.id, req, ctx.now)
    return service.card_v4(ctx.session, ctx.runtime, card)


@v4_endpoint(router, "GET", CARDS + "/{id}", NoParams, summary="Get a loyalty card")
def cards_get(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """One card with its rewards."""
    return service.card_v4(ctx.session, ctx.runtime, _card_from_path(ctx))


@v4_endpoint(router, "PATCH", CARDS + "/{id}", CardUpdate, summary="Update a loyalty card")
def cards_update(ctx: ApiContext, req: CardUpdate) -> dict[str, Any]:
    """Any create field; `rewards` replaces the reward list (rewards already won stay won)."""
    card = _card_from_path(ctx)
    service.update_card(ctx.session, ctx.runtime, card, req, ctx.now)
    return service.card_v4(ctx.session, ctx.runtime, card)


@v4_endpoint(router, "DELETE", CARDS + "/{id}", NoParams, summary="Delete a loyalty card")
def cards_delete(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """The card stops answering (its page and its calls); its ledger is kept."""
    card = _card_from_path(ctx)
    service.delete_card(card, ctx.now)
    return {"id": card.id, "deleted": True}


@v4_endpoint(router, "POST", CARDS + "/{id}/copy", CardCopy, summary="Copy a loyalty card", status_code=201)
def cards_copy(ctx: ApiContext, req: CardCopy) -> dict[str, Any]:
    """A new card with the same settings and rewards and no users (`name`: at most 50 characters)."""
    copy = service.copy_card(ctx.session, _card_from_path(ctx), req.name, ctx.now)
    return service.card_v4(ctx.session, ctx.runtime, copy)


# --- v4: card users ("stats") ---------------------------------------------------------------


@v4_endpoint(router, "GET", CARDS + "/{id}/stats", StatsList, summary="List the users of a card (v4)")
def stats_list(ctx: ApiContext, req: StatsList) -> list[Any]:
    """Bare array of users, 100 a page (`pagination[page]`); `filter` on first_name, last_name,
    email or phone; voided users only with `include_voided=true`."""
    card = _card_from_path(ctx)
    _total, holders = repo.holders_page(
        ctx.session,
        card.id,
        page=service.stats_page(req.pagination),
        include_voided=bool(req.include_voided),
        filters=service.stats_filters(req.filter),
    )
    for holder in holders:
        service.apply_expiry(ctx.session, ctx.runtime, card, holder, ctx.now)
    return [service.holder_v4(ctx.runtime, card, h) for h in holders]


@v4_endpoint(router, "POST", CARDS + "/{id}/stats", HolderIn, summary="Add a user to a card", status_code=201)
def stats_create(ctx: ApiContext, req: HolderIn) -> dict[str, Any]:
    """One new user (every field optional)."""
    card = _card_from_path(ctx)
    holder = service.create_holder(
        ctx.session, ctx.runtime, card.account_id, card, service.fields_from(req), ctx.now
    )
    return service.holder_v4(ctx.runtime, card, holder)


@v4_endpoint(
    router,
    "POST",
    CARDS + "/{id}/stats/bulk",
    HolderBulk,
    summary="Add many users to a card",
    status_code=201,
)
def stats_bulk(ctx: ApiContext, req: HolderBulk) -> dict[str, Any]:
    """`users`: up to 1,000 users, all created or none."""
    card = _card_from_path(ctx)
    created = [
        service.create_holder(
            ctx.session, ctx.runtime, card.account_id, card, service.fields_from(item), ctx.now
        )
        for item in req.users
    ]
    return {"created": len(created), "users": [service.holder_v4(ctx.runtime, card, h) for h in created]}


@v4_endpoint(router, "GET", CARDS + "/{id}/stats/{userId}", NoParams, summary="One user of a card (v4)")
def stats_get(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """The user with its latest ledger rows (newest first) and the rewards it won."""
    card = _card_from_path(ctx)
    holder = service.get_holder(ctx.session, card, ctx.path_params["userId"], param="userId")
    service.apply_expiry(ctx.session, ctx.runtime, card, holder, ctx.now)
    data = service.holder_v4(ctx.runtime, card, holder)
    data["ledger"] = [
        {
            "delta": e.delta,
            "unit": e.unit,
            "balance_after": e.balance_after,
            "kind": e.kind,
            "source": e.source,
            "created_at": fmt(e.created_at),
        }
        for e in repo.ledger(ctx.session, holder.id)
    ]
    data["rewards"] = service.rewards_won(ctx.runtime, repo.grants_with_sessions(ctx.session, holder.id))
    return data
