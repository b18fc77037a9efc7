"""The account page: API credentials (client ID; rotate the secret, the old one valid for a grace
period, accounts.service.rotate_secret), time zone and branding (logo URL and colours)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.accounts import service as accounts
from opencoupon.dashboard.common import FormProblem, api_context, page, parse_int, text
from opencoupon.dashboard.security import require_login, verify_csrf
from opencoupon.distribution.mail import parse_branding
from opencoupon.errors import ApiError
from opencoupon.models import Account

router = APIRouter(include_in_schema=False)

MAX_GRACE_HOURS = 24 * 7
_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")
COLOURS = (
    ("primary_color", "Main colour"),
    ("background_color", "Background colour"),
    ("text_color", "Text colour"),
)


def _context(
    request: Request, account: Account, errors: list[str], values: dict[str, str] | None
) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        fresh = ctx.account
        brand = parse_branding(fresh.branding, fresh.company_name)
        shown = values or {
            "timezone": fresh.timezone,
            "logo_url": brand.logo_url,
            "primary_color": brand.primary,
            "background_color": brand.background,
            "text_color": brand.text,
        }
        client_id = fresh.client_id
    return {
        "title": "Account",
        "account": account,
        "client_id": client_id,
        "values": shown,
        "errors": errors,
        "colours": COLOURS,
        "done": request.query_params.get("done", "")[:200],
        "max_grace": MAX_GRACE_HOURS,
    }


@router.get("/dashboard/account")
def account_page(request: Request, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/account.html", _context(request, account, [], None))


def _rotate(request: Request, account: Account, hours: int) -> str:
    with api_context(request, account, write=True) as ctx:
        return accounts.rotate_secret(
            ctx.session, ctx.runtime.keyring, ctx.account, dt.timedelta(hours=hours)
        )


def _save(request: Request, account: Account, timezone: str, branding: dict[str, str]) -> None:
    with api_context(request, account, write=True) as ctx:
        accounts.update_settings(ctx.session, ctx.account, timezone=timezone, branding=branding)


@router.post("/dashboard/account/{action}")
async def account_action(
    request: Request, action: str, account: Account = Depends(require_login)
) -> Response:
    form = await request.form()
    verify_csrf(request, form)
    values: dict[str, str] | None = None
    try:
        if action == "rotate":
            hours = parse_int(text(form, "grace_hours"), "Grace period (hours)", high=MAX_GRACE_HOURS)
            secret = await run_in_threadpool(_rotate, request, account, 24 if hours is None else hours)
            context = {
                "title": "New API secret",
                "account": account,
                "secret": secret,
                "grace_hours": 24 if hours is None else hours,
            }
            return page(request, "dashboard/account_secret.html", context)
        if action != "settings":
            raise FormProblem(["Unknown action."])
        values = {name: text(form, name, 500) for name in ("timezone", "logo_url", *(c for c, _ in COLOURS))}
        problems = []
        if not values["timezone"]:
            problems.append("Time zone: enter a name such as Europe/Brussels.")
        if values["logo_url"] and not values["logo_url"].startswith(("https://", "http://")):
            problems.append("Logo URL: use an address starting with https://.")
        for name, label in COLOURS:
            if values[name] and not _HEX.match(values[name]):
                problems.append(f"{label}: use a colour such as #1f6feb.")
        if problems:
            raise FormProblem(problems)
        branding = {k: v for k, v in values.items() if k != "timezone" and v}
        await run_in_threadpool(_save, request, account, values["timezone"], branding)
    except ApiError as err:
        context = await run_in_threadpool(_context, request, account, [err.description], values)
        return page(request, "dashboard/account.html", context, status_code=422)
    except FormProblem as problem:
        context = await run_in_threadpool(_context, request, account, problem.messages, values)
        return page(request, "dashboard/account.html", context, status_code=422)
    return RedirectResponse(f"/dashboard/account?{urlencode({'done': 'Saved.'})}", status_code=303)
