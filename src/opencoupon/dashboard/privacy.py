"""The privacy page: a customer's "what do you hold about me?" or "erase me", answered without the
API. Both forms name the person by email (and optionally phone) and call privacy.service in the
signed-in account's tenancy, as GET /v4/privacy/export and POST /v4/privacy/erase do: the export is
the API's JSON as a file download (a read), the erasure asks first and then runs in one write
transaction; the page's notice gives the counts per kind of record."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.dashboard.common import (
    FormProblem,
    api_context,
    ask_first,
    build,
    no_store,
    page,
    problem_of,
    text,
)
from opencoupon.dashboard.security import checked_form, require_login
from opencoupon.errors import ApiError
from opencoupon.kit.body import check_characters
from opencoupon.models import Account
from opencoupon.privacy import service
from opencoupon.privacy.schemas import PersonRef

router = APIRouter(include_in_schema=False)

PAGE = "/dashboard/privacy"
# What the erasure notice calls each kind of record privacy.service.erase counts.
KIND_LABELS = {
    "coupon_sessions": "coupon sessions",
    "loyalty_users": "loyalty card holders",
    "directory_users": "directory users",
    "sends": "email/SMS sends",
    "push_notifications": "pushes sent to them alone",
    "push_subscriptions": "push subscriptions (deleted)",
    "events": "stored events",
    "webhook_attempts": "logged webhook answers",
    "singleuse_batches": "single-use link lists",
    "kept_answers": "answers kept for Idempotency-Key retries",
}


def _values(form: FormData) -> dict[str, str]:
    # Longer than any address the service accepts (254), so an over-long one is refused, not cut.
    return {"email": text(form, "email", 320), "phone": text(form, "phone", 100)}


def _person(values: dict[str, str]) -> service.Person:
    """The person the form names, checked as the API checks it (no database read)."""
    try:
        check_characters(values)  # NUL and the like: refused as the API refuses them (301)
        return service.person_of(build(PersonRef, values))
    except ApiError as err:
        raise problem_of(err) from None


def _context(
    request: Request,
    account: Account,
    *,
    which: str = "",
    values: dict[str, str] | None = None,
    errors: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "title": "Privacy",
        "account": account,
        "which": which,
        "values": values or {},
        "errors": errors or [],
        "done": request.query_params.get("done", "")[:600],
    }


def _form_again(
    request: Request, account: Account, which: str, values: dict[str, str], problem: FormProblem
) -> Response:
    """The page again (422) with the refused form filled in as sent and the service's message."""
    context = _context(request, account, which=which, values=values, errors=problem.messages)
    return page(request, "dashboard/privacy.html", context, status_code=422)


@router.get(PAGE)
def privacy_page(request: Request, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/privacy.html", _context(request, account))


def _export(request: Request, account: Account, person: service.Person) -> Response:
    with api_context(request, account) as ctx:
        body = service.export(ctx, person)
        day = ctx.now.date().isoformat()
    # The API's answer (JSONResponse, encoded here in the thread pool), as a file.
    response = JSONResponse(
        body, headers={"Content-Disposition": f'attachment; filename="privacy-export-{day}.json"'}
    )
    return no_store(response)


@router.post(f"{PAGE}/export")
async def export_download(request: Request, account: Account = Depends(require_login)) -> Response:
    form = await checked_form(request)
    values = _values(form)
    try:
        person = _person(values)
        return await run_in_threadpool(_export, request, account, person)
    except FormProblem as problem:
        return _form_again(request, account, "export", values, problem)


def _erase(request: Request, account: Account, person: service.Person) -> dict[str, int]:
    # Kept answers are opened before the write transaction, as the API's erasure does.
    with api_context(request, account) as ctx:
        kept = service.kept_answers(ctx, person)
    with api_context(request, account, write=True) as ctx:
        return service.erase(ctx, person, kept)


def summary(counts: dict[str, int]) -> str:
    """The notice after an erasure: how many records of each kind changed."""
    parts = [f"{KIND_LABELS.get(kind, kind)}: {counts.get(kind, 0)}" for kind in service.KINDS]
    if not any(counts.values()):
        return "Nothing was erased: no record holds this person's details. " + "; ".join(parts) + "."
    return "Erased. Records changed: " + "; ".join(parts) + "."


@router.post(f"{PAGE}/erase")
async def erase(request: Request, account: Account = Depends(require_login)) -> Response:
    form = await checked_form(request)
    values = _values(form)
    try:
        person = _person(values)
        # Asked once the input is known to be usable, not before refusing it.
        asked = ask_first(request, form, account, "privacy.erase", back=PAGE, what=person.email)
        if asked is not None:
            return asked
        counts = await run_in_threadpool(_erase, request, account, person)
    except FormProblem as problem:
        return _form_again(request, account, "erase", values, problem)
    # The notice carries counts only: the person's email stays out of addresses and logs.
    return RedirectResponse(f"{PAGE}?{urlencode({'done': summary(counts)})}", status_code=303)
