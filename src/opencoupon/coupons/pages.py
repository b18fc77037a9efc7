"""Consumer pages: open a coupon, show the session, claim it, and validate it at the counter (PIN
on the consumer's phone, the staff page with the 6-character widget code or a custom validation
code, or the PIN-protected page behind the session's QR code). HTML without JavaScript, or JSON
when the request asks for `Accept: application/json`."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.requests import Request

from opencoupon import branding, web
from opencoupon.coupons import expiry, gates, repository, service, staff_device, views
from opencoupon.coupons.sessions import session_path
from opencoupon.errors import ApiError, error_body
from opencoupon.kit import idempotency, ids
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import token
from opencoupon.kit.dates import fmt, parse_birthday
from opencoupon.kit.lockout import BACKSTOP_FACTOR, EscalatingLockout, GuessLimit, Lockout
from opencoupon.kit.ratelimit import retry_after_header
from opencoupon.models import Account, Campaign, CouponSession
from opencoupon.pages import private_page, render, render_error_page
from opencoupon.runtime import Runtime
from opencoupon.web import form_text, wants_json

router = APIRouter(include_in_schema=False)

DEVICE_COOKIE = "oc_device"
COOKIE_AGE = 400 * 24 * 3600
# What the server issues as the device cookie: token(24), 32 URL-safe characters. A cookie of
# another shape was made up by the client (e.g. `reg_6`, the device ID of a directory member's
# sessions) and is taken as no cookie.
_DEVICE = re.compile(r"^[A-Za-z0-9_-]{32}$")
_CODE = re.compile(r"^[A-Za-z0-9]{1,32}$")

MESSAGES = {
    "removed": "This coupon is no longer available.",
    "voided": "This coupon has been voided.",
    "locked": "This coupon is locked. Ask the staff to unlock it.",
    "inactive": "This campaign is not active.",
    "scheduled": "This campaign has not started yet.",
    "validated": "This coupon has already been validated.",
    "expired": "This coupon has expired.",
    "claimed": "",
    "open": "",
}
METHOD_NOT_USED = "This validation method is not used for this coupon."
# Without a PIN nobody could pass the PIN check: say what to do instead of "Wrong PIN."
NO_PIN = "This campaign has no staff PIN: set one on the dashboard."
NOTICES = {"claimed": "Your coupon is claimed.", "validated": "Coupon validated. Thank you!"}
# With require_claim, what the phone and the scan page show instead of a PIN form that could only
# refuse (service.validate refuses an unclaimed coupon with these words).
CLAIM_FIRST = "This coupon must be claimed before it can be validated."
CLAIM_FIRST_ON_STAFF_PAGE = "Coupons of this campaign must be claimed before they can be validated."


# Wrong PINs, ten per 15 minutes per campaign and client address, and a hundred a day per campaign
# from all addresses, each time locking the campaign's PINs twice as long (15 minutes up to a day),
# counted in the database (shared by every API process; opencoupon.kit.lockout). A device with the
# staff device cookie (right PIN lately) is held by its address's limit only (staff_device).
# One count for every page where the campaign's staff PIN is typed: the staff page, the PIN on the
# phone and the QR scan page (five wrong PINs also lock one coupon, but anyone can open more
# coupons of the campaign to try more PINs). A count per page gave one address ten per page.
pin_lockout = GuessLimit(Lockout("staff-pin"), EscalatingLockout("campaign-pin", limit=10 * BACKSTOP_FACTOR))
TOO_MANY_OPENS = "Too many coupons were opened from this network. Please try again later."


def _pin_wait(s: Session, runtime: Runtime, campaign_id: int, client: str) -> float:
    """Seconds until PINs may be typed again: the window of the limit that refused, the client's
    own when it is over it, otherwise the campaign's from all addresses."""
    own = pin_lockout.per_client
    if own.count(s, runtime.keyring, campaign_id, client) > own.limit:
        return own.seconds_left(s, runtime.keyring, campaign_id, client)
    return pin_lockout.per_secret.seconds_left(s, runtime.keyring, campaign_id)


def _too_many_pins(wait: float) -> str:
    minutes = max(1, math.ceil(wait / 60))
    if minutes > 60:  # a campaign's longer lockouts, in whole hours
        minutes = math.ceil(minutes / 60) * 60
    return f"Too many wrong PINs. Try again in {_duration_words(minutes)}."


def _open_limit(runtime: Runtime) -> Lockout | None:
    """New sessions per campaign and client address an hour (OPENCOUPON_OPENS_PER_ADDRESS_PER_HOUR):
    every new session takes the next code of an imported custom-code list and counts as an open,
    so one address must not be able to drain a list or inflate the statistics. None: no limit."""
    per_hour = runtime.settings.opens_per_address_per_hour
    return Lockout("coupon-open", limit=per_hour, window=dt.timedelta(hours=1)) if per_hour > 0 else None


@dataclass
class Csrf:
    """This browser's CSRF cookie and the token of the form being shown (see opencoupon.web)."""

    cookie: str
    form_token: str

    @classmethod
    def for_request(cls, request: Request, runtime: Runtime) -> Csrf:
        cookie = web.csrf_cookie(request)
        return cls(cookie, web.form_token(runtime, cookie))

    def attach(self, response: Response, request: Request) -> Response:
        return web.with_csrf_cookie(response, request, self.cookie)


def csrf_ok(request: Request, runtime: Runtime, form_token: str) -> bool:
    return web.form_nonce(runtime, request, form_token) is not None


@dataclass
class Outcome:
    """What a page shows: an HTML template with context, or a JSON body, with one status."""

    status: int = 200
    template: str = "coupons/session.html"
    context: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    redirect: str | None = None
    gate: Response | None = None
    device: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _respond(request: Request, out: Outcome, csrf: Csrf | None = None) -> Response:
    if out.gate is not None:
        return out.gate
    response: Response
    if out.redirect is not None:
        response = RedirectResponse(out.redirect, status_code=303)
    elif wants_json(request):
        response = JSONResponse(out.json, status_code=out.status)
    else:
        response = render(request, out.template, out.context, status_code=out.status)
    response.headers.update(out.headers)
    if out.device:
        response.set_cookie(
            DEVICE_COOKIE,
            out.device,
            max_age=COOKIE_AGE,
            httponly=True,
            samesite="lax",
            secure=web.is_secure(request),
        )
    staff_device.attach(response, request)
    if csrf is not None:
        csrf.attach(response, request)
    return response


# ---------------------------------------------------------------- a form's answer after its redirect

# Every HTML answer to a staff PIN form (the staff page, the QR scan page, the PIN on the phone) is
# a 303 to a GET of the page, so reloading it posts nothing again: no second validation, no wrong
# PIN counted twice. What the form answered goes along in the address for a few minutes,
# encrypted (the staff page's answer names the coupon's code) and bound to that page.
RESULT_PARAM = "result"
RESULT_MAX_AGE = dt.timedelta(minutes=10)
_RESULT_MAX_LENGTH = 4096
# What the staff typed in the code field goes back into it when no longer than a code can be
# (a megabyte typed is not carried into an address); the page's messages are short.
_ENTERED_MAX_LENGTH = 200
_MESSAGE_MAX_LENGTH = 500
# The same form sent again (a double tap, the browser's "resend") answers its first sending; sent
# again for another coupon or amount, it is refused.
FORM_USED = "This form was already sent. Please use the new form."
FORM_IN_PROGRESS = "This form is being sent already. Please wait a moment and reload the page."


def _result_redirect(request: Request, runtime: Runtime, out: Outcome, page: str) -> Outcome:
    """A form's HTML answer as a 303 to `page` carrying it; JSON answers, gates and redirects go as
    they are."""
    if request.method != "POST" or wants_json(request) or out.gate is not None or out.redirect is not None:
        return out
    entered = str(out.context.get("entered") or "")
    result = {
        "page": page,
        "at": utcnow().isoformat(),
        "status": out.status,
        "error": str(out.context.get("error") or "")[:_MESSAGE_MAX_LENGTH],
        "notice": str(out.context.get("notice") or "")[:_MESSAGE_MAX_LENGTH],
        "entered": entered if len(entered) <= _ENTERED_MAX_LENGTH else "",
        "retry_after": out.headers.get("Retry-After", ""),
    }
    sealed = runtime.keyring.encrypt(json.dumps(result))
    return Outcome(redirect=f"{page}?{urlencode({RESULT_PARAM: sealed})}", device=out.device)


def _read_result(request: Request, runtime: Runtime, page: str) -> dict[str, Any] | None:
    """The answer a form's redirect to `page` carries: None when there is none, or it is made up,
    for another page, or too old."""
    sealed = request.query_params.get(RESULT_PARAM, "")
    text = runtime.keyring.decrypt(sealed) if 0 < len(sealed) <= _RESULT_MAX_LENGTH else None
    try:
        result = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(result, dict) or result.get("page") != page:
        return None
    made = dt.datetime.fromisoformat(str(result.get("at")))
    now = utcnow()
    return result if made <= now + dt.timedelta(minutes=1) and now - made <= RESULT_MAX_AGE else None


def _with_result(request: Request, runtime: Runtime, out: Outcome, page: str) -> Outcome:
    """The page's GET showing the answer its form's redirect carried. A page that refuses by itself
    (no PIN set, method not used) keeps its own answer; JSON never gets such a redirect."""
    if wants_json(request) or out.gate is not None or out.redirect is not None or out.status != 200:
        return out
    result = _read_result(request, runtime, page)
    if result is None:
        return out
    out.status = int(result["status"])
    for name in ("error", "notice", "entered"):
        if result.get(name):
            out.context[name] = str(result[name])
    if result.get("retry_after"):
        out.headers["Retry-After"] = str(result["retry_after"])
    return out


def _form_page(request: Request, runtime: Runtime, out: Outcome, page: str) -> Outcome:
    """A POST's HTML answer redirected to `page`; a GET of `page` with the answer it carries."""
    if request.method == "POST":
        return _result_redirect(request, runtime, out, page)
    return _with_result(request, runtime, out, page)


def _form_key(nonce: str) -> str:
    return f"coupon-validate:{nonce}"


def _claim_form(
    s: Session, runtime: Runtime, campaign: Campaign, nonce: str, asked: list[Any]
) -> dict[str, Any] | None:
    """Claim the validation form's nonce (kit.idempotency, as the loyalty forms do) for what it asks
    (`asked`: method, coupon, amount): None the first time, in the validation's own transaction
    (a refused validation gives it back); the answer its first sending kept when the same form
    comes again."""
    fingerprint = runtime.keyring.digest("coupon-validate:" + json.dumps([campaign.id, *asked]))
    ttl = dt.timedelta(hours=runtime.settings.idempotency_ttl_hours)
    try:
        kept = idempotency.claim(s, campaign.account_id, _form_key(nonce), fingerprint, ttl=ttl)
    except ApiError as err:  # 306: sent again for another coupon; 307: the first still running
        raise ApiError(308, FORM_USED if err.code == 306 else FORM_IN_PROGRESS, http_status=409) from err
    return None if kept is None else dict(json.loads(idempotency.kept_answer(runtime.keyring, kept)))


def _keep_answer(
    s: Session, runtime: Runtime, campaign: Campaign, nonce: str, answer: dict[str, str]
) -> None:
    """What a form sending again is answered: its message only (the coupon's data, its holder's
    name and email, is read afresh, so none of it is kept here)."""
    idempotency.store(s, runtime.keyring, campaign.account_id, _form_key(nonce), 200, json.dumps(answer))


def _not_found(request: Request, what: str) -> Response:
    if wants_json(request):
        code = 502 if what == "campaign" else 505
        text = service.CAMPAIGN_NOT_FOUND if code == 502 else service.SESSION_NOT_FOUND
        return JSONResponse(error_body(404, [code], [text]), status_code=404)
    return render_error_page(request, 404, "Coupon not found", "There is no coupon at this address.")


def _message_outcome(
    status: int, title: str, message: str, code: int = 308, brand: branding.PageBrand | None = None
) -> Outcome:
    return Outcome(
        status=status,
        template="coupons/message.html",
        context={"title": title, "message": message, "brand": brand},
        json=error_body(status, [code], [message]),
    )


def _duration_words(minutes: int) -> str:
    for size, unit in ((24 * 60, "day"), (60, "hour"), (1, "minute")):
        if minutes % size == 0:
            count = minutes // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{minutes} minutes"


def _expiry_note(campaign: Campaign, row: CouponSession) -> str:
    """What a coupon without an end yet says about its window (after_claim, not claimed yet)."""
    if campaign.expiry_mode == "after_claim" and campaign.expiry_minutes and row.claimed_at is None:
        return f"Valid for {_duration_words(campaign.expiry_minutes)} once claimed."
    return ""


def _done_notice(done: str, word: str, row: CouponSession) -> str:
    """The notice a form's redirect asks for with `?done=`, only when the coupon is in that state:
    anyone can add `?done=validated` to a link, and a coupon must not say "validated" unless it is
    (validated as many times as allowed, or at least once and still usable)."""
    if done not in NOTICES:
        return ""
    if done == "validated":
        holds = word == "validated" or (word in ("open", "claimed") and row.validation_count > 0)
    else:
        holds = word == done
    return NOTICES[done] if holds else ""


def _waits_for_claim(campaign: Campaign, row: CouponSession, word: str) -> bool:
    """require_claim and a coupon that could be validated once claimed, not claimed yet."""
    return campaign.require_claim and row.claimed_at is None and word == "open"


def _session_context(
    s: Session,
    runtime: Runtime,
    campaign: Campaign,
    row: CouponSession,
    csrf: Csrf,
    now: dt.datetime,
    *,
    notice: str = "",
    done: str = "",
    error: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The page's context and the JSON answer. `notice` is shown as given (the form just did it);
    `done` names the notice a redirect asked for, shown only when the state agrees."""
    # Held for the whole function: the session's identity map keeps objects only while they are
    # referenced, and the time zone, the brand and the answer's data all read this row.
    owner = s.get(Account, campaign.account_id)
    tz = service.account_zone(s, campaign.account_id)
    word = service.state(campaign, row, tz, now)
    notice = notice or _done_notice(done, word, row)
    limit = expiry.session_expiry(campaign, row, tz)
    form = campaign.claim_form or {}
    path = session_path(campaign, row)
    methods = service.methods_of(campaign)
    # Another member given a member's link passes the gate; the forms are not offered to them
    # once the member who owns the coupon has lost access (the forms would refuse).
    refusal = gates.owner_refusal(s, campaign, row, action="claimed or validated")
    context = {
        "title": campaign.title or campaign.name,
        "brand": branding.page_brand(owner.branding, owner.company_name) if owner else None,
        "campaign": campaign,
        "row": row,
        "state": word,
        "message": MESSAGES[word],
        "notice": notice,
        "error": error or refusal or "",
        "expires_local": expiry.last_valid_moment(limit, tz).strftime("%d %B %Y %H:%M") if limit else "",
        "expiry_note": _expiry_note(campaign, row) if limit is None else "",
        "timezone": str(tz),
        "validated_local": expiry.utc_to_local(row.validated_at, tz).strftime("%d %B %Y %H:%M")
        if row.validated_at
        else "",
        "claim_fields": list(form.get("fields", [])),
        "claim_labels": CLAIM_LABELS,
        "claim_limits": CLAIM_LIMITS,
        "custom_field_limit": CUSTOM_FIELD_LIMIT,
        "required_fields": list(form.get("required", [])),
        "custom_fields": list(form.get("custom_fields", [])),
        "consent_text": form.get("consent_text", ""),
        "typed": {},
        "can_claim": word == "open" and row.validation_count == 0 and refusal is None,
        "can_validate": refusal is None
        and word in ("open", "claimed")
        and not _waits_for_claim(campaign, row, word)
        and "pin" in methods
        and bool(campaign.pin_digest),
        # Where the PIN form will be once the coupon is claimed: staff are told why it is not there.
        "claim_first": CLAIM_FIRST
        if refusal is None
        and _waits_for_claim(campaign, row, word)
        and "pin" in methods
        and campaign.pin_digest
        else "",
        "csrf": csrf.form_token,
        "path": path,
        "qr_svg": f"/qr{path}/scan.svg",
        "shows_qr": "qr" in methods,
        "push_target": {"kind": "coupon_session", "code": row.code},
    }
    if word == "removed":
        # What the page shows, no more: a link sent to the wrong person and then removed must not
        # hand out their name, email, phone or codes to whoever holds its address.
        data: dict[str, Any] = {
            "campaign": service.campaign_public_id(campaign),
            "session": row.code,
            "data": {"status": {"removed": "1", "removed_date_utc": fmt(row.removed_at)}},
        }
    else:
        data = views.session_data(s, runtime, campaign, row, now)
    data.update({"state": word, "message": MESSAGES[word] or notice})
    return context, data


def _load(s: Session, code: str, session_code: str) -> tuple[Campaign, CouponSession] | None:
    """The campaign and session at this address; None when either is missing."""
    if not _CODE.match(code) or not _CODE.match(session_code):
        return None
    campaign = repository.campaign_by_code(s, code)
    if campaign is None:
        return None
    row = repository.session_in_campaign(s, campaign.id, session_code)
    return None if row is None else (campaign, row)


def _context_with_error(
    runtime: Runtime, code: str, session_code: str, csrf: Csrf, now: dt.datetime, error: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The session's page again after a form it refused, the refusal shown on it."""
    with runtime.db.read() as s:
        found = _load(s, code, session_code)
        assert found is not None
        campaign, row = found
        return _session_context(s, runtime, campaign, row, csrf, now, error=error)


def _gate(s: Session, request: Request, campaign: Campaign) -> Outcome | None:
    """The answer that stops here when a directory locks the campaign for this visitor."""
    answer = gates.check(s, request, campaign)
    return None if answer is None else Outcome(gate=answer)


def _campaign_past_gate(s: Session, request: Request, code: str) -> Campaign | Outcome | None:
    """The campaign at this address past the gates: None when there is none, or the gate's answer."""
    campaign = repository.campaign_by_code(s, code) if _CODE.match(code) else None
    if campaign is None:
        return None
    gate = _gate(s, request, campaign)
    return campaign if gate is None else gate


def _load_past_gate(
    s: Session, request: Request, code: str, session_code: str
) -> tuple[Campaign, CouponSession] | Outcome | None:
    """The campaign and session at this address past the gates: None when either is missing, or
    the gate's answer."""
    found = _load(s, code, session_code)
    if found is None:
        return None
    gate = _gate(s, request, found[0])
    return found if gate is None else gate


# ---------------------------------------------------------------- open and show


def _device_of(request: Request) -> str:
    """The browser's device cookie when it has the shape the server issues; "" otherwise (none,
    or one the client made up: it gets a new one, and its value is never stored)."""
    device = request.cookies.get(DEVICE_COOKIE, "")
    return device if _DEVICE.match(device) else ""


def _open(request: Request, runtime: Runtime, code: str) -> Outcome | None:
    now = utcnow()
    device = _device_of(request)
    if device:
        # A returning device only needs reads: no write lock for the common case.
        with runtime.db.read() as s:
            campaign = _campaign_past_gate(s, request, code)
            if not isinstance(campaign, Campaign):
                return campaign
            known = repository.session_for_device(s, campaign.id, device)
            if known is not None:
                return Outcome(redirect=session_path(campaign, known))
    with runtime.db.transaction() as s:
        campaign = _campaign_past_gate(s, request, code)
        if not isinstance(campaign, Campaign):
            return campaign
        row = None
        if device:
            repository.lock_device_opening(s, campaign.id, device)
            row = repository.session_for_device(s, campaign.id, device)
        new_device = None
        if row is None:
            problem = service.campaign_open_problem(campaign, now)
            if problem is not None:
                brand = branding.for_account(s, campaign.account_id)
                return _message_outcome(410, campaign.title or campaign.name, problem, brand=brand)
            limit = _open_limit(runtime)
            client = web.client_key(request)
            if limit is not None and not limit.attempt(s, runtime.keyring, campaign.id, client, now=now):
                wait = limit.seconds_left(s, runtime.keyring, campaign.id, client, now=now)
                brand = branding.for_account(s, campaign.account_id)
                refused = _message_outcome(429, campaign.title or campaign.name, TOO_MANY_OPENS, 429, brand)
                refused.headers["Retry-After"] = retry_after_header(wait)
                return refused
            if not device:
                device = new_device = token(24)
            row = service.open_new(s, runtime, campaign, device, now)
        return Outcome(redirect=session_path(campaign, row), device=new_device)


def _peek(request: Request, runtime: Runtime, code: str) -> Outcome | Response | None:
    """HEAD of the coupon's address (link checkers, chat previews): what GET would answer, without
    opening anything. The device's own session when it has one (303), 410 when the campaign opens
    none now, else 200 with no body: a new session, an open counted and a custom code taken only
    for a GET."""
    device = _device_of(request)
    with runtime.db.read() as s:
        campaign = _campaign_past_gate(s, request, code)
        if not isinstance(campaign, Campaign):
            return campaign
        known = repository.session_for_device(s, campaign.id, device) if device else None
        if known is not None:
            return Outcome(redirect=session_path(campaign, known))
        problem = service.campaign_open_problem(campaign, utcnow())
        if problem is not None:
            brand = branding.for_account(s, campaign.account_id)
            return _message_outcome(410, campaign.title or campaign.name, problem, brand=brand)
    return Response(status_code=200, media_type="application/json" if wants_json(request) else "text/html")


@router.api_route("/p/{code}", methods=["GET", "HEAD"])
async def open_coupon(request: Request, code: str) -> Response:
    """Open the coupon: a new session for this device, or the one it opened before."""
    runtime: Runtime = request.app.state.runtime
    opener = _peek if request.method == "HEAD" else _open
    out = await run_in_threadpool(opener, request, runtime, code)
    if out is None:
        return _not_found(request, "campaign")
    # The redirect's Location is the session's address, a bearer token: no cache keeps it.
    return private_page(out if isinstance(out, Response) else _respond(request, out))


def _show(request: Request, runtime: Runtime, code: str, session_code: str, csrf: Csrf) -> Outcome | None:
    now = utcnow()
    done = request.query_params.get("done", "")
    with runtime.db.read() as s:
        found = _load_past_gate(s, request, code, session_code)
        if not isinstance(found, tuple):
            return found
        campaign, row = found
        if row.opened_at is not None or row.removed_at is not None or request.method == "HEAD":
            # Already opened: showing it needs no write (nor SQLite's write lock). A HEAD
            # (a link checker, a chat preview) is no visit by the consumer: it opens nothing.
            context, data = _session_context(s, runtime, campaign, row, csrf, now, done=done)
            return Outcome(context=context, json=data)
    with runtime.db.transaction() as s:
        found = _load(s, code, session_code)
        if found is None:
            return None
        campaign, row = found
        service.mark_opened(s, runtime, campaign, row, now)
        context, data = _session_context(s, runtime, campaign, row, csrf, now, done=done)
        return Outcome(context=context, json=data)


# ---------------------------------------------------------------- staff page (widget / custom code)


def _staff(request: Request, runtime: Runtime, code: str, form: dict[str, str], csrf: Csrf) -> Outcome | None:
    now = utcnow()
    base: dict[str, Any] = {"csrf": csrf.form_token, "code": code}
    with runtime.db.transaction() as s:
        campaign = repository.campaign_by_code(s, code) if _CODE.match(code) else None
        if campaign is None:
            return None
        enabled = service.methods_of(campaign)
        base.update(
            {
                "campaign": campaign,
                "title": f"Validate: {campaign.title or campaign.name}",
                "brand": branding.for_account(s, campaign.account_id),
                "by_widget": "widget" in enabled,
                "by_custom_code": "custom_code" in enabled,
                "claim_hint": CLAIM_FIRST_ON_STAFF_PAGE if campaign.require_claim else "",
            }
        )
        # Neither code accepted here, or no PIN to check: no form that could only be refused.
        unusable = "" if base["by_widget"] or base["by_custom_code"] else METHOD_NOT_USED
        unusable = unusable or ("" if campaign.pin_digest else NO_PIN)
        if unusable:
            return Outcome(
                status=409,
                template="coupons/staff.html",
                context={**base, "error": unusable, "form_off": True},
                json=error_body(409, [308], [unusable]),
            )
        if not form:
            return Outcome(template="coupons/staff.html", context=base, json={"campaign": campaign.code})
    entered = form.get("code", "").strip()
    pin = form.get("pin", "").strip()

    def fail(status: int, message: str, error_code: int = 308) -> Outcome:
        return Outcome(
            status=status,
            template="coupons/staff.html",
            context={**base, "error": message, "entered": entered},
            json=error_body(status, [error_code], [message]),
        )

    nonce = web.form_nonce(runtime, request, form.get("csrf", ""))
    if nonce is None:
        return fail(403, web.csrf_refusal(request), 300)
    client = web.client_key(request)
    proven = staff_device.recognised(request, runtime, campaign, now)
    wait = 0.0
    with runtime.db.transaction() as s:
        # Counted before it is checked, given back when right (opencoupon.kit.lockout).
        allowed = pin_lockout.attempt(s, runtime.keyring, campaign.id, client, proven=proven)
        right = allowed and service.pin_matches(runtime, campaign, pin)
        if right:
            pin_lockout.refund(s, runtime.keyring, campaign.id, client, proven=proven)
            staff_device.grant(request, runtime, campaign, now)
        if not allowed:
            wait = _pin_wait(s, runtime, campaign.id, client)
    if not allowed:
        refused = fail(429, _too_many_pins(wait), 429)
        refused.headers["Retry-After"] = retry_after_header(wait)
        return refused
    if not right:
        return fail(403, "Wrong PIN.", 300)
    try:
        money = service.parse_money(form.get("validation_value") or None)
        with runtime.db.transaction() as s:
            campaign = s.get(Campaign, campaign.id)
            assert campaign is not None
            # A custom code typed exactly as it was given wins; then a widget code; then a custom
            # code in another letter case. A custom code may equal another coupon's widget code
            # ("J6ZL36" and "j6zl36"): the coupon whose own code was typed is the one validated.
            custom = None
            if entered and base["by_custom_code"]:
                custom = repository.session_by_custom_code(s, campaign.id, entered)
            row, method = None, "widget"
            if custom is not None and custom.custom_validation_code == entered:
                row, method = custom, "custom_code"
            elif base["by_widget"] and len(entered) == ids.SHORT_CODE_LENGTH and _CODE.match(entered):
                row = repository.session_by_short_in_campaign(s, campaign.id, entered.lower())
            if row is None and custom is not None:
                row, method = custom, "custom_code"
            if row is None:
                return fail(404, "No coupon with this code.", 505)
            refusal = gates.owner_refusal(s, campaign, row)
            if refusal is not None:
                return fail(403, refusal)
            # The same form sent again answers what its first sending did, validating nothing.
            kept = _claim_form(s, runtime, campaign, nonce, [method, row.id, str(money)])
            if kept is None:
                service.validate(s, runtime, campaign, row, now, method=method, validation_value=money)
                kept = {"notice": f"Coupon {row.short_code} validated."}
                _keep_answer(s, runtime, campaign, nonce, kept)
            result = views.session_data(s, runtime, campaign, row, now, action="validated")
    except ApiError as err:
        return fail(err.http_status, err.description, err.code)
    notice = str(kept["notice"])
    return Outcome(
        template="coupons/staff.html", context={**base, "notice": notice}, json={**result, "message": notice}
    )


@router.api_route("/p/{code}/staff", methods=["GET", "HEAD", "POST"])
async def staff_page(request: Request, code: str) -> Response:
    """Staff type the PIN and the coupon's 6-character code (or a custom validation code)."""
    runtime: Runtime = request.app.state.runtime
    form = await form_text(request) if request.method == "POST" else {}
    csrf = Csrf.for_request(request, runtime)
    out = await run_in_threadpool(_staff, request, runtime, code, form, csrf)
    if out is None:
        return _not_found(request, "campaign")
    out = _form_page(request, runtime, out, f"/p/{code}/staff")
    return private_page(_respond(request, out, csrf))


@router.api_route("/p/{code}/{session_code}", methods=["GET", "HEAD"])
async def show_session(request: Request, code: str, session_code: str) -> Response:
    """The coupon as the consumer sees it (marks a first visit as the open)."""
    runtime: Runtime = request.app.state.runtime
    csrf = Csrf.for_request(request, runtime)
    out = await run_in_threadpool(_show, request, runtime, code, session_code, csrf)
    if out is None:
        return _not_found(request, "session")
    out = _with_result(request, runtime, out, f"/p/{code}/{session_code}")
    # The coupon holds the staff PIN form (validation on the phone): no frames, as the staff pages;
    # its address is the session's bearer token: no cache keeps it.
    return private_page(_respond(request, out, csrf))


# ---------------------------------------------------------------- claim


# States whose coupon cannot be claimed (code 308), as service.claim refuses them, checked before
# the form so the consumer is not asked to correct a field first. A validated coupon cannot be
# claimed either, unless it was claimed before (claiming again changes nothing).
_NOT_CLAIMABLE = ("removed", "voided", "locked", "inactive", "scheduled", "expired")
CLAIM_LIMITS = {"firstname": 100, "lastname": 100, "email": 254, "phone": 40}
CUSTOM_FIELD_LIMIT = 500
# What the form calls each standard field: its labels and its messages say the same.
CLAIM_LABELS = {
    "firstname": "First name",
    "lastname": "Last name",
    "email": "Email",
    "phone": "Phone",
    "birthday": "Birthday",
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _claim_details(campaign: Campaign, form: dict[str, str]) -> tuple[dict[str, Any], str]:
    settings = campaign.claim_form or {}
    fields = list(settings.get("fields", []))
    required = set(settings.get("required", []))
    details: dict[str, Any] = {}
    used = [*fields, *(f"custom_{name}" for name in settings.get("custom_fields", []))]
    unusable = web.fields_with_control_characters({name: form.get(name, "").strip() for name in used})
    if unusable:
        names = ", ".join(name.removeprefix("custom_") for name in unusable)
        return {}, f"Please remove the invisible control characters from: {names}."
    for name in fields:
        raw = form.get(name, "").strip()
        label = CLAIM_LABELS.get(name, name)
        if name in required and not raw:
            return {}, f"Please fill in {label}."
        if not raw:
            continue
        if name == "birthday":
            try:
                details["birthday"] = parse_birthday("birthday", raw, utcnow().date())
            except ApiError as err:
                return {}, "Please give the birthday as YYYY-MM-DD." if err.code == 303 else err.description
            continue
        limit = CLAIM_LIMITS.get(name, 200)
        if len(raw) > limit:
            return {}, f"{label}: at most {limit} characters."
        if name == "email":
            if not _EMAIL.match(raw):
                return {}, "Please give a valid email address."
            raw = raw.lower()
        details[name] = raw
    custom = {}
    for name in settings.get("custom_fields", []):
        raw = form.get(f"custom_{name}", "").strip()
        if name in required and not raw:
            return {}, f"Please fill in {name}."
        if len(raw) > CUSTOM_FIELD_LIMIT:
            # Refused as a standard field is: cutting it would store what nobody typed.
            return {}, f"{name}: at most {CUSTOM_FIELD_LIMIT} characters."
        if raw:
            custom[name] = raw
    if custom:
        details["custom_fields"] = custom
    if settings.get("consent_text"):
        details["consent"] = form.get("consent") in ("on", "1", "true", "yes")
        if "consent" in required and not details["consent"]:
            return {}, "Please give your consent."
    return details, ""


def _claim(
    request: Request, runtime: Runtime, code: str, session_code: str, form: dict[str, str], csrf: Csrf
) -> Outcome | None:
    now = utcnow()
    # A form to correct: 422, code 300; a refused form (CSRF): 403, code 300, as on the other
    # pages; a coupon that cannot be claimed: its ApiError (308, 409).
    error, status, error_code = "", 422, 300
    try:
        with runtime.db.transaction() as s:
            found = _load_past_gate(s, request, code, session_code)
            if not isinstance(found, tuple):
                return found
            campaign, row = found
            if not csrf_ok(request, runtime, form.get("csrf", "")):
                error, status = web.csrf_refusal(request), 403
            else:
                word = service.state(campaign, row, service.account_zone(s, campaign.account_id), now)
                if word in _NOT_CLAIMABLE:
                    # The page offers no claim form in these states; a form posted anyway is refused.
                    raise service.refused(MESSAGES[word])
                if row.validation_count > 0 and row.claimed_at is None:
                    # Used at the counter (once of several allowed, too): not claimed afterwards.
                    raise service.refused(MESSAGES["validated"])
                # Another member given the link passes the gate: the session's own owner must still
                # be allowed the coupon (a directory member whose access ended is not).
                refusal = gates.owner_refusal(s, campaign, row, action="claimed")
                if refusal is not None:
                    raise ApiError(308, refusal, http_status=403)
                details, error = _claim_details(campaign, form)
                if not error:
                    service.claim(s, runtime, campaign, row, now, claimtype="form", details=details)
                    path = session_path(campaign, row)
                    if wants_json(request):
                        _, data = _session_context(s, runtime, campaign, row, csrf, now)
                        return Outcome(json={**data, "message": NOTICES["claimed"]})
                    return Outcome(redirect=f"{path}?done=claimed")
    except ApiError as err:
        error, status, error_code = err.description, err.http_status, err.code
    context, data = _context_with_error(runtime, code, session_code, csrf, now, error)
    # The form again with what the consumer typed, so a refusal costs them one correction only.
    context["typed"] = {k: v for k, v in form.items() if k != "csrf"}
    return Outcome(status=status, context=context, json=error_body(status, [error_code], [error]))


@router.post("/p/{code}/{session_code}/claim")
async def claim_session(request: Request, code: str, session_code: str) -> Response:
    runtime: Runtime = request.app.state.runtime
    form = await form_text(request)
    csrf = Csrf.for_request(request, runtime)
    out = await run_in_threadpool(_claim, request, runtime, code, session_code, form, csrf)
    if out is None:
        return _not_found(request, "session")
    # A refused claim shows the coupon again, with its PIN form.
    return private_page(_respond(request, out, csrf))


# ---------------------------------------------------------------- PIN on the phone, and the QR scan page


def _validate_with_pin(
    request: Request,
    runtime: Runtime,
    code: str,
    session_code: str,
    form: dict[str, str],
    csrf: Csrf,
    method: str,
) -> Outcome | None:
    now = utcnow()
    client = web.client_key(request)
    template = "coupons/session.html" if method == "pin" else "coupons/scan.html"
    error, status, error_code = "", 200, 308
    form_off = False
    headers: dict[str, str] = {}
    nonce = web.form_nonce(runtime, request, form.get("csrf", "")) if form else None
    try:
        with runtime.db.transaction() as s:
            # The QR scan page is the staff's; the gates guard the consumer's pages only.
            if method == "pin":
                found = _load_past_gate(s, request, code, session_code)
            else:
                found = _load(s, code, session_code)
            if not isinstance(found, tuple):
                return found
            campaign, row = found
            method_used = method in service.methods_of(campaign)
            form_off = not method_used or not campaign.pin_digest
            # Whoever holds the phone or the scan page: the session's owner must still be allowed
            # it (a directory member whose access ended is not).
            refusal = None if form_off else gates.owner_refusal(s, campaign, row)
            if form_off:
                error, status = METHOD_NOT_USED if not method_used else NO_PIN, 409
            elif refusal is not None:
                error, status, form_off = refusal, 403, True
            elif _waits_for_claim(
                campaign, row, service.state(campaign, row, service.account_zone(s, campaign.account_id), now)
            ):
                # No PIN form that could only refuse; a PIN posted anyway is not checked nor counted.
                error, status, form_off = CLAIM_FIRST, 409, True
            elif not form:
                pass
            elif nonce is None:
                error, status, error_code = web.csrf_refusal(request), 403, 300
            elif row.locked:
                error, status = MESSAGES["locked"], 409
            elif not pin_lockout.attempt(
                s,
                runtime.keyring,
                campaign.id,
                client,
                proven=staff_device.recognised(request, runtime, campaign, now),
            ):
                wait = _pin_wait(s, runtime, campaign.id, client)
                error, status, error_code = _too_many_pins(wait), 429, 429
                headers["Retry-After"] = retry_after_header(wait)
            elif not service.pin_matches(runtime, campaign, form.get("pin", "")):
                locked_now = service.record_pin_failure(s, row, now)
                error, status, error_code = "Wrong PIN.", 403, 300
                if locked_now:
                    error = "Wrong PIN. Too many wrong PINs: this coupon is now locked."
            else:
                proven = staff_device.recognised(request, runtime, campaign, now)
                pin_lockout.refund(s, runtime.keyring, campaign.id, client, proven=proven)
                if method == "qr":  # the scan page is the staff's; the phone is the consumer's
                    staff_device.grant(request, runtime, campaign, now)
                service.clear_pin_failures(s, row, now)
                money = service.parse_money(form.get("validation_value") or None)
                # The same form sent again answers what its first sending did, validating nothing.
                kept = _claim_form(s, runtime, campaign, nonce, [method, row.id, str(money)])
                if kept is None:
                    service.validate(s, runtime, campaign, row, now, method=method, validation_value=money)
                    _keep_answer(s, runtime, campaign, nonce, {"notice": NOTICES["validated"]})
                if method == "pin" and not wants_json(request):
                    return Outcome(redirect=f"{session_path(campaign, row)}?done=validated")
                context, data = _session_context(
                    s, runtime, campaign, row, csrf, now, notice=NOTICES["validated"]
                )
                return Outcome(
                    template=template, context=context, json={**data, "message": NOTICES["validated"]}
                )
    except ApiError as err:
        error, status, error_code = err.description, err.http_status, err.code
    context, data = _context_with_error(runtime, code, session_code, csrf, now, error)
    context["form_off"] = form_off
    if form_off:
        context["can_validate"] = False
    body: Any = error_body(status, [error_code], [error]) if error else data
    return Outcome(status=status, template=template, context=context, json=body, headers=headers)


@router.post("/p/{code}/{session_code}/validate")
async def validate_on_phone(request: Request, code: str, session_code: str) -> Response:
    """Staff type their PIN on the consumer's phone."""
    runtime: Runtime = request.app.state.runtime
    form = await form_text(request)
    csrf = Csrf.for_request(request, runtime)
    out = await run_in_threadpool(_validate_with_pin, request, runtime, code, session_code, form, csrf, "pin")
    if out is None:
        return _not_found(request, "session")
    out = _result_redirect(request, runtime, out, f"/p/{code}/{session_code}")
    return private_page(_respond(request, out, csrf))


@router.api_route("/p/{code}/{session_code}/scan", methods=["GET", "HEAD", "POST"])
async def scan_page(request: Request, code: str, session_code: str) -> Response:
    """Where the session's QR code leads staff: the coupon's state and a PIN form to validate it."""
    runtime: Runtime = request.app.state.runtime
    form = await form_text(request) if request.method == "POST" else {}
    csrf = Csrf.for_request(request, runtime)
    out = await run_in_threadpool(_validate_with_pin, request, runtime, code, session_code, form, csrf, "qr")
    if out is None:
        return _not_found(request, "session")
    out = _form_page(request, runtime, out, f"/p/{code}/{session_code}/scan")
    return private_page(_respond(request, out, csrf))
