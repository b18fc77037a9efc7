"""What every dashboard page shares: the API context for the signed-in person (so pages call the
same services as the API, with the same tenancy scope), form reading and validation messages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.accounts import repository as accounts_repo
from opencoupon.dashboard.security import CSRF_FIELD, known_account
from opencoupon.errors import ApiError
from opencoupon.kit.body import check_characters
from opencoupon.kit.clock import utcnow
from opencoupon.kit.endpoint import ApiContext
from opencoupon.kit.params import V3Request
from opencoupon.models import Account
from opencoupon.pages import deny_framing, render, templates
from opencoupon.runtime import Runtime
from opencoupon.subaccounts.schemas import MAX_PASSWORD_LENGTH

M = TypeVar("M", bound=V3Request)
Saved = TypeVar("Saved")


class FormProblem(Exception):
    """Form input the services refused: shown above the form, with the form filled in again."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@contextmanager
def api_context(request: Request, account: Account, *, write: bool = False) -> Iterator[ApiContext]:
    """One transaction (or read) as `account`: the context every service function expects."""
    runtime = runtime_of(request)
    opener = runtime.db.transaction if write else runtime.db.read
    with opener() as session:
        fresh = accounts_repo.by_id(session, account.id)
        if fresh is None:
            raise FormProblem(["Your account no longer exists."])
        yield ApiContext(session=session, account=fresh, runtime=runtime, now=utcnow())


def no_store(response: Response) -> Response:
    # Pages with one-time tokens or personal data must not be cached or shown from history.
    response.headers["Cache-Control"] = "no-store"
    return response


def page(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """A dashboard page: never cached, never shown in another site's frame (clickjacking)."""
    return deny_framing(no_store(render(request, template, context, status_code=status_code)))


async def saved_or_form_again(
    request: Request,
    template: str,
    *,
    save: Callable[[], Saved],
    form_again: Callable[[list[str]], dict[str, Any]],
    saved_path: Callable[[Saved], str],
) -> Response:
    """A create/edit form's post: `save` (in the thread pool, it reads the database), then the saved
    item's page; input it refuses (FormProblem) shows the form again (422), filled in as sent, with
    the messages above it."""
    try:
        saved = await run_in_threadpool(save)
    except FormProblem as problem:
        context = await run_in_threadpool(form_again, problem.messages)
        return page(request, template, context, status_code=422)
    return RedirectResponse(saved_path(saved), status_code=303)


# Set to "yes" by a destructive form's confirm() in the browser, or by the button of the page
# `ask_first` shows when it is not (no JavaScript): either way the person said yes once.
CONFIRMED_FIELD = "confirmed"


@dataclass(frozen=True)
class Question:
    """What a destructive action asks before it happens, and what a yes leads to. `text` may name
    the thing acted on as {what}: a page listing it names it (a code, a name), the server's
    question page, which has only the posted form, says `what` ("this coupon")."""

    text: str
    detail: str
    what: str = ""

    def asked(self, what: str = "") -> str:
        return self.text.replace("{what}", what or self.what)

    def in_full(self, what: str = "") -> str:
        """The browser's confirm(): the question and what follows, in one line."""
        return f"{self.asked(what)} {self.detail}"


# Every question the dashboard asks, once: the server's page (ask_first) and the browser's
# confirm() (templates: forms.ask_first_form, through the confirm_question global) read it here.
QUESTIONS: dict[str, Question] = {
    "coupon.validate": Question(
        "Validate {what}?",
        "It counts as used at the counter, as if the staff had validated it.",
        what="this coupon",
    ),
    "coupon.void": Question(
        "Void {what}?",
        "The consumer can no longer use it (it can be re-activated later).",
        what="this coupon",
    ),
    "account.rotate": Question(
        "Make a new API secret?", "The current secret stops working when the grace period ends."
    ),
    "webhook.rotate": Question(
        "Rotate the signing secret?", "Receivers must switch to the new secret before the grace period ends."
    ),
    "webhook.replay": Question(
        "Send every event since this time again?",
        "The endpoint receives them again, each with its original webhook-id.",
    ),
    "webhook.delete": Question("Delete this endpoint?", "Events will no longer be sent to it."),
    "subaccount.block": Question(
        "Block this subaccount?", "It can no longer sign in or use the API until it is unblocked."
    ),
    "loyalty_holder.void": Question(
        "Void this holder?", "Their card stops collecting and spending until it is re-activated."
    ),
    "category.delete": Question(
        "Delete {what} and its subcategories?",
        "Campaigns in them are not deleted; they lose the category.",
        what="this category",
    ),
    "directory.delete": Question(
        "Delete {what}?",
        "Its page stops answering and its registered users can no longer sign in to it. Its "
        "campaigns and loyalty cards are not deleted; they keep working on their own pages.",
        what="this directory",
    ),
    "privacy.erase": Question(
        "Erase everything held about {what}?",
        "Their names, email, phone, birthday, address and custom fields are blanked in every "
        "coupon session, loyalty card holder, directory user, email/SMS send and stored event "
        "that holds them; their push subscriptions are deleted and messages not yet sent to them "
        "are stopped. Sessions, validations, balances, the ledger and statistics stay. This cannot "
        "be undone.",
        what="this person",
    ),
    "directory_user.revoke": Question(
        "Revoke access for {what}?",
        "They can no longer open the directory's coupons until access is granted again.",
        what="this user",
    ),
}


def confirm_question(key: str, what: str = "") -> str:
    """The browser's confirm() text of QUESTIONS[key] (a template global)."""
    return QUESTIONS[key].in_full(what)


templates.env.globals["confirm_question"] = confirm_question


def dashboard_account(request: Request) -> Account | None:
    """The person signed in to the dashboard on this request, for a page rendered without a
    handler's context (error.html, a template global): an error page under /dashboard/ then keeps
    the navigation and sign-out. Outside the dashboard, None: consumer pages are not theirs."""
    if not request.url.path.startswith("/dashboard/"):
        return None
    # Only the account already looked up (require_login, or security.error_page in the thread
    # pool): this renders on the event loop, where a database read would hold up every request.
    return known_account(request)


templates.env.globals["dashboard_account"] = dashboard_account


def ask_first(
    request: Request, form: FormData, account: Account, key: str, *, back: str, what: str = ""
) -> Response | None:
    """None when the person has confirmed this destructive form; otherwise a page asking
    QUESTIONS[key], whose button posts the same fields to the same address again, confirmed."""
    if text(form, CONFIRMED_FIELD) == "yes":
        return None
    question = QUESTIONS[key]
    fields = [
        (name, value)
        for name, value in form.multi_items()
        if isinstance(value, str) and name not in (CONFIRMED_FIELD, CSRF_FIELD)
    ]
    context = {
        "title": question.asked(what),
        "account": account,
        "question": question.asked(what),
        "detail": question.detail,
        "action": request.url.path,
        "fields": fields,
        "back": back,
    }
    return page(request, "dashboard/confirm.html", context)


def text(form: FormData, name: str, limit: int | None = None) -> str:
    """A field's text, stripped and whole (the body limit, kit.bodylimit, bounds it): what the API
    takes whole, a form saves whole. A `limit` cuts it: only one character past what check_text
    (or the service) then refuses, so the cut value is refused too, never saved. Line breaks are
    "\n", as the API takes them: a browser sends each line break of a textarea as "\r\n", so a
    text saved unchanged would otherwise change (and grow)."""
    value = form.get(name)
    return value.replace("\r\n", "\n").strip()[:limit] if isinstance(value, str) else ""


def password_text(form: FormData, name: str) -> str:
    """A password as typed, spaces included (sign-in and the reset page take it so), and one
    character past the longest allowed, so an over-long one is refused rather than cut."""
    value = form.get(name)
    return value[: MAX_PASSWORD_LENGTH + 1] if isinstance(value, str) else ""


def check_text(values: Mapping[str, Any], limits: Mapping[str, tuple[str, int]]) -> None:
    """Refuse (FormProblem) what the API refuses in any text (NUL: error 301, the same check), and
    a field longer than `limits` gives it ({field: (label, characters)}), which would otherwise be
    cut where it is stored while the page says saved. Read such a field with one character more
    than its limit: text(form, name, limit + 1)."""
    problems = [
        f"{label}: use at most {limit} characters."
        for name, (label, limit) in limits.items()
        if len(values.get(name) or "") > limit
    ]
    try:
        check_characters(dict(values))
    except ApiError as err:
        problems.append(err.description)
    if problems:
        raise FormProblem(problems)


def many(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v]


def _label(loc: tuple[Any, ...]) -> str:
    return str(loc[-1]).replace("_", " ") if loc else "form"


def build(model: type[M], data: dict[str, Any]) -> M:
    """The request model the API uses, from form fields, prepared as the API prepares it (a
    password hashed: call this before the write transaction); its refusals become form messages."""
    try:
        built = model.model_validate(data)
        built.prepare()
        return built
    except ValidationError as err:
        raise FormProblem([f"{_label(e['loc']).capitalize()}: {e['msg']}." for e in err.errors()]) from None
    except ApiError as err:
        raise FormProblem([err.description]) from None


def problem_of(err: ApiError) -> FormProblem:
    return FormProblem([err.description])


def parse_int(raw: str, name: str, *, low: int = 0, high: int = 10**9) -> int | None:
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise FormProblem([f"{name}: enter a whole number."]) from None
    if not low <= value <= high:
        raise FormProblem([f"{name}: use a number from {low} to {high}."])
    return value


def search_text(request: Request, name: str = "q", limit: int = 100) -> str:
    """A search box's query parameter, without NUL: PostgreSQL refuses it in any text, so the
    search would fail instead of finding nothing."""
    return request.query_params.get(name, "").replace("\x00", "").strip()[:limit]


def page_number(request: Request) -> int:
    """The `page` query parameter of a paged list, 1 when missing or not a number. Capped: a
    number past what SQLite's INTEGER holds would fail in the query."""
    try:
        return max(1, min(10_000, int(request.query_params.get("page", "1"))))
    except ValueError:
        return 1


def day_range(days: int, today: dt.date) -> list[dt.date]:
    return [today - dt.timedelta(days=days - 1 - i) for i in range(days)]


def bar_chart(
    days: list[dt.date], series: list[tuple[str, str, list[int]]], *, height: int = 160
) -> dict[str, Any]:
    """Geometry for a server-rendered SVG grouped bar chart (no JavaScript needed)."""
    peak = max([1] + [v for _, _, values in series for v in values])
    group = 100.0 / max(1, len(days))
    bar = group / (len(series) + 1)
    bars = []
    for d_index, day in enumerate(days):
        for s_index, (name, colour, values) in enumerate(series):
            value = values[d_index]
            h = value / peak * (height - 20)
            bars.append(
                {
                    "x": round(d_index * group + s_index * bar + bar / 2, 3),
                    "y": round(height - h, 2),
                    "w": round(bar, 3),
                    "h": round(h, 2),
                    "colour": colour,
                    "title": f"{day.isoformat()} {name}: {value}",
                }
            )
    return {"bars": bars, "height": height, "peak": peak, "series": series, "days": days}
