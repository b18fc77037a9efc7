"""Consumer and counter pages of a loyalty card under /l/{code}.

Every form carries one signed token holding the browser's CSRF cookie and a fresh nonce. The nonce
is the form's idempotency key: a phone that retries a stamp on a flaky network (or a reload of the
answer) replays the first answer instead of adding again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.requests import Request

from opencoupon import branding, web
from opencoupon.coupons import expiry, gates, staff_device
from opencoupon.coupons import service as coupons_service
from opencoupon.errors import ApiError
from opencoupon.kit import idempotency, ids
from opencoupon.kit.clock import utcnow
from opencoupon.kit.lockout import BACKSTOP_FACTOR, EscalatingLockout, GuessLimit, Lockout
from opencoupon.kit.ratelimit import retry_after_header
from opencoupon.loyalty import repository as repo
from opencoupon.loyalty import service
from opencoupon.models import (
    Campaign,
    CouponSession,
    LoyaltyCard,
    LoyaltyHolder,
    LoyaltyReward,
    LoyaltyRewardGrant,
)
from opencoupon.pages import private_page, render, render_error_page
from opencoupon.qr import codes as qr_codes
from opencoupon.runtime import Runtime

router = APIRouter(include_in_schema=False)

FORM_MAX_AGE = 24 * 3600
MAX_FORM_AMOUNT = 100
# Wrong PINs allowed per card and client address in PIN_WINDOW.
PIN_FAILURES = 10
PIN_WINDOW = dt.timedelta(minutes=10)


# Per card and client address, and ten times that a day per card from all addresses, each time
# locking the card's PINs twice as long (15 minutes up to a day, as a campaign's staff PIN): a
# backstop that started again every ten minutes let a search from many addresses try every 4-digit
# PIN in a day. Counted in the database (shared by every API process; see opencoupon.kit.lockout).
# A device with the staff device cookie (right PIN on the card's staff page lately) is held by its
# address's limit only (coupons.staff_device), so the counter goes on stamping during a search.
pin_guard = GuessLimit(
    Lockout("loyalty-pin", limit=PIN_FAILURES, window=PIN_WINDOW),
    EscalatingLockout("loyalty-card-pin", limit=PIN_FAILURES * BACKSTOP_FACTOR),
)
TOO_MANY_JOINS = "Too many cards were joined from this network. Please try again later."
# A holder whose browser lost the card's cookie (cleared, another phone) cannot join again with
# the same email: the way back is the card's own link, which the staff find on the dashboard.
LOST_CARD_HELP = (
    "This email address already has this card. If this browser no longer opens your card "
    "(cookies cleared, another phone), ask the staff: they can find your card by your email on "
    "their dashboard and give you back its link."
)


def _pin_wait(session: Session, runtime: Runtime, card_id: int, client: str, proven: bool) -> float:
    """Seconds until PINs may be typed again: the longer of the limits that refuse them, the
    address's own window and the card's lockout (which holds no staff device)."""
    own, backstop = pin_guard.per_client, pin_guard.per_secret
    wait = 0.0
    if own.count(session, runtime.keyring, card_id, client) > own.limit:
        wait = own.seconds_left(session, runtime.keyring, card_id, client)
    if not proven and backstop.count(session, runtime.keyring, card_id) > backstop.limit:
        wait = max(wait, backstop.seconds_left(session, runtime.keyring, card_id))
    return wait


def _too_many_pins(wait: float) -> str:
    """The refusal, with the time left: minutes, whole hours past an hour ("… in 1 day.")."""
    minutes = max(1, math.ceil(wait / 60))
    if minutes <= 60:
        return f"Too many wrong PINs. Try again in {minutes} minute{'' if minutes == 1 else 's'}."
    hours = math.ceil(minutes / 60)
    if hours % 24 == 0:
        days = hours // 24
        return f"Too many wrong PINs. Try again in {days} day{'' if days == 1 else 's'}."
    return f"Too many wrong PINs. Try again in {hours} hours."


def _join_limit(runtime: Runtime) -> Lockout | None:
    """Joins per card and client address an hour (OPENCOUPON_JOINS_PER_ADDRESS_PER_HOUR), so one
    address cannot fill a card with made-up holders. None: no limit."""
    per_hour = runtime.settings.joins_per_address_per_hour
    return Lockout("loyalty-join", limit=per_hour, window=dt.timedelta(hours=1)) if per_hour > 0 else None


# --- views ---------------------------------------------------------------------------------


def _qr_svg(data: str) -> str:
    return str(qr_codes.make(data).svg_inline(scale=5, dark="#1d2330"))


def _progress(card: LoyaltyCard, holder: LoyaltyHolder, issuable: list[dict[str, Any]]) -> dict[str, Any]:
    """The balance on the current card and the next reward an addition would really issue
    (`issuable`: the rewards not yet won on this card whose campaign gives a coupon now)."""
    unit = service.unit_of(card)
    balance = int(getattr(holder, unit))
    goal = card.reward_goal or 0
    upcoming = [r for r in issuable if r["threshold"] > balance]
    return {
        "unit": unit,
        "balance": balance,
        "goal": goal,
        "percent": min(100, round(100 * balance / goal)) if goal else 0,
        # Stamp cards show one slot per stamp when that fits on a phone screen.
        "slots": [i < balance for i in range(goal)] if card.type == "stamp" and 0 < goal <= 30 else [],
        "next": upcoming[0] if upcoming else None,
        "to_next": (upcoming[0]["threshold"] - balance) if upcoming else 0,
    }


# What the holder reads of each reward coupon's state (coupons.service.state's words).
WON_STATE_LABELS = {
    "open": "Open",
    "claimed": "Open",
    "scheduled": "Not valid yet",
    "validated": "Used",
    "expired": "Expired",
    "voided": "Voided",
    "removed": "Removed",
    "locked": "Locked",
    "inactive": "Not active",
}


def _won_with_states(
    session: Session,
    runtime: Runtime,
    card: LoyaltyCard,
    grants: Sequence[tuple[LoyaltyRewardGrant, LoyaltyReward, CouponSession | None, Campaign | None]],
) -> list[dict[str, Any]]:
    """The holder's reward coupons, each with its state now (open, validated, expired, …), so the
    holder can tell which ones can still be redeemed."""
    won = service.rewards_won(runtime, grants)
    tz = coupons_service.account_zone(session, card.account_id)
    now = utcnow()
    for item, (grant, _, coupon, campaign) in zip(won, grants, strict=True):
        word = coupons_service.state(campaign, coupon, tz, now) if coupon and campaign else ""
        item["state"] = word
        item["state_label"] = WON_STATE_LABELS.get(word, "")
        # In the account's time zone, named, as the coupon pages show their dates.
        local = expiry.utc_to_local(grant.created_at, tz).strftime("%d %B %Y %H:%M")
        item["created_local"] = f"{local} ({tz})"
    return won


def _card_context(
    session: Session, runtime: Runtime, card: LoyaltyCard, holder: LoyaltyHolder
) -> dict[str, Any]:
    rewards = repo.rewards(session, card.id)
    campaigns = repo.campaigns_by_id(session, {r.campaign_id for r in rewards if r.campaign_id})
    reward_list = [service.reward_public(r, campaigns) for r in rewards]
    grants = repo.grants_with_sessions(session, holder.id)
    # A reward is issued once per card (a grant per reward row and cycle): one already won on the
    # current card is not issued again when the balance climbs back to it after a spend or an
    # expiry, and one whose campaign gives no coupon now is not issued either.
    won_on_this_card = {grant.reward_id for grant, _, _, _ in grants if grant.cycle == holder.cycle}
    reachable, _ = service.reachable_rewards(session, card, utcnow())
    issuable_ids = {r.id for r in reachable} - won_on_this_card
    issuable = [public for r, public in zip(rewards, reward_list, strict=True) if r.id in issuable_ids]
    staff_url = runtime.url(f"/l/{card.code}/staff?holder={holder.short_code}")
    return {
        "brand": branding.for_account(session, card.account_id),
        "card": card,
        "holder": holder,
        "rewards": reward_list,
        "rewards_won_on_this_card": [r.id in won_on_this_card for r in rewards],
        "progress": _progress(card, holder, issuable),
        "won": _won_with_states(session, runtime, card, grants),
        "qr_svg": _qr_svg(staff_url),
        "staff_url": staff_url,
        "can_stamp": bool(card.pin_digest) and card.active and not holder.voided,
        "push_target": {"kind": "loyalty_holder", "code": holder.token},
    }


def _holder_json(runtime: Runtime, ctx: dict[str, Any]) -> dict[str, Any]:
    card: LoyaltyCard = ctx["card"]
    holder: LoyaltyHolder = ctx["holder"]
    progress = ctx["progress"]
    return {
        "card": {
            "id": card.id,
            "code": card.code,
            "name": card.name,
            "type": card.type,
            "active": card.active,
        },
        "user": service.holder_v4(runtime, card, holder),
        "balance": progress["balance"],
        "unit": progress["unit"],
        "reward_goal": card.reward_goal,
        "rewards": ctx["rewards"],
        "won": [
            {k: v for k, v in w.items() if k not in ("path", "state_label", "created_local")}
            for w in ctx["won"]
        ],
    }


def _not_found(request: Request) -> Response:
    if web.wants_json(request):
        return JSONResponse({"error": "Loyalty card not found."}, status_code=404)
    return render_error_page(request, 404, "Card not found", "There is no loyalty card at this address.")


def _card_past_gate(session: Session, request: Request, code: str) -> LoyaltyCard | Response:
    """The card at this address, or the answer that stops here: not found, or the gate's (a card
    in a login or paid directory is for its members only, coupons/gates.py)."""
    card = repo.card_by_code(session, code)
    if card is None:
        return _not_found(request)
    locked = gates.check(session, request, card)
    return card if locked is None else locked


@router.get("/l/{code}")
def join_page(request: Request, code: str) -> Response:
    runtime = web.runtime_of(request)
    with runtime.db.read() as session:
        card = _card_past_gate(session, request, code)
        if not isinstance(card, LoyaltyCard):
            return card
        remembered = request.cookies.get(f"oc_l_{card.code}", "")
        if remembered and repo.holder_by_token(session, card.id, remembered) is not None:
            # The holder's own card address, a bearer token: kept by no cache.
            return private_page(RedirectResponse(f"/l/{card.code}/{remembered}", status_code=303))
        return _join_response(request, runtime, card, {}, "", 200)


def _join_response(
    request: Request, runtime: Runtime, card: LoyaltyCard, values: dict[str, str], error: str, status: int
) -> Response:
    cookie = web.csrf_cookie(request)
    required = [f for f in card.join_fields.split(",") if f]
    if web.wants_json(request):
        body: dict[str, Any] = {
            "card": {
                "id": card.id,
                "code": card.code,
                "name": card.name,
                "type": card.type,
                "description": card.description,
                "active": card.active,
                "reward_goal": card.reward_goal,
            },
            "join_fields": required,
            "form_token": web.form_token(runtime, cookie),
        }
        if error:
            body["error"] = error
        return private_page(web.with_csrf_cookie(JSONResponse(body, status_code=status), request, cookie))
    response = render(
        request,
        "loyalty/join.html",
        {
            "brand": branding.of(runtime, card),
            "card": card,
            "title": card.name,
            "required": required,
            "values": values,
            "error": error,
            "form_token": web.form_token(runtime, cookie),
        },
        status_code=status,
    )
    # The form's token and what the person typed: kept by no cache (pages.private_page).
    return private_page(web.with_csrf_cookie(response, request, cookie))


@router.post("/l/{code}/join")
def join(
    request: Request,
    code: str,
    form_token: str = Form(""),
    first_name: str = Form(""),
    last_name: str = Form(""),
    email: str = Form(""),
    phone: str = Form(""),
) -> Response:
    runtime = web.runtime_of(request)
    values = {
        "first_name": first_name.strip()[:100],
        "last_name": last_name.strip()[:100],
        "email": email.strip()[:254],
        "phone": phone.strip()[:40],
    }
    error = ""
    status = 422
    unusable = web.fields_with_control_characters(values)
    values.update(dict.fromkeys(unusable, ""))  # not shown back as sent
    with runtime.db.transaction() as session:
        card = _card_past_gate(session, request, code)
        if not isinstance(card, LoyaltyCard):
            return card
        nonce = web.form_nonce(runtime, request, form_token, max_age=FORM_MAX_AGE)
        if nonce is None:
            error = web.csrf_refusal(request)  # expired, or a browser that sends no cookies
        elif not card.active:
            error = "This card is not active at the moment."
        elif unusable:
            names = ", ".join(name.replace("_", " ") for name in unusable)
            error = f"Please remove the invisible control characters from: {names}."
        else:
            missing = [f for f in card.join_fields.split(",") if f and not values[f]]
            if missing:
                error = "Please fill in: " + ", ".join(m.replace("_", " ") for m in missing) + "."
        limit = _join_limit(runtime)
        client = web.client_key(request)
        if not error and nonce is not None:
            try:
                holder = _join_once(session, runtime, card, nonce, values, limit, client)
            except _TooManyJoins:
                refused = _join_response(request, runtime, card, values, TOO_MANY_JOINS, 429)
                wait = limit.seconds_left(session, runtime.keyring, card.id, client) if limit else 0.0
                refused.headers["Retry-After"] = retry_after_header(wait)
                return refused
            except ApiError as err:
                # 306/307: the same form sent again with other values, or while the first is
                # still being stored (as a counter form's nonce answers, `_collect`).
                status = 409 if err.code in (306, 307) else 422
                error = {
                    304: LOST_CARD_HELP,
                    305: "Please enter a valid email address.",
                }.get(err.code, err.description)
            else:
                target = f"/l/{card.code}/{holder.token}"
                response: Response = RedirectResponse(target, status_code=303)
                if web.wants_json(request):
                    response = JSONResponse(
                        {"user": service.holder_v4(runtime, card, holder), "url": runtime.url(target)},
                        status_code=201,
                    )
                response.set_cookie(
                    f"oc_l_{card.code}",
                    holder.token,
                    httponly=True,
                    samesite="lax",
                    max_age=400 * 86400,
                    secure=web.is_secure(request),
                )
                return private_page(response)
        return _join_response(request, runtime, card, values, error, status)


class _TooManyJoins(Exception):
    """The join limit refused the form: raised inside the join's savepoint to give its key back."""


def _join_once(
    session: Session,
    runtime: Runtime,
    card: LoyaltyCard,
    nonce: str,
    values: dict[str, str],
    limit: Lockout | None,
    client: str,
) -> LoyaltyHolder:
    """The holder this form made: a new one, or, sent again (an answer lost on the way, a double
    tap), the one its first sending made. The form's nonce is its idempotency key."""
    key = f"loyalty-join:{nonce}"
    # Keyed, as the API's request fingerprints: a copy of idempotency_records must not tell by
    # hashing guesses which email joined which card.
    fingerprint = runtime.keyring.digest("loyalty-join:" + json.dumps([card.id, values], sort_keys=True))
    try:
        return _join_in_savepoint(session, runtime, card, key, fingerprint, values, limit, client)
    except ApiError:
        # A refused join gives its key back (the savepoint) but still counts toward the join
        # limit: otherwise one form could ask about any number of emails ("already has this card").
        if limit is not None:
            limit.add(session, runtime.keyring, card.id, client)
        raise


def _join_in_savepoint(
    session: Session,
    runtime: Runtime,
    card: LoyaltyCard,
    key: str,
    fingerprint: str,
    values: dict[str, str],
    limit: Lockout | None,
    client: str,
) -> LoyaltyHolder:
    # A savepoint: a refused join (the email already on the card, the join limit) gives the key
    # back, so the same form can be sent again once the reason is gone.
    with session.begin_nested():
        kept = idempotency.claim(
            session,
            card.account_id,
            key,
            fingerprint,
            ttl=dt.timedelta(hours=runtime.settings.idempotency_ttl_hours),
        )
        if kept is not None:
            token = json.loads(idempotency.kept_answer(runtime.keyring, kept))["token"]
            first = repo.holder_by_token(session, card.id, token)
            if first is None:  # gone since: the form cannot make another
                raise ApiError(308, "This form has already been used. Please open the card's page again.")
            return first
        # Counted after the claim, so a form sent again does not count as another join (a join
        # refused below is counted again by the caller, once the savepoint is gone).
        if limit is not None and not limit.attempt(session, runtime.keyring, card.id, client):
            raise _TooManyJoins
        holder = service.create_holder(
            session,
            runtime,
            card.account_id,
            card,
            service.HolderFields(
                first_name=values["first_name"],
                last_name=values["last_name"],
                email=values["email"],
                phone=values["phone"],
            ),
            utcnow(),
        )
        idempotency.store(
            session, runtime.keyring, card.account_id, key, 303, json.dumps({"token": holder.token})
        )
        return holder


@router.get("/l/{code}/staff")
def staff_page(request: Request, code: str, holder: str = "") -> Response:
    runtime = web.runtime_of(request)
    with runtime.db.read() as session:
        card = repo.card_by_code(session, code)
        if card is None:
            return _not_found(request)
        return _staff_response(request, runtime, card, {"holder": holder[:6].upper()}, None, "", 200)


def _staff_response(
    request: Request,
    runtime: Runtime,
    card: LoyaltyCard,
    values: dict[str, str],
    result: dict[str, Any] | None,
    error: str,
    status: int,
    retry_after: float = 0.0,
) -> Response:
    response = _staff_answer(request, runtime, card, values, result, error, status)
    if retry_after:
        response.headers["Retry-After"] = retry_after_header(retry_after)
    staff_device.attach(response, request)  # a right PIN on this page: the counter's cookie
    return response


def _staff_answer(
    request: Request,
    runtime: Runtime,
    card: LoyaltyCard,
    values: dict[str, str],
    result: dict[str, Any] | None,
    error: str,
    status: int,
) -> Response:
    if web.wants_json(request):
        if error:
            return private_page(JSONResponse({"error": error}, status_code=status))
        return private_page(JSONResponse(result or {}, status_code=status))
    cookie = web.csrf_cookie(request)
    response = render(
        request,
        "loyalty/staff.html",
        {
            "brand": branding.of(runtime, card),
            "card": card,
            "title": f"{card.name}: staff",
            "unit": service.unit_of(card),
            "values": values,
            "result": result,
            "error": error,
            "enabled": bool(card.pin_digest) and card.active,
            "form_token": web.form_token(runtime, cookie),
        },
        status_code=status,
    )
    return web.with_csrf_cookie(private_page(response), request, cookie)


@dataclass
class _Outcome:
    result: dict[str, Any] | None = None
    error: str = ""
    status: int = 200
    retry_after: float = 0.0  # seconds, for a refusal by the PIN limits


def _collect(
    request: Request,
    runtime: Runtime,
    code: str,
    find_holder: Any,
    token: str,
    pin: str,
    amount_raw: str,
    source: str,
) -> tuple[LoyaltyCard | None, _Outcome]:
    """Add stamps/points from a counter form, once per form (the nonce is the idempotency key)."""
    client = web.client_key(request)
    # Digits only: int() also takes "1_0" (10) and " ٣" (3).
    text = amount_raw.strip()
    amount = int(text) if ids.is_number(text) and len(text) <= 9 else 0
    with runtime.db.transaction() as session:
        card = repo.card_by_code(session, code)
        if card is None:
            return None, _Outcome(status=404)
        nonce = web.form_nonce(runtime, request, token, max_age=FORM_MAX_AGE)
        if nonce is None:
            return card, _Outcome(error=web.csrf_refusal(request), status=403)
        if not card.active or not card.pin_digest:
            return card, _Outcome(error="Collecting on this card is not possible at the moment.", status=409)
        # Counted before it is checked, given back when right (opencoupon.kit.lockout).
        now = utcnow()
        proven = staff_device.recognised(request, runtime, card, now)
        if not pin_guard.attempt(session, runtime.keyring, card.id, client, proven=proven):
            wait = _pin_wait(session, runtime, card.id, client, proven)
            return card, _Outcome(error=_too_many_pins(wait), status=429, retry_after=wait)
        if not service.pin_matches(runtime, card, pin.strip()):
            return card, _Outcome(error="Wrong PIN.", status=403)
        pin_guard.refund(session, runtime.keyring, card.id, client, proven=proven)
        if source == "staff":  # the card's staff page is the counter's; the card page the holder's
            staff_device.grant(request, runtime, card, now)
        if not 1 <= amount <= MAX_FORM_AMOUNT:
            return card, _Outcome(error=f"Enter an amount from 1 to {MAX_FORM_AMOUNT}.", status=422)
        holder = find_holder(session, card)
        if holder is None:
            return card, _Outcome(error="No card holder with this code.", status=404)
        fingerprint = hashlib.sha256(f"{card.id}:{holder.id}:{amount}".encode()).hexdigest()
        try:
            replay = idempotency.claim(
                session,
                card.account_id,
                f"loyalty-form:{nonce}",
                fingerprint,
                ttl=dt.timedelta(hours=runtime.settings.idempotency_ttl_hours),
            )
        except ApiError as err:
            return card, _Outcome(error=err.description, status=409)
        if replay is not None:
            return card, _Outcome(result=json.loads(idempotency.kept_answer(runtime.keyring, replay)))
        try:
            with session.begin_nested():
                change = service.change_balance(
                    session, runtime, card, holder, amount, source=source, now=utcnow()
                )
        except ApiError as err:
            # Refusals are answers too: a retry of the same form gets the same one.
            message = "This card has been voided and cannot collect." if holder.voided else err.description
            body: dict[str, Any] = {"error": message}
            idempotency.store(
                session, runtime.keyring, card.account_id, f"loyalty-form:{nonce}", 409, json.dumps(body)
            )
            return card, _Outcome(result=body)
        body = {
            "user": str(holder.id),
            "code": holder.short_code,
            "name": f"{holder.first_name} {holder.last_name[:1]}".strip(),
            "unit": change.unit,
            "added": change.delta,
            "balance": change.balance,
            "cards_completed": change.cards_completed,
            "rewards": [
                {"name": r.name, "campaign": r.campaign, "couponsession": r.couponsession, "url": r.url}
                for r in change.rewards
            ],
        }
        idempotency.store(
            session, runtime.keyring, card.account_id, f"loyalty-form:{nonce}", 200, json.dumps(body)
        )
        return card, _Outcome(result=body)


@router.post("/l/{code}/staff")
def staff_collect(
    request: Request,
    code: str,
    form_token: str = Form(""),
    holder: str = Form(""),
    pin: str = Form(""),
    amount: str = Form("1"),
) -> Response:
    runtime = web.runtime_of(request)
    short = holder.strip().upper()

    def find(session: Session, card: LoyaltyCard) -> LoyaltyHolder | None:
        if not service.SHORT_CODE.match(short):
            return None
        return repo.holder_by_short_code(session, card.id, short)

    card, outcome = _collect(request, runtime, code, find, form_token, pin, amount, "staff")
    if card is None:
        return _not_found(request)
    result = outcome.result
    if result is not None and "error" in result:
        outcome = _Outcome(error=str(result["error"]), status=409)
        result = None
    values = {"holder": short if outcome.error else "", "amount": amount}
    return _staff_response(
        request, runtime, card, values, result, outcome.error, outcome.status, outcome.retry_after
    )


def _added(raw: str) -> int:
    """The stamps shown as just added (`?added=`, set by the page's own stamping; also the cards it
    completed and the rewards it issued): digits only, at most MAX_FORM_AMOUNT; anything else shows
    none (it was an API error envelope, not a page)."""
    return min(int(raw), MAX_FORM_AMOUNT) if ids.is_number(raw) and len(raw) <= 9 else 0


@router.get("/l/{code}/{token}")
def card_page(
    request: Request, code: str, token: str, added: str = "", completed: str = "", reached: str = ""
) -> Response:
    runtime = web.runtime_of(request)
    with runtime.db.transaction() as session:
        card = repo.card_by_code(session, code)
        holder = repo.holder_by_token(session, card.id, token) if card else None
        if card is None or holder is None:
            return _not_found(request)
        locked = gates.check(session, request, card)
        if locked is not None:
            return locked
        service.apply_expiry(session, runtime, card, holder, utcnow())
        ctx = _card_context(session, runtime, card, holder)
    if web.wants_json(request):
        return private_page(JSONResponse(_holder_json(runtime, ctx)))
    cookie = web.csrf_cookie(request)
    ctx.update(
        title=card.name,
        form_token=web.form_token(runtime, cookie),
        added=_added(added),
        completed=_added(completed),
        # The rewards the page's own stamping just issued: the newest of the holder's own coupons.
        reached=ctx["won"][: _added(reached)],
        error="",
    )
    # The card page holds the staff PIN form: no frames, as on the staff pages; its address is the
    # holder's bearer token: no cache keeps it.
    response = private_page(render(request, "loyalty/card.html", ctx))
    return web.with_csrf_cookie(response, request, cookie)


@router.post("/l/{code}/{token}/collect")
def card_collect(
    request: Request,
    code: str,
    token: str,
    form_token: str = Form(""),
    pin: str = Form(""),
    amount: str = Form("1"),
) -> Response:
    runtime = web.runtime_of(request)

    def find(session: Session, card: LoyaltyCard) -> LoyaltyHolder | None:
        return repo.holder_by_token(session, card.id, token)

    card, outcome = _collect(request, runtime, code, find, form_token, pin, amount, "pin")
    if card is None or outcome.status == 404:
        return _not_found(request)
    result = outcome.result or {}
    # A refusal of the change itself ("error" in the result) is a 409, as the HTML says.
    refused_status = outcome.status if outcome.error else 409
    # A refusal by the PIN limits says when PINs may be typed again.
    wait_header = {"Retry-After": retry_after_header(outcome.retry_after)} if outcome.retry_after else {}
    if web.wants_json(request):
        if outcome.error or "error" in result:
            refusal = JSONResponse(
                {"error": outcome.error or result["error"]}, status_code=refused_status, headers=wait_header
            )
            return private_page(refusal)
        return private_page(JSONResponse(result))
    if outcome.error or "error" in result:
        with runtime.db.read() as session:
            fresh_card = repo.card_by_code(session, code)
            holder = repo.holder_by_token(session, card.id, token)
            if fresh_card is None or holder is None:
                return _not_found(request)
            ctx = _card_context(session, runtime, fresh_card, holder)
        cookie = web.csrf_cookie(request)
        ctx.update(
            title=card.name,
            form_token=web.form_token(runtime, cookie),
            added=0,
            completed=0,
            reached=[],
            error=outcome.error or str(result["error"]),
        )
        status = refused_status
        page = render(request, "loyalty/card.html", ctx, status_code=status)
        page.headers.update(wait_header)
        return web.with_csrf_cookie(private_page(page), request, cookie)
    # What the stamp did, for the card page to say: the cards it completed and the rewards it issued.
    answer = f"added={result.get('added', 0)}"
    if result.get("cards_completed"):
        answer += f"&completed={result['cards_completed']}"
    if result.get("rewards"):
        answer += f"&reached={len(result['rewards'])}"
    return RedirectResponse(f"/l/{card.code}/{token}?{answer}", status_code=303)
