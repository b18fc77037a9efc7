"""Dashboard pages for coupon campaigns: list, create/edit, the campaign page (funnel, chart, QR,
share links) and the sessions table (search, filter, paging, CSV, void/unvoid/validate/lock/unlock).

Every change goes through coupons.service, as the API does."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon import branding
from opencoupon.accounts import repository as accounts_repo
from opencoupon.coupons import pages as coupon_pages
from opencoupon.coupons import repository, service, stats, views
from opencoupon.coupons.schemas import CampaignCreate, CampaignUpdate
from opencoupon.dashboard.common import (
    FormProblem,
    api_context,
    ask_first,
    bar_chart,
    build,
    check_text,
    day_range,
    many,
    no_store,
    page,
    page_number,
    problem_of,
    saved_or_form_again,
    search_text,
    text,
)
from opencoupon.dashboard.security import PageError, checked_form, require_login
from opencoupon.errors import ApiError
from opencoupon.kit import ids
from opencoupon.kit.csvcell import csv_cell
from opencoupon.kit.dates import fmt
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Account, Campaign, CouponSession

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
CSV_LIMIT = 100_000
CHART_DAYS = 30
METHODS = [
    ("pin", "Staff PIN"),
    ("widget", "Swipe widget"),
    ("custom_code", "Custom code"),
    ("qr", "Staff QR scan"),
]
CLAIM_FIELDS = [
    ("firstname", "First name"),
    ("lastname", "Last name"),
    ("email", "Email"),
    ("phone", "Phone"),
    ("birthday", "Birthday"),
]
EXPIRY_MODES = [
    ("none", "Never expires"),
    ("fixed_date", "On a fixed date"),
    ("after_open", "Some time after opening"),
    ("after_claim", "Some time after claiming"),
]
_TEXT_FIELDS = (
    "name",
    "title",
    "subtitle",
    "description",
    "terms",
    "image",
    "status",
    "tags",
    "folder",
    "start_date",
    "end_date",
    "expiry_mode",
    "expiry_date",
    "expiry_minutes",
    "expiry_days",
    "pin",
    "validations_per_session",
    "max_validations",
    "custom_fields",
    "consent_text",
)

NOT_FOUND = PageError(404, "Not found", "There is no such campaign in your account.")


def _owner_names(ctx: ApiContext) -> dict[int, str]:
    names = {ctx.account.id: "you"}
    if ctx.account.parent_id is None:
        for sub in accounts_repo.subaccounts(ctx.session, ctx.account.id):
            names[sub.id] = sub.company_name or sub.email
    return names


def _campaign(ctx: ApiContext, public_id: str) -> Campaign:
    # SSO links name the campaign by its number (accounts.sso.PAGE_PATHS).
    if ids.is_number(public_id):
        public_id = f"cam_{public_id}"
    try:
        return service.get_campaign(ctx, public_id)
    except ApiError:
        raise NOT_FOUND from None


# --- list ---------------------------------------------------------------------------------------


def _list_context(request: Request, account: Account, tag: str) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        rows = repository.campaigns(ctx.session, ctx.scope(Campaign.account_id))
        owners = _owner_names(ctx)
        items = []
        all_tags: set[str] = set()
        for campaign in rows:
            tags = [t for t in campaign.tags.split(",") if t]
            all_tags.update(tags)
            if tag and tag not in tags:
                continue
            items.append(
                {
                    "id": service.campaign_public_id(campaign),
                    "name": campaign.name,
                    "status": campaign.status,
                    "tags": tags,
                    "owner": owners.get(campaign.account_id, ""),
                    "opens": campaign.opens_count,
                    "claims": campaign.claims_count,
                    "validations": campaign.validations_count,
                }
            )
    return {
        "title": "Campaigns",
        "account": account,
        "campaigns": items,
        "tags": sorted(all_tags),
        "tag": tag,
    }


@router.get("/dashboard/campaigns")
def campaign_list(request: Request, account: Account = Depends(require_login)) -> Response:
    tag = request.query_params.get("tag", "")[:100]
    return page(request, "dashboard/campaigns.html", _list_context(request, account, tag))


# --- create / edit ------------------------------------------------------------------------------


def _form_data(form: FormData, *, editing: bool) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        value = text(form, name)
        if value:
            data[name] = value
        elif editing and name in (
            "title",
            "start_date",
            "end_date",
            "tags",
            "folder",
            "subtitle",
            "description",
            "terms",
            "image",
            "custom_fields",
            "consent_text",
            "max_validations",
        ):
            # Emptied on purpose, as the API's PATCH takes it (an empty limit: no limit; an empty
            # title: the consumer page shows the name).
            data[name] = ""
    for name in ("validation_methods", "claim_fields", "required_fields"):
        data[name] = ",".join(many(form, name))
    data["require_claim"] = text(form, "require_claim") == "1"
    if not data["validation_methods"]:
        raise FormProblem(["Validation methods: choose at least one."])
    # The schema's own limits (name, title, folder) refuse over-long text; NUL is refused here.
    check_text(data, {})
    return data


def _form_context(
    account: Account, values: dict[str, Any], errors: list[str], public_id: str = ""
) -> dict[str, Any]:
    return {
        "title": "Edit campaign" if public_id else "New campaign",
        "account": account,
        "values": values,
        "errors": errors,
        "campaign_id": public_id,
        "methods": METHODS,
        "claim_fields": CLAIM_FIELDS,
        # The campaign's extra fields (as saved, or as typed in a form shown again): each can be
        # marked required like the standard ones.
        "custom_names": [n.strip() for n in str(values.get("custom_fields") or "").split(",") if n.strip()],
        "expiry_modes": EXPIRY_MODES,
    }


_DEFAULTS: dict[str, Any] = {
    "status": "active",
    "expiry_mode": "none",
    "validation_methods": ["pin", "widget", "custom_code", "qr"],
    "claim_fields": ["firstname", "lastname", "email"],
    "required_fields": [],
    "validations_per_session": 1,
    "require_claim": False,
}


def _values_from_form(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {name: text(form, name) for name in _TEXT_FIELDS if name != "pin"}
    for name in ("validation_methods", "claim_fields", "required_fields"):
        values[name] = many(form, name)
    values["require_claim"] = text(form, "require_claim") == "1"
    return values


@router.get("/dashboard/campaigns/new")
def new_campaign_form(request: Request, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/campaign_form.html", _form_context(account, dict(_DEFAULTS), []))


def _create(request: Request, account: Account, form: FormData) -> str:
    data = _form_data(form, editing=False)
    if not data.get("name"):
        raise FormProblem(["Name: enter a name for the campaign."])
    req = build(CampaignCreate, data)
    try:
        with api_context(request, account, write=True) as ctx:
            campaign = service.create_campaign(ctx, req)
            return service.campaign_public_id(campaign)
    except ApiError as err:
        raise problem_of(err) from None


@router.post("/dashboard/campaigns/new")
async def create_campaign(request: Request, account: Account = Depends(require_login)) -> Response:
    form = await checked_form(request)
    return await saved_or_form_again(
        request,
        "dashboard/campaign_form.html",
        save=lambda: _create(request, account, form),
        form_again=lambda errors: _form_context(account, _values_from_form(form), errors),
        saved_path=lambda public_id: f"/dashboard/campaigns/{public_id}?created=1",
    )


def _edit_values(request: Request, account: Account, public_id: str) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        campaign = _campaign(ctx, public_id)
        info = views.campaign_v4(ctx.session, ctx.runtime, campaign)
    values = dict(info)
    values["tags"] = ",".join(info["tags"])
    values["custom_fields"] = ",".join(info["custom_fields"])
    values["start_date"] = info["start_date"] or ""
    values["end_date"] = info["end_date"] or ""
    values["expiry_date"] = info["expiry_date"] or ""
    values["expiry_minutes"] = info["expiry_minutes"] or ""
    values["max_validations"] = "" if info["max_validations"] is None else info["max_validations"]
    return values


@router.get("/dashboard/campaigns/{public_id}/edit")
def edit_campaign_form(
    request: Request, public_id: str, account: Account = Depends(require_login)
) -> Response:
    values = _edit_values(request, account, public_id)
    return page(request, "dashboard/campaign_form.html", _form_context(account, values, [], public_id))


def _update(request: Request, account: Account, public_id: str, form: FormData) -> None:
    req = build(CampaignUpdate, _form_data(form, editing=True))
    try:
        with api_context(request, account, write=True) as ctx:
            service.update_campaign(ctx, _campaign(ctx, public_id), req)
    except ApiError as err:
        raise problem_of(err) from None


@router.post("/dashboard/campaigns/{public_id}/edit")
async def update_campaign(
    request: Request, public_id: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    return await saved_or_form_again(
        request,
        "dashboard/campaign_form.html",
        save=lambda: _update(request, account, public_id, form),
        form_again=lambda errors: _form_context(account, _values_from_form(form), errors, public_id),
        saved_path=lambda _nothing: f"/dashboard/campaigns/{public_id}?saved=1",
    )


# --- campaign page ------------------------------------------------------------------------------


def _session_row(campaign: Campaign, row: CouponSession, tz: Any, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": row.id,
        "code": row.code,
        "short_code": row.short_code,
        "state": service.state(campaign, row, tz, now),
        "name": f"{row.firstname} {row.lastname}".strip(),
        "email": row.email,
        "phone": row.phone,
        "opened": row.opened_at,
        "claimed": row.claimed_at,
        "validated": row.validated_at,
        "validations": row.validation_count,
        "voided": row.link_status == "voided",
        "locked": row.locked,
        "url": f"/p/{campaign.code}/{row.code}",
    }


def _filters(request: Request) -> tuple[str, str, int]:
    q = search_text(request)
    state = request.query_params.get("state", "")
    if state not in repository.SESSION_STATE_FILTERS:
        state = ""
    return q, state, page_number(request)


def _campaign_context(request: Request, account: Account, public_id: str) -> dict[str, Any]:
    q, state, page_no = _filters(request)
    with api_context(request, account) as ctx:
        campaign = _campaign(ctx, public_id)
        info = views.campaign_v4(ctx.session, ctx.runtime, campaign)
        tz = service.account_zone(ctx.session, campaign.account_id)
        today = ctx.now.date()
        days = day_range(CHART_DAYS, today)
        by_day = {day: (o, c, v) for day, o, c, v in stats.per_day(ctx.session, campaign.id, days[0])}
        opens = [by_day.get(d, (0, 0, 0))[0] for d in days]
        claims = [by_day.get(d, (0, 0, 0))[1] for d in days]
        validations = [by_day.get(d, (0, 0, 0))[2] for d in days]
        rows = repository.sessions_table(
            ctx.session,
            campaign,
            tz=tz,
            now=ctx.now,
            text=q,
            state=state,
            offset=(page_no - 1) * PAGE_SIZE,
            limit=PAGE_SIZE + 1,
        )
        sessions = [_session_row(campaign, r, tz, ctx.now) for r in rows[:PAGE_SIZE]]
    total_o, total_c, total_v = info["opens"], info["claims"], info["validations"]
    chart = bar_chart(
        days,
        [("opens", "#8fb8f5", opens), ("claims", "#1f6feb", claims), ("validations", "#1a7f37", validations)],
    )
    query = {"q": q, "state": state}
    return {
        "title": campaign.name,
        "account": account,
        "campaign": info,
        "public_id": public_id,
        # Shares of the opens; None (shown as "–") while there are none to share.
        "funnel": [
            ("Opens", total_o, 100 if total_o else None),
            ("Claims", total_c, round(total_c * 100 / total_o) if total_o else None),
            ("Validations", total_v, round(total_v * 100 / total_o) if total_o else None),
        ],
        "chart": chart,
        "chart_totals": {"opens": sum(opens), "claims": sum(claims), "validations": sum(validations)},
        "sessions": sessions,
        "q": q,
        "state": state,
        "states": repository.SESSION_STATE_FILTERS,
        "page": page_no,
        "has_next": len(rows) > PAGE_SIZE,
        "query": urlencode({k: v for k, v in query.items() if v}),
        "created": request.query_params.get("created") == "1",
        "saved": request.query_params.get("saved") == "1",
        "done": request.query_params.get("done", "")[:200],
        "problem": request.query_params.get("problem", "")[:300],
    }


@router.get("/dashboard/campaigns/{public_id}")
def campaign_page(request: Request, public_id: str, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/campaign.html", _campaign_context(request, account, public_id))


def _csv(request: Request, account: Account, public_id: str) -> tuple[str, str]:
    q, state, _ = _filters(request)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "session",
            "short_code",
            "state",
            "firstname",
            "lastname",
            "email",
            "phone",
            "opened_utc",
            "claimed_utc",
            "validated_utc",
            "validations",
            "url",
        ]
    )
    with api_context(request, account) as ctx:
        campaign = _campaign(ctx, public_id)
        tz = service.account_zone(ctx.session, campaign.account_id)
        rows = repository.sessions_table(
            ctx.session, campaign, tz=tz, now=ctx.now, text=q, state=state, limit=CSV_LIMIT
        )
        for row in rows:
            writer.writerow(
                [
                    csv_cell(v)
                    for v in (
                        row.code,
                        row.short_code,
                        service.state(campaign, row, tz, ctx.now),
                        row.firstname,
                        row.lastname,
                        row.email,
                        row.phone,
                        fmt(row.opened_at),
                        fmt(row.claimed_at),
                        fmt(row.validated_at),
                        row.validation_count,
                        ctx.runtime.url(f"/p/{campaign.code}/{row.code}"),
                    )
                ]
            )
        code = campaign.code
    return out.getvalue(), code


@router.get("/dashboard/campaigns/{public_id}/sessions.csv")
def sessions_csv(request: Request, public_id: str, account: Account = Depends(require_login)) -> Response:
    body, code = _csv(request, account, public_id)
    response = Response(body, media_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="sessions-{code}.csv"'
    return no_store(response)


# --- actions on one session ---------------------------------------------------------------------

ACTIONS = {
    "void": "Voided",
    "unvoid": "Re-activated",
    "validate": "Validated",
    "lock": "Locked",
    "unlock": "Unlocked",
}


def _act(request: Request, account: Account, public_id: str, session_id: int, action: str) -> str:
    with api_context(request, account, write=True) as ctx:
        campaign = _campaign(ctx, public_id)
        row = repository.session_by_id_in_campaign(ctx.session, campaign.id, session_id)
        if row is None:
            raise PageError(404, "Not found", "There is no such coupon session in this campaign.")
        if action == "void":
            service.void(ctx.session, ctx.runtime, campaign, row, ctx.now)
        elif action == "unvoid":
            service.activate(ctx.session, row, ctx.now)
        elif action in ("lock", "unlock"):
            # As the API's `lock`: unlocking also forgets the wrong PINs that locked it.
            service.set_lock(ctx.session, row, action == "lock", ctx.now)
        else:
            service.validate(ctx.session, ctx.runtime, campaign, row, ctx.now, method="api")
        return row.short_code


def _back_path(public_id: str, back: str) -> str:
    """The campaign page the action was taken from (its search, filter and page kept), without the
    notice of an earlier action: the answer brings its own."""
    path, _, query = back.partition("#")[0].partition("?")
    if path != f"/dashboard/campaigns/{public_id}":
        return f"/dashboard/campaigns/{public_id}"
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ("done", "problem", "n")]
    return f"{path}?{urlencode(kept)}" if kept else path


@router.post("/dashboard/campaigns/{public_id}/sessions/{session_id}/{action}")
async def session_action(
    request: Request, public_id: str, session_id: int, action: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    if action not in ACTIONS:
        raise PageError(404, "Not found", "Unknown action.")
    back = _back_path(public_id, text(form, "back", 2000))
    # The session actions that cannot be taken back are asked first.
    if action in ("validate", "void"):
        asked = ask_first(request, form, account, f"coupon.{action}", back=back)
        if asked is not None:
            return asked
    try:
        short = await run_in_threadpool(_act, request, account, public_id, session_id, action)
        notice = {"done": f"{ACTIONS[action]} {short}."}
    except ApiError as err:
        # Refused (already validated, voided, expired...): shown as an error, not as done.
        notice = {"problem": err.description}
    sep = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{sep}{urlencode(notice)}#sessions", status_code=303)


# --- preview of the consumer page ---------------------------------------------------------------


def _preview_context(request: Request, account: Account, public_id: str) -> dict[str, Any]:
    """The consumer page as a new visitor sees it, from the saved settings, without opening a
    session (nothing is written, no statistics move)."""
    with api_context(request, account) as ctx:
        campaign = _campaign(ctx, public_id)
        # The preview shows the owner's branding, as the consumer page does.
        brand = branding.for_account(ctx.session, campaign.account_id)
        ctx.session.expunge(campaign)
    form = campaign.claim_form or {}
    row = CouponSession(
        code="preview",
        short_code="PREVIEW",
        firstname="",
        lastname="",
        email="",
        phone="",
        customid="",
        custom_validation_code=None,
        validation_count=0,
    )
    word = "open" if campaign.status == "active" else "inactive"
    methods = service.methods_of(campaign)
    return {
        "title": campaign.title or campaign.name,
        "brand": brand,
        "campaign": campaign,
        "row": row,
        "state": word,
        "message": "" if word == "open" else "This campaign is not active.",
        "notice": "",
        "error": "",
        "expires_local": "",
        "timezone": "",
        "validated_local": "",
        "claim_fields": list(form.get("fields", [])),
        "claim_labels": coupon_pages.CLAIM_LABELS,
        "claim_limits": coupon_pages.CLAIM_LIMITS,
        "custom_field_limit": coupon_pages.CUSTOM_FIELD_LIMIT,
        "required_fields": list(form.get("required", [])),
        "custom_fields": list(form.get("custom_fields", [])),
        "consent_text": form.get("consent_text", ""),
        "typed": {},
        "can_claim": word == "open",
        "can_validate": word == "open"
        and not campaign.require_claim
        and "pin" in methods
        and bool(campaign.pin_digest),
        "csrf": "",
        "path": f"/dashboard/campaigns/{public_id}/preview",
        "qr_svg": f"/qr/p/{campaign.code}.svg",
        "shows_qr": "qr" in methods,
        "push_target": None,
    }


@router.get("/dashboard/campaigns/{public_id}/preview")
def campaign_preview(request: Request, public_id: str, account: Account = Depends(require_login)) -> Response:
    response = page(request, "coupons/session.html", _preview_context(request, account, public_id))
    # Only the dashboard's own pages may frame it.
    response.headers["Content-Security-Policy"] = "frame-ancestors 'self'"
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response
