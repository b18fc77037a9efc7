"""Who a push goes to: coupon sessions (by campaign) and loyalty card holders (by card).

Loyalty cards and holders belong to the loyalty capability; this module is the one place that
looks them up (`loyalty_card`, `loyalty_holder`, `loyalty_subscriber`). It finds the
`LoyaltyCard` / `LoyaltyHolder` models by name, so this package does not import the loyalty
package; without them every loyalty card is unknown (508).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencoupon import models
from opencoupon.errors import ApiError
from opencoupon.kit import ids
from opencoupon.kit.endpoint import ApiContext
from opencoupon.loyalty.service import get_holder
from opencoupon.models import Campaign, CouponSession

COUPON = "coupon_session"
LOYALTY = "loyalty_holder"
KINDS = (COUPON, LOYALTY)

CAMPAIGN_NOT_FOUND = ApiError(502, "Campaign ID not found.")
SESSION_NOT_FOUND = ApiError(505, "Couponsession not found.")
CARD_NOT_FOUND = ApiError(508, "Loyalty card ID not found.")
USER_NOT_FOUND = ApiError(512, "Loyalty user not found.")


@dataclass
class Group:
    """A campaign or a loyalty card: what "push to all" addresses."""

    kind: str
    id: int
    account_id: int
    title: str
    # Page a notification opens; "{key}" is replaced by the subscription's target key.
    url_template: str


@dataclass
class Subscriber:
    """What a browser subscribes for (resolved from the page's push_target)."""

    kind: str
    group_id: int
    account_id: int
    key: str


# ---- coupon sessions --------------------------------------------------------------------------------


def campaign(ctx: ApiContext, raw: str) -> Group:
    campaign_id = ids.parse_public_id(raw, "cam_", "campaign", CAMPAIGN_NOT_FOUND)
    found = ctx.session.scalar(
        select(Campaign).where(
            Campaign.id == campaign_id, ctx.scope(Campaign.account_id), Campaign.deleted_at.is_(None)
        )
    )
    if found is None:
        raise CAMPAIGN_NOT_FOUND
    return Group(COUPON, found.id, found.account_id, found.title or found.name, f"/p/{found.code}/{{key}}")


def coupon_session(ctx: ApiContext, group: Group, raw: str) -> str:
    """The 21-character code of a live session of the campaign, given it or its 6-character short
    code, in any letter case (as coupons.service.find_session takes it): a removed one (a removed
    single-use link) is not found, as subscribing to it is not."""
    # Codes are issued in lower case (ids.session_code).
    code = raw.strip().lower()
    if len(code) not in (ids.SESSION_CODE_LENGTH, ids.SHORT_CODE_LENGTH) or not code.isalnum():
        raise SESSION_NOT_FOUND
    column = CouponSession.code if len(code) == ids.SESSION_CODE_LENGTH else CouponSession.short_code
    found = ctx.session.scalar(
        select(CouponSession.code).where(
            CouponSession.campaign_id == group.id, column == code, CouponSession.removed_at.is_(None)
        )
    )
    if found is None:
        raise SESSION_NOT_FOUND
    return str(found)


def coupon_subscriber(session: Session, code: str, *, active: bool = True) -> Subscriber | None:
    """The session a consumer page subscribes for (the session code is the page's secret). With
    `active`, not a removed session nor one of a deleted campaign (nothing is pushed to them)."""
    if len(code) != ids.SESSION_CODE_LENGTH or not code.isalnum():
        return None
    query = select(CouponSession.campaign_id, CouponSession.account_id).where(CouponSession.code == code)
    if active:
        query = query.join(Campaign, Campaign.id == CouponSession.campaign_id).where(
            CouponSession.removed_at.is_(None), Campaign.deleted_at.is_(None)
        )
    row = session.execute(query).first()
    if row is None:
        return None
    return Subscriber(COUPON, int(row[0]), int(row[1]), code)


# ---- loyalty holders --------------------------------------------------------------------------------


def _loyalty_models() -> tuple[Any, Any] | None:
    card = getattr(models, "LoyaltyCard", None)
    holder = getattr(models, "LoyaltyHolder", None)
    return None if card is None or holder is None else (card, holder)


def loyalty_card(ctx: ApiContext, raw: str) -> Group:
    card_id = ids.parse_public_id(raw, "", "loyaltycard", CARD_NOT_FOUND)
    found_models = _loyalty_models()
    if found_models is None:
        raise CARD_NOT_FOUND
    card_model, _ = found_models
    query = select(card_model).where(card_model.id == card_id, ctx.scope(card_model.account_id))
    if hasattr(card_model, "deleted_at"):
        query = query.where(card_model.deleted_at.is_(None))
    card = ctx.session.scalar(query)
    if card is None:
        raise CARD_NOT_FOUND
    return Group(LOYALTY, int(card.id), int(card.account_id), str(card.name), f"/l/{card.code}")


def loyalty_holder(ctx: ApiContext, group: Group, raw: str) -> str:
    """The holder's public ID (the key of its subscriptions) if it holds this card: by its numeric
    ID or its 6-character code, as loyaltyusers/update takes it."""
    card = ctx.session.get(models.LoyaltyCard, group.id)
    if card is None:
        raise USER_NOT_FOUND
    return str(get_holder(ctx.session, card, raw).id)


def loyalty_subscriber(session: Session, code: str, *, active: bool = True) -> Subscriber | None:
    """The holder a loyalty card page subscribes for; `code` is the holder page's secret token.
    With `active`, not a holder of a deleted card."""
    found_models = _loyalty_models()
    if found_models is None or not code or len(code) > 64:
        return None
    card_model, holder_model = found_models
    query = select(holder_model.id, holder_model.card_id, holder_model.account_id).where(
        holder_model.token == code
    )
    if active and hasattr(card_model, "deleted_at"):
        query = query.join(card_model, card_model.id == holder_model.card_id).where(
            card_model.deleted_at.is_(None)
        )
    row = session.execute(query).first()
    if row is None or row[1] is None:
        return None
    return Subscriber(LOYALTY, int(row[1]), int(row[2]), str(row[0]))


def subscriber(session: Session, kind: str, code: str, *, active: bool = True) -> Subscriber | None:
    """Who the page with this code subscribes for; with `active` (new subscriptions), only what
    can still be pushed to. Unsubscribing works for removed sessions and deleted cards too."""
    if kind == COUPON:
        return coupon_subscriber(session, code, active=active)
    if kind == LOYALTY:
        return loyalty_subscriber(session, code, active=active)
    return None
