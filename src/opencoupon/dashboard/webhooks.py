"""Dashboard pages for webhook endpoints: create (the signing secret shown once), edit the event
filter, enable/disable, rotate the secret (shown once, the old one valid for a grace period), the
delivery log, and replay one event or everything since a time. All through webhooks.service."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.accounts import repository as accounts_repo
from opencoupon.dashboard.common import (
    FormProblem,
    api_context,
    ask_first,
    build,
    check_text,
    many,
    page,
    parse_int,
    problem_of,
    text,
)
from opencoupon.dashboard.security import PageError, checked_form, require_login
from opencoupon.errors import ApiError
from opencoupon.events.service import EVENT_TYPES
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Account, WebhookEndpoint
from opencoupon.webhooks import repository, service, throttle
from opencoupon.webhooks.schemas import DeliveryQuery, EndpointCreate, EndpointUpdate, Replay, Rotate

router = APIRouter(include_in_schema=False)

NOT_FOUND = PageError(404, "Not found", "There is no such webhook endpoint in your account.")
LOG_SIZE = 50
ACTIONS = ("edit", "rotate", "replay", "delete")
# The service cuts a longer description to its column; the form refuses it instead (check_text).
DESCRIPTION_LIMIT = 200
DESCRIPTION = {"description": ("Description", DESCRIPTION_LIMIT)}
RATE_LIMIT_LABEL = "Max messages per second"


def _rate_limit(form: FormData) -> int | None:
    """The form's rate limit; empty: no limit."""
    return parse_int(text(form, "rate_limit", 20), RATE_LIMIT_LABEL, low=1, high=throttle.MAX_RATE)


def _subaccounts(ctx: ApiContext) -> list[tuple[str, str]]:
    if ctx.account.parent_id is not None:
        return []
    return [
        (f"sub_{s.id}", s.company_name or s.email)
        for s in accounts_repo.subaccounts(ctx.session, ctx.account.id)
    ]


def _list_context(
    request: Request, account: Account, errors: list[str], values: dict[str, Any]
) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        rows = repository.endpoints(ctx.session, ctx.scope(WebhookEndpoint.account_id))
        endpoints = [service.to_public(e, ctx) for e in rows]
        subs = _subaccounts(ctx)
    return {
        "title": "Webhooks",
        "account": account,
        "endpoints": endpoints,
        "event_types": EVENT_TYPES,
        "subaccounts": subs,
        "errors": errors,
        "values": values,
    }


@router.get("/dashboard/webhooks")
def webhooks_page(request: Request, account: Account = Depends(require_login)) -> Response:
    context = _list_context(request, account, [], {"events": ["*"]})
    return page(request, "dashboard/webhooks.html", context)


def _create(request: Request, account: Account, data: dict[str, Any]) -> dict[str, Any]:
    req = build(EndpointCreate, data)
    try:
        with api_context(request, account, write=True) as ctx:
            return service.create(ctx, req)
    except ApiError as err:
        raise FormProblem([err.description]) from None


@router.post("/dashboard/webhooks")
async def create_endpoint(request: Request, account: Account = Depends(require_login)) -> Response:
    form = await checked_form(request)
    values = {
        "url": text(form, "url", 2001),  # one more than the API takes: refused, not cut
        "description": text(form, "description", DESCRIPTION_LIMIT + 1),
        "events": many(form, "events"),
        "subaccount": text(form, "subaccount", 40),
        "rate_limit": text(form, "rate_limit", 20),
    }
    try:
        if not values["url"]:
            raise FormProblem(["URL: enter the address that receives the events."])
        if not values["events"]:
            raise FormProblem(["Events: choose at least one."])
        check_text(values, DESCRIPTION)
        data = {**values, "events": ",".join(values["events"]), "rate_limit": _rate_limit(form)}
        if not data["subaccount"]:
            del data["subaccount"]
        created = await run_in_threadpool(_create, request, account, data)
    except FormProblem as problem:
        context = await run_in_threadpool(_list_context, request, account, problem.messages, values)
        return page(request, "dashboard/webhooks.html", context, status_code=422)
    # The secret is shown in this answer only (not stored in clear, not put in a URL).
    context = {
        "title": "Webhook created",
        "account": account,
        "endpoint": created,
        "secret": created["secret"],
        "rotated": False,
    }
    return page(request, "dashboard/webhook_secret.html", context, status_code=201)


# --- one endpoint ------------------------------------------------------------------------------


def _with_endpoint(ctx: ApiContext, public_id: str) -> WebhookEndpoint:
    ctx.path_params["id"] = public_id
    try:
        return service.get(ctx, public_id)
    except ApiError:
        raise NOT_FOUND from None


def _endpoint_context(request: Request, account: Account, public_id: str) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        endpoint = _with_endpoint(ctx, public_id)
        info = service.to_public(endpoint, ctx)
        log = service.deliveries(ctx, DeliveryQuery(limit=LOG_SIZE))
    return {
        "title": "Webhook endpoint",
        "account": account,
        "endpoint": info,
        "public_id": public_id,
        "deliveries": log,
        "event_types": EVENT_TYPES,
        "done": request.query_params.get("done", "")[:300],
        "problem": request.query_params.get("problem", "")[:300],
    }


@router.get("/dashboard/webhooks/{public_id}")
def endpoint_page(request: Request, public_id: str, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/webhook.html", _endpoint_context(request, account, public_id))


def _back(public_id: str, **params: str) -> Response:
    # Quoted: an ID with `?` or `&` in it must not add its own fields (a notice) to the address.
    path = f"/dashboard/webhooks/{quote(public_id, safe='')}"
    return RedirectResponse(f"{path}?{urlencode(params)}", status_code=303)


def _check_endpoint(request: Request, account: Account, public_id: str) -> None:
    """404 unless `public_id` is an endpoint the account reaches: before any answer names it."""
    with api_context(request, account) as ctx:
        _with_endpoint(ctx, public_id)


def _change(request: Request, account: Account, public_id: str, action: str, form: dict[str, Any]) -> Any:
    with api_context(request, account, write=True) as ctx:
        _with_endpoint(ctx, public_id)
        if action == "edit":
            return service.update(ctx, build(EndpointUpdate, form))
        if action == "rotate":
            return service.rotate(ctx, build(Rotate, form))
        if action == "replay":
            return service.replay(ctx, build(Replay, form))
        if action == "delete":
            return service.delete(ctx)
        raise NOT_FOUND


def _action_data(action: str, form: FormData) -> dict[str, Any]:
    """The service's input for `action`, from the form; FormProblem when the form is not usable."""
    data: dict[str, Any] = {}
    if action == "edit":
        events = many(form, "events")
        if not events:
            raise FormProblem(["Events: choose at least one."])
        data = {
            "events": ",".join(events),
            "description": text(form, "description", DESCRIPTION_LIMIT + 1),
            "enabled": text(form, "enabled") == "1",
            "rate_limit": _rate_limit(form),
        }
        check_text(data, DESCRIPTION)
    elif action == "rotate":
        hours = parse_int(text(form, "grace_hours"), "Grace period (hours)", high=service.MAX_GRACE_HOURS)
        if hours is not None:
            data["grace_hours"] = hours
    elif action == "replay":
        for name in ("event", "since"):
            if text(form, name, 40):
                data[name] = text(form, name, 40)
        if not data:
            raise FormProblem(["Replay: choose an event or enter a time (UTC)."])
        if "since" in data:
            try:
                service.parse_since(data["since"])  # the replay's own reading of the time
            except ApiError as err:
                raise problem_of(err) from None
    return data


@router.post("/dashboard/webhooks/{public_id}/{action}")
async def endpoint_action(
    request: Request, public_id: str, action: str, account: Account = Depends(require_login)
) -> Response:
    form = await checked_form(request)
    if action not in ACTIONS:
        raise NOT_FOUND
    await run_in_threadpool(_check_endpoint, request, account, public_id)
    try:
        # Checked before asking: a yes to a value that is then refused would be asked for nothing.
        data = _action_data(action, form)
    except FormProblem as problem:
        return _back(public_id, problem="; ".join(problem.messages))
    # The actions that cannot be taken back are asked first. Replaying one event from the log
    # asks nothing; everything since a time does.
    if action in ("rotate", "delete") or (action == "replay" and text(form, "since", 40)):
        asked = ask_first(
            request, form, account, f"webhook.{action}", back=f"/dashboard/webhooks/{public_id}"
        )
        if asked is not None:
            return asked
    try:
        answer = await run_in_threadpool(_change, request, account, public_id, action, data)
    except FormProblem as problem:
        return _back(public_id, problem="; ".join(problem.messages))
    except ApiError as err:
        return _back(public_id, problem=err.description)
    if action == "rotate":
        context = {
            "title": "Secret rotated",
            "account": account,
            "endpoint": answer,
            "secret": answer["secret"],
            "rotated": True,
        }
        return page(request, "dashboard/webhook_secret.html", context)
    if action == "delete":
        return RedirectResponse("/dashboard/webhooks", status_code=303)
    if action == "replay":
        return _back(public_id, done=f"{answer['queued']} deliveries queued.")
    return _back(public_id, done="Saved.")
