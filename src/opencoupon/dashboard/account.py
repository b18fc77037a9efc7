"""The account page: API credentials (client ID; rotate the secret, the old one valid for a grace
period, accounts.service.rotate_secret), the password (dashboard.router.change_password), time
zone and branding (logo URL and colours)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon import branding
from opencoupon.accounts import service as accounts
from opencoupon.dashboard.common import (
    FormProblem,
    api_context,
    ask_first,
    page,
    parse_int,
    password_text,
    runtime_of,
    text,
)
from opencoupon.dashboard.router import change_password
from opencoupon.dashboard.security import checked_form, require_login, sign_in
from opencoupon.errors import ApiError
from opencoupon.models import Account
from opencoupon.subaccounts.schemas import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from opencoupon.web import client_key

router = APIRouter(include_in_schema=False)

MAX_GRACE_HOURS = 24 * 7
COLOURS = (
    ("primary_color", "Main colour", "buttons, links and accents"),
    ("background_color", "Background colour", "behind the cards"),
    ("text_color", "Text colour", "on the white cards"),
)
_STORED = {"primary_color": "primary", "background_color": "background", "text_color": "text"}


def branding_problems(values: dict[str, str]) -> list[str]:
    """What is wrong with the branding fields, in words (an empty field keeps the default)."""
    problems = []
    logo = values.get("logo_url", "")
    if logo and not branding.logo_url_ok(logo):
        problems.append(
            "Logo URL: use a full web address starting with https:// or http://, "
            "such as https://example.com/logo.png."
        )
    labels = {name: label for name, label, _ in COLOURS}
    for name, label in labels.items():
        value = values.get(name, "")
        if value and not branding.colour_ok(value):
            problems.append(
                f"{label}: “{value}” is not a hex colour. "
                "Use # and 3 or 6 hex digits, such as #1f6feb or #f60."
            )
    text_colour = values.get("text_color", "")
    if branding.colour_ok(text_colour):
        ratio = branding.contrast(text_colour, "#ffffff")
        if ratio < branding.MIN_TEXT_CONTRAST:
            problems.append(
                f"{labels['text_color']}: {text_colour} is too light to read on the white cards "
                f"(contrast {ratio:.1f}:1 against white; at least {branding.MIN_TEXT_CONTRAST:.0f}:1 needed)."
            )
    return problems


def _stored_problems(branding_json: str) -> list[str]:
    """Stored values the pages ignore (written before this form checked them, or by hand)."""
    raw = branding.raw_values(branding_json)
    found = {
        "logo_url": str(raw.get("logo_url") or raw.get("logo") or "").strip(),
        **{name: str(raw.get(name) or "").strip() for name in _STORED},
    }
    return [f"Saved branding ignored on your pages. {p}" for p in branding_problems(found)]


def _preview(values: dict[str, str], company: str) -> branding.PageBrand:
    """The sample card: the form's values that are valid, read as the pages read stored ones."""
    return branding.read(json.dumps({k: v for k, v in values.items() if k != "timezone"}), company)


def _context(
    request: Request,
    account: Account,
    errors: list[str],
    values: dict[str, str] | None,
    password_errors: list[str] | None = None,
) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        fresh = ctx.account
        # Only what the account set: an empty field keeps the pages' default look.
        brand = branding.read(fresh.branding, fresh.company_name)
        shown = values or {
            "timezone": fresh.timezone,
            "logo_url": brand.logo_url,
            **{name: getattr(brand, attr) for name, attr in _STORED.items()},
        }
        warnings = [] if values else _stored_problems(fresh.branding)
        client_id = fresh.client_id
        company = brand.company
        has_password = bool(fresh.password_hash)
    return {
        "title": "Account",
        "account": account,
        "client_id": client_id,
        "values": shown,
        "errors": errors or warnings,
        "colours": COLOURS,
        "preview": _preview(shown, company),
        "company": company,
        "done": request.query_params.get("done", "")[:200],
        "max_grace": MAX_GRACE_HOURS,
        "has_password": has_password,
        "password_errors": password_errors or [],
        "min_password": MIN_PASSWORD_LENGTH,
    }


@router.get("/dashboard/account")
def account_page(request: Request, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/account.html", _context(request, account, [], None))


def _rotate(request: Request, account: Account, hours: int) -> str:
    with api_context(request, account, write=True) as ctx:
        return accounts.rotate_secret(
            ctx.session, ctx.runtime.keyring, ctx.account, dt.timedelta(hours=hours)
        )


def _save(request: Request, account: Account, timezone: str, brand: dict[str, str]) -> None:
    with api_context(request, account, write=True) as ctx:
        accounts.update_settings(ctx.session, ctx.account, timezone=timezone, branding=brand)


def _password_problems(current: str, new: str, confirm: str) -> list[str]:
    problems = []
    if not current:
        problems.append("Current password: enter the password you sign in with.")
    if not MIN_PASSWORD_LENGTH <= len(new) <= MAX_PASSWORD_LENGTH:
        problems.append(
            f"New password: use between {MIN_PASSWORD_LENGTH} and {MAX_PASSWORD_LENGTH} characters."
        )
    elif new != confirm:
        problems.append("New password: the two new passwords differ.")
    return problems


async def _change_password(request: Request, account: Account, form: Any) -> Response:
    """Ends every other session of the account (a new password hash) and signs this browser in
    again with the new password: a new session, the old cookie no longer valid."""
    current = password_text(form, "current_password")
    new = password_text(form, "password")
    problems = _password_problems(current, new, password_text(form, "password_confirm"))
    if not problems:
        address = client_key(request)
        outcome = await run_in_threadpool(
            change_password, runtime_of(request), account.id, current, new, address
        )
        if outcome.account is not None:
            done = "Password changed. Your other sessions are signed out."
            response = RedirectResponse(f"/dashboard/account?{urlencode({'done': done})}", status_code=303)
            sign_in(request, response, outcome.account)
            return response
        problems = [outcome.problem]
    context = await run_in_threadpool(_context, request, account, [], None, problems)
    return page(request, "dashboard/account.html", context, status_code=422)


@router.post("/dashboard/account/{action}")
async def account_action(
    request: Request, action: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    if action == "password":
        return await _change_password(request, account, form)
    values: dict[str, str] | None = None
    try:
        if action == "rotate":
            hours = parse_int(text(form, "grace_hours"), "Grace period (hours)", high=MAX_GRACE_HOURS)
            # Asked once the grace period is known to be usable, not before refusing it.
            asked = ask_first(request, form, account, "account.rotate", back="/dashboard/account")
            if asked is not None:
                return asked
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
        names = ("timezone", "logo_url", *(c for c, _, _ in COLOURS))
        # Longer than any valid value, so an over-long one is refused rather than cut.
        values = {name: text(form, name, branding.MAX_LOGO_URL + 1) for name in names}
        problems = []
        if not values["timezone"]:
            problems.append("Time zone: enter a name such as Europe/Brussels.")
        problems += branding_problems(values)
        if problems:
            raise FormProblem(problems)
        saved = {k: (v.lower() if k != "logo_url" else v) for k, v in values.items() if k != "timezone" and v}
        await run_in_threadpool(_save, request, account, values["timezone"], saved)
    except ApiError as err:
        context = await run_in_threadpool(_context, request, account, [err.description], values)
        return page(request, "dashboard/account.html", context, status_code=422)
    except FormProblem as problem:
        context = await run_in_threadpool(_context, request, account, problem.messages, values)
        return page(request, "dashboard/account.html", context, status_code=422)
    return RedirectResponse(f"/dashboard/account?{urlencode({'done': 'Saved.'})}", status_code=303)
