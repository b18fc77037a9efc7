"""Dashboard pages for masters' subaccounts: list with usage, create, edit, block/unblock, expiry,
"open as" (a one-time SSO link from accounts.sso, the same as /v3/subaccount/sso) and a one-time
password-reset link to pass on (accounts.sso.reset_link, the same as /v3/subaccount/reset/url).

Opening as a subaccount signs this browser in as the subaccount (the master's session ends there):
the SSO landing replaces the session cookie, as it does for links made through the API."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.accounts import repository as accounts_repo
from opencoupon.accounts import sso
from opencoupon.dashboard.common import (
    FormProblem,
    api_context,
    ask_first,
    build,
    check_text,
    page,
    password_text,
    text,
)
from opencoupon.dashboard.security import PageError, checked_form, require_login
from opencoupon.errors import ApiError
from opencoupon.models import Account
from opencoupon.subaccounts import repository, service
from opencoupon.subaccounts.schemas import MIN_PASSWORD_LENGTH, SubaccountCreate, SubaccountUpdate

router = APIRouter(include_in_schema=False)

FIELDS = (
    "email",
    "company_name",
    "first_name",
    "last_name",
    "expiry_date",
    "status",
    "max_campaigns",
    "timezone",
)
# On the edit form: emptied, these are cleared (an expiry removed); the required ones are refused
# instead. Left out of the post, either kind is kept.
CLEARABLE = ("company_name", "first_name", "last_name", "expiry_date")
REQUIRED = {
    "email": "Email: enter the subaccount's email address.",
    "timezone": "Time zone: enter a name such as Europe/Brussels.",
}
MASTERS_ONLY = PageError(403, "For main accounts", "Only a main account manages subaccounts.")
NOT_FOUND = PageError(404, "Not found", "There is no such subaccount.")


def _require_master(account: Account) -> None:
    if account.parent_id is not None:
        raise MASTERS_ONLY


def _usage(session: Any, sub: Account) -> dict[str, int]:
    campaigns = repository.campaigns_of(session, sub.id)
    return {
        "campaigns": len(campaigns),
        "opens": sum(c.opens_count for c in campaigns),
        "claims": sum(c.claims_count for c in campaigns),
        "validations": sum(c.validations_count for c in campaigns),
    }


def _list_context(
    request: Request, account: Account, errors: list[str], values: dict[str, str]
) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        rows = []
        for sub in accounts_repo.subaccounts(ctx.session, account.id):
            rows.append(
                {**service.to_public(ctx.session, ctx, sub, detail=False), "usage": _usage(ctx.session, sub)}
            )
    return {
        "title": "Subaccounts",
        "account": account,
        "subaccounts": rows,
        "errors": errors,
        "values": values,
        "done": request.query_params.get("done", "")[:200],
        "min_password_length": MIN_PASSWORD_LENGTH,
    }


@router.get("/dashboard/subaccounts")
def subaccounts_page(request: Request, account: Account = Depends(require_login)) -> Response:
    _require_master(account)
    return page(
        request, "dashboard/subaccounts.html", _list_context(request, account, [], {"status": "customer"})
    )


def _form_values(form: Any) -> dict[str, str]:
    # Whole: the schema refuses what is too long (a cut could also turn junk into a date).
    return {name: text(form, name) for name in FIELDS}


def _data(values: dict[str, str]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v}


def _create(request: Request, account: Account, data: dict[str, Any]) -> str:
    req = build(SubaccountCreate, data)
    try:
        with api_context(request, account, write=True) as ctx:
            return f"sub_{service.create(ctx, req).id}"
    except ApiError as err:
        raise FormProblem([err.description]) from None


@router.post("/dashboard/subaccounts")
async def create_subaccount(request: Request, account: Account = Depends(require_login)) -> Response:
    _require_master(account)
    form = await checked_form(request)
    values = _form_values(form)
    data = _data(values)
    # As typed: sign-in compares it unstripped, so "  padded  " must be stored so too.
    password = password_text(form, "password")
    if password:
        data["password"] = password
    try:
        if not values["email"]:
            raise FormProblem(["Email: enter the subaccount's email address."])
        check_text(values, {})
        sub_id = await run_in_threadpool(_create, request, account, data)
    except FormProblem as problem:
        context = await run_in_threadpool(_list_context, request, account, problem.messages, values)
        return page(request, "dashboard/subaccounts.html", context, status_code=422)
    return RedirectResponse(
        f"/dashboard/subaccounts/{sub_id}?{urlencode({'done': 'Subaccount created.'})}", status_code=303
    )


def _sub_context(
    request: Request, account: Account, sub_id: str, errors: list[str], values: dict[str, str] | None
) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        try:
            sub = service.get_subaccount(ctx, sub_id)
        except ApiError:
            raise NOT_FOUND from None
        info = service.to_public(ctx.session, ctx, sub, detail=True)
        usage = _usage(ctx.session, sub)
    shown = values or {
        "email": info["email"],
        "company_name": info["company_name"],
        "first_name": info["first_name"],
        "last_name": info["last_name"],
        "expiry_date": info["expiry_date"],
        "status": info["status"],
        "max_campaigns": info["max_campaigns"],
        "timezone": sub.timezone,
    }
    return {
        "title": info["email"],
        "account": account,
        "sub": info,
        "sub_id": sub_id,
        "usage": usage,
        "errors": errors,
        "values": shown,
        "done": request.query_params.get("done", "")[:200],
    }


@router.get("/dashboard/subaccounts/{sub_id}")
def subaccount_page(request: Request, sub_id: str, account: Account = Depends(require_login)) -> Response:
    _require_master(account)
    return page(request, "dashboard/subaccount.html", _sub_context(request, account, sub_id, [], None))


def _update(request: Request, account: Account, data: dict[str, Any]) -> None:
    req = build(SubaccountUpdate, data)
    try:
        with api_context(request, account, write=True) as ctx:
            service.update(ctx, req)
    except ApiError as err:
        raise FormProblem([err.description]) from None


def _open_as(request: Request, account: Account, sub_id: str) -> str:
    with api_context(request, account, write=True) as ctx:
        try:
            sub = service.get_subaccount(ctx, sub_id)
        except ApiError:
            raise NOT_FOUND from None
        link = sso.sso_link(ctx, sub, None, None)
    return str(urlsplit(str(link["url"])).path)


def _reset_link(request: Request, account: Account, sub_id: str) -> dict[str, Any]:
    with api_context(request, account, write=True) as ctx:
        try:
            sub = service.get_subaccount(ctx, sub_id)
        except ApiError:
            raise NOT_FOUND from None
        return {**sso.reset_link(ctx, sub), "email": sub.email}


@router.post("/dashboard/subaccounts/{sub_id}/{action}")
async def subaccount_action(
    request: Request, sub_id: str, action: str, account: Account = Depends(require_login)
) -> Response:
    _require_master(account)
    form = await checked_form(request)
    if action == "open":
        try:
            path = await run_in_threadpool(_open_as, request, account, sub_id)
        except ApiError as err:
            raise PageError(409, "Cannot open this subaccount", err.description) from None
        return RedirectResponse(path, status_code=303)
    if action == "reset":
        link = await run_in_threadpool(_reset_link, request, account, sub_id)
        context = {"title": "Password reset link", "account": account, "sub_id": sub_id, **link}
        return page(request, "dashboard/subaccount_reset.html", context)
    values: dict[str, str] | None = None
    if action == "edit":
        values = _form_values(form)
        # An emptied expiry date removes the expiry and an emptied name or company is cleared (sent
        # empty, as the API clears it); a field the post leaves out is kept.
        cleared = {name: values[name] for name in CLEARABLE if name in form}
        data: dict[str, Any] = {**_data(values), **cleared, "subaccount": sub_id}
        done = "Saved."
    elif action in ("block", "unblock"):
        if action == "block":
            asked = ask_first(
                request, form, account, "subaccount.block", back=f"/dashboard/subaccounts/{sub_id}"
            )
            if asked is not None:
                return asked
        data = {"subaccount": sub_id, "block": action == "block"}
        done = (
            "Blocked: the subaccount can no longer sign in or call the API."
            if action == "block"
            else "Unblocked."
        )
    else:
        raise NOT_FOUND
    try:
        if values is not None:
            # Not "saved" while the old value is kept: refused.
            emptied = [message for name, message in REQUIRED.items() if name in form and not values[name]]
            if emptied:
                raise FormProblem(emptied)
        check_text(data, {})
        await run_in_threadpool(_update, request, account, data)
    except FormProblem as problem:
        context = await run_in_threadpool(_sub_context, request, account, sub_id, problem.messages, values)
        return page(request, "dashboard/subaccount.html", context, status_code=422)
    return RedirectResponse(f"/dashboard/subaccounts/{sub_id}?{urlencode({'done': done})}", status_code=303)
