"""Dashboard pages for loyalty cards: the cards, their holders with balances, a holder's ledger,
adjusting a balance with a reason, voiding/unvoiding a holder (loyalty.service does the work).

The reason of an adjustment is picked from a short list and kept in the ledger entry's `source`
(16 characters) and the loyalty_points_changed event's `reason`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.coupons import repository as coupons_repo
from opencoupon.dashboard.common import (
    FormProblem,
    api_context,
    ask_first,
    build,
    check_text,
    many,
    page,
    page_number,
    parse_int,
    saved_or_form_again,
    text,
)
from opencoupon.dashboard.security import PageError, checked_form, require_login
from opencoupon.errors import ApiError
from opencoupon.kit import ids
from opencoupon.kit.endpoint import ApiContext
from opencoupon.loyalty import repository, service
from opencoupon.loyalty.schemas import CardCreate, CardUpdate
from opencoupon.models import Account, Campaign, LoyaltyCard, LoyaltyHolder

router = APIRouter(include_in_schema=False)

REASONS = ("correction", "goodwill", "purchase", "refund", "complaint", "fraud")
NOT_FOUND = PageError(404, "Not found", "There is no such loyalty card or holder in your account.")
NAME_LIMIT = 200  # the column's width (and CardCreate's)
DESCRIPTION_LIMIT = 2000
REWARD_NAME_LIMIT = 200  # loyalty_rewards.name


def _card(ctx: ApiContext, card_id: str) -> LoyaltyCard:
    """The card on this page; another account's or a missing one is the 404 page."""
    try:
        return service.get_card(ctx.session, ctx.may_reach, card_id)
    except ApiError:
        raise NOT_FOUND from None


def _card_and_holder(ctx: ApiContext, card_id: str, holder_id: str) -> tuple[LoyaltyCard, LoyaltyHolder]:
    """The card and holder on this page; another account's or a missing one is the 404 page."""
    try:
        return service.get_card_and_holder(ctx.session, ctx.may_reach, card_id, holder_id)
    except ApiError:
        raise NOT_FOUND from None


@router.get("/dashboard/loyalty")
def cards_page(request: Request, account: Account = Depends(require_login)) -> Response:
    with api_context(request, account) as ctx:
        rows = repository.cards(
            ctx.session, ctx.scope(LoyaltyCard.account_id), only_active=False, descending=True
        )
        cards = [service.card_v4(ctx.session, ctx.runtime, c) for c in rows]
    return page(
        request, "dashboard/loyalty.html", {"title": "Loyalty cards", "account": account, "cards": cards}
    )


def _card_context(request: Request, account: Account, card_id: str) -> dict[str, Any]:
    page_no = page_number(request)
    # A write transaction: balances past their expiry are written off as they are shown, as
    # every API read of a holder does.
    with api_context(request, account, write=True) as ctx:
        card = _card(ctx, card_id)
        info = service.card_v4(ctx.session, ctx.runtime, card)
        total, rows = repository.holders_page(ctx.session, card.id, page=page_no, filters={})
        for holder in rows:
            service.apply_expiry(ctx.session, ctx.runtime, card, holder, ctx.now)
        holders = [service.holder_v4(ctx.runtime, card, h) for h in rows]
    return {
        "title": info["name"],
        "account": account,
        "card": info,
        "holders": holders,
        "total": total,
        "page": page_no,
        "has_next": page_no * repository.PAGE_SIZE < total,
    }


@router.get("/dashboard/loyalty/{card_id}")
def card_page(request: Request, card_id: str, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/loyalty_card.html", _card_context(request, account, card_id))


def _holder_context(
    request: Request,
    account: Account,
    card_id: str,
    holder_id: str,
    errors: list[str],
    values: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The holder's page; `values` fills the Adjust form in again as it was sent (after an error)."""
    with api_context(request, account, write=True) as ctx:
        card, holder = _card_and_holder(ctx, card_id, holder_id)
        service.apply_expiry(ctx.session, ctx.runtime, card, holder, ctx.now)
        info = service.holder_v4(ctx.runtime, card, holder)
        ledger = [
            {
                "date": e.created_at,
                "kind": e.kind,
                "delta": e.delta,
                "balance": e.balance_after,
                "unit": e.unit,
                "source": e.source,
            }
            for e in repository.ledger(ctx.session, holder.id, limit=100)
        ]
        unit = service.unit_of(card)
        card_name = card.name
    return {
        "title": "Holder",
        "account": account,
        "holder": info,
        "ledger": ledger,
        "unit": unit,
        "card_id": card_id,
        "card_name": card_name,
        "reasons": REASONS,
        "errors": errors,
        "values": values or {},
        "done": request.query_params.get("done", "")[:200],
    }


@router.get("/dashboard/loyalty/{card_id}/holders/{holder_id}")
def holder_page(
    request: Request, card_id: str, holder_id: str, account: Account = Depends(require_login)
) -> Response:
    return page(
        request, "dashboard/loyalty_holder.html", _holder_context(request, account, card_id, holder_id, [])
    )


def _act(
    request: Request, account: Account, card_id: str, holder_id: str, action: str, delta: int, reason: str
) -> str:
    with api_context(request, account, write=True) as ctx:
        card, holder = _card_and_holder(ctx, card_id, holder_id)
        if action == "adjust":
            change = service.change_balance(
                ctx.session, ctx.runtime, card, holder, delta, source=reason, now=ctx.now
            )
            return f"Balance is now {change.balance} {change.unit}."
        service.set_voided(ctx.session, card, holder, action == "void", source="dashboard", now=ctx.now)
        return "Holder voided." if action == "void" else "Holder re-activated."


@router.post("/dashboard/loyalty/{card_id}/holders/{holder_id}/{action}")
async def holder_action(
    request: Request, card_id: str, holder_id: str, action: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    if action not in ("adjust", "void", "unvoid"):
        raise NOT_FOUND
    if action == "void":
        asked = ask_first(
            request,
            form,
            account,
            "loyalty_holder.void",
            back=f"/dashboard/loyalty/{card_id}/holders/{holder_id}",
        )
        if asked is not None:
            return asked
    # What the Adjust form sent, shown in it again when it is refused.
    typed = (
        {"amount": text(form, "amount", 20), "reason": text(form, "reason", 20)} if action == "adjust" else {}
    )
    try:
        delta = 0
        reason = "dashboard"
        if action == "adjust":
            amount = parse_int(typed["amount"], "Amount", low=-1_000_000, high=1_000_000)
            if not amount:
                raise FormProblem(["Amount: enter a number other than 0 (negative takes away)."])
            delta = amount
            reason = typed["reason"]
            if reason not in REASONS:
                raise FormProblem(["Reason: choose why the balance changes."])
        done = await run_in_threadpool(_act, request, account, card_id, holder_id, action, delta, reason)
    except ApiError as err:
        context = await run_in_threadpool(
            _holder_context, request, account, card_id, holder_id, [err.description], typed
        )
        return page(request, "dashboard/loyalty_holder.html", context, status_code=422)
    except FormProblem as problem:
        context = await run_in_threadpool(
            _holder_context, request, account, card_id, holder_id, problem.messages, typed
        )
        return page(request, "dashboard/loyalty_holder.html", context, status_code=422)
    return RedirectResponse(
        f"/dashboard/loyalty/{card_id}/holders/{holder_id}?{urlencode({'done': done})}", status_code=303
    )


# --- create / edit a card -----------------------------------------------------------------------

_CARD_DEFAULTS: dict[str, Any] = {"type": "stamp", "active": True, "join_fields": ["first_name", "email"]}


def _card_form_context(
    request: Request, account: Account, values: dict[str, Any], errors: list[str], card_id: str = ""
) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        campaigns = [
            {"id": f"cam_{c.id}", "name": c.name}
            for c in coupons_repo.campaigns(ctx.session, ctx.scope(Campaign.account_id))
        ]
    # The card's rewards and one empty row to add another (no JavaScript needed). A reward named
    # after its campaign shows an empty name: that is what it stores, and it follows a rename. A
    # reward whose campaign was deleted keeps it, marked so (the list offers live campaigns only),
    # until another is chosen or the row is emptied.
    names = {c["id"]: c["name"] for c in campaigns}
    rewards = [
        {
            **r,
            "name": "" if r.get("name") == names.get(r["campaign"]) else r.get("name", ""),
            "deleted": bool(r["campaign"]) and r["campaign"] not in names,
        }
        for r in values.get("rewards", [])
    ]
    rewards.append({"campaign": "", "threshold": "", "name": ""})
    return {
        "campaigns": campaigns,
        "rewards": rewards,
        "title": "Edit loyalty card" if card_id else "New loyalty card",
        "account": account,
        "values": values,
        "errors": errors,
        "card_id": card_id,
        "join_fields": service.JOIN_FIELDS,
    }


def _card_values(form: Any) -> dict[str, Any]:
    pairs = zip(many_raw(form, "reward_campaign"), many_raw(form, "reward_threshold"), strict=False)
    # A form without name fields (a page loaded before they existed) still keeps every reward.
    names = many_raw(form, "reward_name", REWARD_NAME_LIMIT + 1)
    return {
        "name": text(form, "name", NAME_LIMIT + 1),
        "type": text(form, "type", 20),
        "description": text(form, "description", DESCRIPTION_LIMIT + 1),
        "reward_goal": text(form, "reward_goal", 20),
        "expire_days": text(form, "expire_days", 20),
        "active": text(form, "active") == "1",
        "join_fields": many(form, "join_fields"),
        "rewards": [
            {"campaign": c, "threshold": t, "name": names[row] if row < len(names) else ""}
            for row, (c, t) in enumerate(pairs)
            if c or t
        ],
    }


def many_raw(form: Any, name: str, limit: int = 40) -> list[str]:
    """Every value of a repeated field, blanks included, so a reward's fields pair up by row."""
    return [v.strip()[:limit] if isinstance(v, str) else "" for v in form.getlist(name)]


def _reward_label(number: int, threshold: str, card_type: str) -> str:
    """Names a reward row in a message as the form shows it: its number, and its threshold."""
    unit = "stamps" if card_type == "stamp" else "points"
    return f"Reward {number} (at {threshold} {unit})" if threshold else f"Reward {number}"


def _rewards_data(values: dict[str, Any]) -> list[dict[str, Any]]:
    rewards: list[dict[str, Any]] = []
    for number, row in enumerate(values["rewards"], 1):
        label = _reward_label(number, row["threshold"], values["type"])
        if not row["campaign"]:
            raise FormProblem([f"{label}: choose the campaign it issues, or empty the row to remove it."])
        threshold = parse_int(row["threshold"], f"Reward {number} threshold", low=1, high=1_000_000)
        if threshold is None:
            raise FormProblem([f"{label}: enter the stamps or points that issue the reward."])
        if len(row["name"]) > REWARD_NAME_LIMIT:
            raise FormProblem([f"{label}: use at most {REWARD_NAME_LIMIT} characters for its name."])
        # The name set for it (here or through the API) is sent back, so saving keeps it.
        rewards.append({"campaign": row["campaign"], "threshold": threshold, "name": row["name"]})
    return rewards


def _card_data(form: Any, values: dict[str, Any]) -> dict[str, Any]:
    check_text(values, {"name": ("Name", NAME_LIMIT), "description": ("Description", DESCRIPTION_LIMIT)})
    data: dict[str, Any] = {
        "name": values["name"],
        "type": values["type"],
        "description": values["description"],
        "active": values["active"],
        "join_fields": ",".join(values["join_fields"]),
    }
    if not values["name"]:
        raise FormProblem(["Name: enter a name for the card."])
    # Emptied: none of its own, so the highest reward's threshold (as for a card made without one).
    data["reward_goal"] = parse_int(values["reward_goal"], "Reward goal", low=1, high=1_000_000)
    days = parse_int(values["expire_days"], "Days until unused balance expires", high=36500)
    data["expire_days"] = days
    # For a membership card too: its rows, none removing the rewards (the service refuses a type
    # change to membership that would drop rewards the form did not remove), any refused.
    data["rewards"] = _rewards_data(values)
    pin = text(form, "pin", 41)  # one past any PIN check_pin takes: refused, not cut
    if pin:
        data["pin"] = pin
    return data


@router.get("/dashboard/loyalty-cards/new")
def new_card_form(request: Request, account: Account = Depends(require_login)) -> Response:
    return page(
        request,
        "dashboard/loyalty_card_form.html",
        _card_form_context(request, account, dict(_CARD_DEFAULTS), []),
    )


def _check_reward_campaigns(ctx: ApiContext, account_id: int, data: dict[str, Any]) -> None:
    """Name the reward row whose campaign cannot be issued (deleted, or not the card's account's):
    the service refuses the whole list without saying which."""
    for number, reward in enumerate(data.get("rewards") or [], 1):
        try:
            campaign_id = ids.parse_public_id(
                reward["campaign"], "cam_", "campaign", service.CAMPAIGN_NOT_FOUND
            )
        except ApiError:
            campaign_id = 0
        found = repository.campaigns_by_id(ctx.session, {campaign_id}).get(campaign_id)
        if found is not None and found.account_id == account_id and found.deleted_at is None:
            continue
        label = _reward_label(number, str(reward["threshold"]), data["type"])
        gone = (
            "was deleted"
            if found is not None and found.account_id == account_id
            else "is not in this account"
        )
        advice = "choose another campaign, or empty the row to remove the reward."
        raise FormProblem([f"{label}: its campaign {reward['campaign']} {gone}; {advice}"])


def _save_card(request: Request, account: Account, card_id: str, data: dict[str, Any]) -> int:
    try:
        with api_context(request, account, write=True) as ctx:
            if card_id:
                card = _card(ctx, card_id)
                _check_reward_campaigns(ctx, card.account_id, data)
                service.update_card(ctx.session, ctx.runtime, card, build(CardUpdate, data), ctx.now)
                return card.id
            _check_reward_campaigns(ctx, ctx.account.id, data)
            return service.create_card(
                ctx.session, ctx.runtime, ctx.account.id, build(CardCreate, data), ctx.now
            ).id
    except ApiError as err:
        raise FormProblem([err.description]) from None


async def _card_post(request: Request, account: Account, card_id: str) -> Response:
    form = await checked_form(request)
    values = _card_values(form)
    return await saved_or_form_again(
        request,
        "dashboard/loyalty_card_form.html",
        save=lambda: _save_card(request, account, card_id, _card_data(form, values)),
        form_again=lambda errors: _card_form_context(request, account, values, errors, card_id),
        saved_path=lambda saved: f"/dashboard/loyalty/{saved}",
    )


@router.post("/dashboard/loyalty-cards/new")
async def create_card(request: Request, account: Account = Depends(require_login)) -> Response:
    return await _card_post(request, account, "")


@router.get("/dashboard/loyalty/{card_id}/edit")
def edit_card_form(request: Request, card_id: str, account: Account = Depends(require_login)) -> Response:
    with api_context(request, account) as ctx:
        card = _card(ctx, card_id)
        info = service.card_v4(ctx.session, ctx.runtime, card)
    values = {
        **info,
        "reward_goal": info["reward_goal"] or "",
        "expire_days": info["expire_days"] or "",
        "rewards": [r for r in info["rewards"] if r["campaign"]],
    }
    return page(
        request, "dashboard/loyalty_card_form.html", _card_form_context(request, account, values, [], card_id)
    )


@router.post("/dashboard/loyalty/{card_id}/edit")
async def update_card(request: Request, card_id: str, account: Account = Depends(require_login)) -> Response:
    return await _card_post(request, account, card_id)
