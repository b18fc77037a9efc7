"""Campaign calls: the v3 Campaign group (except push notifications) and /v4/campaigns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from opencoupon.coupons import repository, service, views
from opencoupon.coupons.schemas import (
    CampaignCreate,
    CampaignListQuery,
    CampaignSearch,
    CampaignUpdate,
    CouponInfo,
    CouponList,
    SessionFlags,
    SessionRef,
    SessionSearch,
    SessionUpdate,
    SessionUpdateMany,
    UsageData,
)
from opencoupon.distribution import service as distribution_service
from opencoupon.errors import ApiError, bad_date, bad_value, error_body, missing
from opencoupon.kit.endpoint import ApiContext, v3_endpoint, v4_endpoint
from opencoupon.kit.params import NoParams
from opencoupon.models import Campaign, CouponSession

router = APIRouter(tags=["Campaign"])

# Days of per-day usage statistics coupon/info shows by default, and at most.
DEFAULT_STATS_DAYS = 90
MAX_STATS_DAYS = 3660
# couponsession/update/multiple handles at most this many sessions per call (code 309 above).
MAX_BATCH = 100


@v3_endpoint(router, ["/v3/coupon/list"], CouponList, summary="List campaigns", read_only=True)
def coupon_list(ctx: ApiContext, req: CouponList) -> dict[str, Any]:
    """Your campaigns (and your subaccounts'), filtered by status, folder, tags or category."""
    scope = ctx.scope(Campaign.account_id)
    found = repository.campaigns(
        ctx.session,
        scope,
        only_active=bool(req.only_active),
        folder=req.folder or None,
        category_id=service.category_id_of(ctx, req.category),
    )
    # 515 only for a folder that does not exist: a folder whose campaigns the other filters
    # leave out (all inactive with only_active, another category) is an empty list.
    if req.folder and not found and not repository.folder_exists(ctx.session, scope, req.folder):
        raise ApiError(515, "Folder not found.", http_status=404)
    found = _tagged(found, req.tags)
    return {"coupon_info": [views.coupon_info(ctx.session, ctx.runtime, c) for c in found]}


def _tagged(found: list[Campaign], tags: list[str] | None) -> list[Campaign]:
    """The campaigns with any of these tags (any letter case); all of them without tags."""
    if not tags:
        return found
    wanted = {t.lower() for t in tags}
    return [c for c in found if wanted & {t.strip().lower() for t in c.tags.split(",") if t.strip()}]


@v3_endpoint(router, ["/v3/coupon/info"], CouponInfo, summary="Campaign info", read_only=True)
def coupon_info(ctx: ApiContext, req: CouponInfo) -> dict[str, Any]:
    """One campaign; with `show_usage_stats`, opens, claims and validations (all-time totals, and
    per UTC day for the last `stats_days` days, 90 by default) and the campaign's own custom
    validation codes (its imported list or generated codes; codes single-use links carry from
    their creation are not counted). Read from counters, never from the sessions."""
    campaign = service.get_campaign(ctx, req.campaign)
    info = views.coupon_info(ctx.session, ctx.runtime, campaign)
    if req.show_usage_stats:
        days = req.stats_days if req.stats_days is not None else DEFAULT_STATS_DAYS
        if not 1 <= days <= MAX_STATS_DAYS:
            raise bad_value("stats_days", f"Use 1 to {MAX_STATS_DAYS}.")
        since = ctx.now.date() - dt.timedelta(days=days - 1)
        info["usage_stats"] = views.usage_stats(ctx.session, campaign, since)
    return {"coupon_info": info}


def _usage_bound(name: str, raw: str | None, end: bool) -> dt.datetime | None:
    if not raw:
        return None
    text = raw.strip()
    formats = (("%Y-%m-%d %H:%M:%S", 1), ("%Y-%m-%d %H:%M", 60), ("%Y-%m-%d %H-%M", 60), ("%Y-%m-%d", 86400))
    for f, span in formats:
        try:
            value = dt.datetime.strptime(text, f)
        except ValueError:
            continue
        # An end bound includes the whole second, minute or day it names.
        return value + dt.timedelta(seconds=span, microseconds=-1) if end else value
    raise bad_date(name, "yyyy-MM-dd, yyyy-MM-dd HH:mm or yyyy-MM-dd hh-mm")


def _page(given: int | None) -> int:
    page = given if given is not None else 1
    if page < 1:
        raise bad_value("page", "Pages start at 1.")
    return page


def _usage(ctx: ApiContext, req: UsageData, kind: str) -> dict[str, Any]:
    campaign = service.get_campaign(ctx, req.campaign)
    page = _page(req.page)
    start = _usage_bound("start_date", req.start_date, end=False)
    end = _usage_bound("end_date", req.end_date, end=True)
    if req.after_sequenceid is not None and req.after_sequenceid < 0:
        raise bad_value("after_sequenceid", "Use the sequenceid of the last session received (0 or more).")
    rows = repository.usage_page(ctx.session, campaign.id, kind, page, start, end, req.after_sequenceid)
    tz = service.account_zone(ctx.session, campaign.account_id)
    return {
        "campaign": service.campaign_public_id(campaign),
        "page": str(page),
        "page_size": str(repository.PAGE_SIZE),
        "amount_of_results": str(len(rows)),
        "data": [views.usage_item(ctx.runtime, campaign, r, tz, ctx.now) for r in rows],
    }


USAGE_DOC = (
    "Sessions of a campaign, oldest first, {page} a page (`page` starts at 1; a page with fewer "
    "results is the last). `start_date`/`end_date` (UTC, inclusive) filter on {what}. "
    "`after_sequenceid`: only sessions after it; a session removed between two `page` fetches "
    "shifts the later pages by one, so an export that must see every session sends page 1 with "
    "the last `sequenceid` it received instead of the next page number."
)


# The four usage-data calls: which sessions each lists, and the date its bounds filter on.
USAGE_CALLS = (
    ("data", "all sessions", "the creation date"),
    ("opens", "opened sessions", "the open date"),
    ("claims", "claimed sessions", "the claim date"),
    ("validations", "validated sessions", "the (last) validation date"),
)


def _usage_handler(kind: str) -> Callable[[ApiContext, UsageData], dict[str, Any]]:
    def handler(ctx: ApiContext, req: UsageData) -> dict[str, Any]:
        return _usage(ctx, req, kind)

    # v3_endpoint names the routes (and so the OpenAPI operation IDs) after the handler.
    handler.__name__ = handler.__qualname__ = f"campaign_{kind}"
    return handler


for _kind, _sessions, _filtered_on in USAGE_CALLS:
    v3_endpoint(
        router,
        [f"/v3/campaign/{_kind}"],
        UsageData,
        summary=f"Usage data: {_sessions}",
        read_only=True,
        description=USAGE_DOC.format(page=repository.PAGE_SIZE, what=_filtered_on),
    )(_usage_handler(_kind))


@v3_endpoint(
    router, ["/v3/couponsession/data"], SessionRef, summary="One coupon session", read_only=True, quick=True
)
def couponsession_data(ctx: ApiContext, req: SessionRef) -> dict[str, Any]:
    """A session by its 21-character code or its 6-character short form (add `campaign` when a
    short form is used in several of your campaigns)."""
    campaign, row = service.find_session(ctx, req.couponsession, req.campaign)
    data = views.session_data(ctx.session, ctx.runtime, campaign, row, ctx.now)
    # Every email/SMS sent with this session (who, when, provider answer).
    data["sends"] = distribution_service.sends_for_session(ctx.session, row.id)
    return data


NO_ACTION = ApiError(200, "Missing parameter: claim, validate, void, lock, validation_value or value.")


def _update_one(ctx: ApiContext, campaign: Campaign, row: CouponSession, req: SessionFlags) -> None:
    now = ctx.now
    service.ensure_not_removed(row)
    # What re-opens a session comes first, what closes it last: `lock=false, validate=true`
    # unlocks and validates, `claim=true, lock=true` claims and then locks.
    if req.void is False:
        service.activate(ctx.session, row, now)
    if req.lock is False:
        service.set_lock(ctx.session, row, False, now)
    if req.claim:
        service.claim(ctx.session, ctx.runtime, campaign, row, now, claimtype="api")
    if req.validate_:
        service.validate(
            ctx.session,
            ctx.runtime,
            campaign,
            row,
            now,
            method="api",
            validation_value=service.parse_money(req.validation_value),
            value=req.value,
        )
    elif req.value is not None or req.validation_value is not None:
        service.set_values(ctx.session, row, service.parse_money(req.validation_value), req.value, now)
    if req.lock:
        service.set_lock(ctx.session, row, True, now)
    if req.void:
        service.void(ctx.session, ctx.runtime, campaign, row, now)


@v3_endpoint(
    router, ["/v3/couponsession/update"], SessionUpdate, summary="Update a coupon session", quick=True
)
def couponsession_update(ctx: ApiContext, req: SessionUpdate) -> dict[str, Any]:
    """`claim`, `validate`, `void` (booleans; `void=false` re-activates a voided session), `lock`,
    `validation_value` (money spent) and `value`. A validation that is not allowed (already
    validated, voided, locked, expired, campaign limit reached) fails with code 308 (HTTP 409)."""
    if not req.has_action():
        raise NO_ACTION
    campaign, row = service.find_session(ctx, req.couponsession, req.campaign)
    _update_one(ctx, campaign, row, req)
    return views.session_data(ctx.session, ctx.runtime, campaign, row, ctx.now, action="update_session")


@v3_endpoint(
    router, ["/v3/couponsession/update/multiple"], SessionUpdateMany, summary="Update several coupon sessions"
)
def couponsession_update_multiple(ctx: ApiContext, req: SessionUpdateMany) -> dict[str, Any]:
    """The same flags applied to each session of `couponsessions` (at most 100). Each session
    succeeds or fails on its own; the answer lists a result per session."""
    codes = list(dict.fromkeys(req.couponsessions))
    if not codes:
        raise ApiError(200, "Missing parameter: couponsessions")
    if len(codes) > MAX_BATCH:
        raise ApiError(309, f"Too many sessions in one call: at most {MAX_BATCH}.")
    if not req.has_action():
        raise NO_ACTION
    if req.campaign:
        service.get_campaign(ctx, req.campaign)  # a wrong campaign fails the call, not each session
    _lock_sessions_of(ctx, codes, req.campaign)
    results: list[dict[str, Any]] = []
    failed = 0
    done: set[int] = set()
    for code in codes:
        try:
            with ctx.session.begin_nested():
                campaign, row = service.find_session(ctx, code, req.campaign)
                if row.id in done:
                    continue  # the same session again (its full code and its short form)
                done.add(row.id)
                _update_one(ctx, campaign, row, req)
                item = views.session_data(ctx.session, ctx.runtime, campaign, row, ctx.now, "update_session")
            results.append({"couponsession": code, "status": "OK", "session": item})
        except ApiError as err:
            failed += 1
            errors = error_body(err.http_status, [err.code], [err.description])["status"]["errors"]
            results.append({"couponsession": code, "status": "failed", "errors": errors})
    return {
        "action": "update_multiple_sessions",
        "amount_of_results": str(len(results)),
        "amount_succeeded": str(len(results) - failed),
        "amount_failed": str(failed),
        "results": results,
    }


def _lock_sessions_of(ctx: ApiContext, codes: list[str], campaign_raw: str | None) -> None:
    """The sessions a batch will change, and their campaigns, locked before it changes any."""
    session_ids: list[int] = []
    campaign_ids: list[int] = []
    for code in codes:
        try:
            campaign, row = service.find_session(ctx, code, campaign_raw)
        except ApiError:
            continue  # reported in its turn
        session_ids.append(row.id)
        campaign_ids.append(campaign.id)
    repository.lock_in_order(ctx.session, session_ids, campaign_ids)


def _search_text(given: str | None) -> str:
    """What to search for: an empty or blank `search` is missing (it would match every session
    whose customid, phone or email is empty)."""
    text = (given or "").strip()
    if not text:
        raise missing("search")
    return text


def _search_answer(ctx: ApiContext, campaign_ids: Any, text: str, page: int) -> dict[str, Any]:
    rows = repository.search(ctx.session, campaign_ids, text, page)
    campaigns = {
        c.id: c for c in (ctx.session.get(Campaign, cid) for cid in {r.campaign_id for r in rows}) if c
    }
    data = []
    for row in rows:
        campaign = campaigns[row.campaign_id]
        tz = service.account_zone(ctx.session, campaign.account_id)
        data.append(views.usage_item(ctx.runtime, campaign, row, tz, ctx.now))
    return {
        "page": str(page),
        "page_size": str(repository.SEARCH_PAGE_SIZE),
        "amount_of_results": str(len(data)),
        "data": data,
    }


@v3_endpoint(
    router, ["/v3/couponsession/search"], SessionSearch, summary="Search coupon sessions", read_only=True
)
def couponsession_search(ctx: ApiContext, req: SessionSearch) -> dict[str, Any]:
    """Sessions of all your campaigns whose custom validation code, customid, phone or email equals
    `search`, oldest first, 100 a page (`page` from 1)."""
    campaign_ids = select(Campaign.id).where(ctx.scope(Campaign.account_id), Campaign.deleted_at.is_(None))
    return _search_answer(ctx, campaign_ids, _search_text(req.search), _page(req.page))


@v3_endpoint(
    router, ["/v3/campaign/search"], CampaignSearch, summary="Search sessions of a campaign", read_only=True
)
def campaign_search(ctx: ApiContext, req: CampaignSearch) -> dict[str, Any]:
    """As couponsession/search, within one campaign."""
    campaign = service.get_campaign(ctx, req.campaign)
    return _search_answer(ctx, [campaign.id], _search_text(req.search), _page(req.page))


# ---------------------------------------------------------------- /v4/campaigns


@v4_endpoint(router, "POST", "/v4/campaigns", CampaignCreate, summary="Create a campaign", status_code=201)
def create_campaign(ctx: ApiContext, req: CampaignCreate) -> dict[str, Any]:
    """A new coupon campaign; answers its `id` (cam_…), 6-character `code` and consumer `url`."""
    campaign = service.create_campaign(ctx, req)
    return views.campaign_v4(ctx.session, ctx.runtime, campaign)


@v4_endpoint(router, "GET", "/v4/campaigns", CampaignListQuery, summary="List campaigns", read_only=True)
def list_campaigns(ctx: ApiContext, req: CampaignListQuery) -> list[Any]:
    """Your campaigns (and your subaccounts'), filtered as coupon/list filters them: `only_active`,
    `folder`, `tags` (any of them), `category` (an unknown one answers 516); an unknown folder is
    an empty list."""
    found = repository.campaigns(
        ctx.session,
        ctx.scope(Campaign.account_id),
        only_active=bool(req.only_active),
        folder=req.folder or None,
        category_id=service.category_id_of(ctx, req.category),
    )
    return [views.campaign_v4(ctx.session, ctx.runtime, c) for c in _tagged(found, req.tags)]


@v4_endpoint(router, "GET", "/v4/campaigns/{id}", NoParams, summary="Get a campaign", read_only=True)
def get_campaign(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    campaign = service.get_campaign(ctx, ctx.path_params["id"], "id")
    return views.campaign_v4(ctx.session, ctx.runtime, campaign)


@v4_endpoint(router, "PATCH", "/v4/campaigns/{id}", CampaignUpdate, summary="Update a campaign")
def patch_campaign(ctx: ApiContext, req: CampaignUpdate) -> dict[str, Any]:
    campaign = service.get_campaign(ctx, ctx.path_params["id"], "id")
    service.update_campaign(ctx, campaign, req)
    return views.campaign_v4(ctx.session, ctx.runtime, campaign)


@v4_endpoint(router, "DELETE", "/v4/campaigns/{id}", NoParams, summary="Delete a campaign")
def delete_campaign(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """Deletes the campaign: its pages stop working and it leaves every list."""
    campaign = service.get_campaign(ctx, ctx.path_params["id"], "id")
    service.delete_campaign(ctx, campaign)
    return {"id": service.campaign_public_id(campaign), "deleted": True}
