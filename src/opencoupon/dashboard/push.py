"""Dashboard pages for push notifications: compose a message to one coupon session or card holder,
or to every subscriber of a campaign or loyalty card, and follow the fan-out's progress (the
durable fan-out of push.service, run by the job runner)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.coupons import repository as coupons_repo
from opencoupon.dashboard.common import FormProblem, api_context, page, text
from opencoupon.dashboard.security import PageError, checked_form, require_login
from opencoupon.errors import ApiError
from opencoupon.loyalty import repository as loyalty_repo
from opencoupon.models import Account, Campaign, LoyaltyCard
from opencoupon.push import service, targets

router = APIRouter(include_in_schema=False)

NOT_FOUND = PageError(404, "Not found", "There is no such push notification in your account.")


def _context(request: Request, account: Account, errors: list[str], values: dict[str, str]) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        campaigns = [
            (f"cam_{c.id}", c.name)
            for c in coupons_repo.campaigns(ctx.session, ctx.scope(Campaign.account_id))
        ]
        cards = [
            (f"card_{c.id}", c.name)
            for c in loyalty_repo.cards(
                ctx.session, ctx.scope(LoyaltyCard.account_id), only_active=False, descending=False
            )
        ]
    return {
        "title": "Push notifications",
        "account": account,
        "campaigns": campaigns,
        "cards": cards,
        "errors": errors,
        "values": values,
        "max_message": service.MAX_MESSAGE,
    }


@router.get("/dashboard/push")
def compose_page(request: Request, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/push.html", _context(request, account, [], {}))


def _send(request: Request, account: Account, target: str, recipient: str, message: str) -> str:
    try:
        with api_context(request, account, write=True) as ctx:
            if target.startswith("card_"):
                group = targets.loyalty_card(ctx, target.removeprefix("card_"))
                key = targets.loyalty_holder(ctx, group, recipient) if recipient else ""
            else:
                group = targets.campaign(ctx, target)
                key = targets.coupon_session(ctx, group, recipient) if recipient else ""
            fanout = service.queue_fanout(ctx, group, message, key)
            return f"{service.PREFIX}{fanout.id}"
    except ApiError as err:
        raise FormProblem([err.description]) from None


@router.post("/dashboard/push")
async def send(request: Request, account: Account = Depends(require_login)) -> Response:
    form = await checked_form(request)
    values = {
        "target": text(form, "target", 40),
        "recipient": text(form, "recipient", 40),
        "message": text(form, "message", service.MAX_MESSAGE + 1),
    }
    try:
        if not values["target"]:
            raise FormProblem(["Send to: choose a campaign or loyalty card."])
        if not values["message"]:
            raise FormProblem(["Message: write the text to send."])
        fanout_id = await run_in_threadpool(
            _send, request, account, values["target"], values["recipient"], values["message"]
        )
    except FormProblem as problem:
        context = await run_in_threadpool(_context, request, account, problem.messages, values)
        return page(request, "dashboard/push.html", context, status_code=422)
    return RedirectResponse(f"/dashboard/push/{fanout_id}", status_code=303)


def _progress(request: Request, account: Account, fanout_id: str) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        try:
            fanout = service.to_public(service.get_fanout(ctx, fanout_id))
        except ApiError:
            raise NOT_FOUND from None
    handled = fanout["sent"] + fanout["failed"] + fanout["removed"]
    return {"title": "Push notification", "account": account, "fanout": fanout, "handled": handled}


@router.get("/dashboard/push/{fanout_id}")
def progress_page(request: Request, fanout_id: str, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/push_progress.html", _progress(request, account, fanout_id))


@router.get("/dashboard/push/{fanout_id}/progress")
def progress_fragment(
    request: Request, fanout_id: str, account: Account = Depends(require_login)
) -> Response:
    return page(request, "dashboard/_push_progress.html", _progress(request, account, fanout_id))
