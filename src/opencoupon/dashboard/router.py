"""Sign-in for people: login, logout, the password-reset page, the SSO landing and the home page."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match

from opencoupon.accounts import repository as accounts_repo
from opencoupon.accounts import service as accounts
from opencoupon.accounts import sso
from opencoupon.dashboard.common import no_store, page, password_text, runtime_of
from opencoupon.dashboard.security import (
    LOGIN_PATH,
    PageError,
    checked_form,
    current_account,
    end_session,
    record_login,
    require_login,
    safe_next,
    sign_in,
    sign_out,
    verify_csrf,
)
from opencoupon.errors import ApiError
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import hash_password, verify_password
from opencoupon.kit.lockout import ADDRESS_FACTOR, BACKSTOP_FACTOR, GuessLimit, Lockout
from opencoupon.models import Account, OneTimeToken
from opencoupon.runtime import Runtime
from opencoupon.subaccounts.schemas import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from opencoupon.web import client_key

router = APIRouter(include_in_schema=False)


LINK_GONE = PageError(
    410,
    "This link can no longer be used",
    "The link has already been used or has expired. Links like this work once, for a short time. "
    "Ask for a new one.",
)


TOO_MANY_ATTEMPTS = PageError(
    429, "Too many attempts", "Too many sign-in attempts. Wait a minute and try again."
)

LOGIN_WINDOW = dt.timedelta(minutes=1)


def _login_limits(runtime: Runtime) -> tuple[GuessLimit, Lockout]:
    """(per email, per client address), per minute (fixed windows), counted in the database so
    every API process shares one count. Per email: OPENCOUPON_LOGIN_ATTEMPTS_PER_MINUTE from one
    client address, and ten times that from all addresses together (a backstop against guesses
    spread over many). A count per email alone let anyone keep the owner out by failing that many
    times a minute. Per address: six times the per-email rate, whatever the email."""
    per_minute = max(1, int(runtime.settings.login_attempts_per_minute))
    by_email = GuessLimit(
        per_client=Lockout("login-email-address", limit=per_minute, window=LOGIN_WINDOW),
        per_secret=Lockout("login-email", limit=per_minute * BACKSTOP_FACTOR, window=LOGIN_WINDOW),
    )
    by_address = Lockout(
        "login-address",
        limit=max(1, int(runtime.settings.login_attempts_per_minute * ADDRESS_FACTOR)),
        window=LOGIN_WINDOW,
    )
    return by_email, by_address


def _login_allowed(runtime: Runtime, email: str, address: str) -> bool:
    """Count this sign-in attempt; whether it is within the limits (run in the thread pool). An
    attempt its address's limits refuse is not counted for the email from all addresses, so one
    address cannot use up the backstop and lock the owner out."""
    by_email, by_address = _login_limits(runtime)
    with runtime.db.transaction() as session:
        if not by_address.attempt(session, runtime.keyring, address):
            return False
        return by_email.attempt(session, runtime.keyring, accounts.normalize_email(email), address)


def _text(form: FormData, name: str, limit: int = MAX_PASSWORD_LENGTH) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


# --- login / logout ---------------------------------------------------------------------------


def _login_page(request: Request, *, email: str = "", error: str = "", status_code: int = 200) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    context = {"title": "Sign in", "email": email, "error": error, "next": next_path}
    return page(request, "dashboard/login.html", context, status_code=status_code)


@router.get("/dashboard/login")
def login_form(request: Request, account: Account | None = Depends(current_account)) -> Response:
    if account is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _login_page(request)


def _check_login(runtime: Runtime, email: str, password: str, address: str) -> Account | str:
    """The account on success, otherwise the message to show. The right password gives its
    attempt back to the per-email counts: only wrong ones use them up."""
    with runtime.db.read() as session:
        found = accounts_repo.by_email(session, accounts.normalize_email(email))
        stored_hash = found.password_hash if found is not None else None
    # argon2 is slow on purpose: verify outside any write transaction.
    matched = verify_password(stored_hash, password)
    if found is None or not matched:
        return "Wrong email or password."
    with runtime.db.transaction() as session:
        account = accounts_repo.by_id(session, found.id)
        if account is None:
            return "Wrong email or password."
        try:
            accounts.ensure_usable(session, account, utcnow())
            accounts.ensure_dashboard_access(account)
        except ApiError as err:
            return f"{err.description} Contact the account owner."
        by_email, _by_address = _login_limits(runtime)
        by_email.refund(session, runtime.keyring, accounts.normalize_email(email), address)
        record_login(account)
        return account


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    form = await checked_form(request)
    email = _text(form, "email", 254).strip()
    password = _text(form, "password")
    if not email or not password:
        return _login_page(request, email=email, error="Enter your email and password.", status_code=422)
    runtime = runtime_of(request)
    address = client_key(request)
    if not await run_in_threadpool(_login_allowed, runtime, email, address):
        raise TOO_MANY_ATTEMPTS
    outcome = await run_in_threadpool(_check_login, runtime, email, password, address)
    if isinstance(outcome, str):
        return _login_page(request, email=email, error=outcome, status_code=401)
    response = RedirectResponse(safe_next(_text(form, "next", 2000)), status_code=303)
    sign_in(request, response, outcome)
    return response


@router.post("/dashboard/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    await form.close()  # a file posted in place of the token is not kept open
    if await run_in_threadpool(current_account, request) is not None:
        verify_csrf(request, form)
        # Ended on the server too: a copy of the cookie no longer signs in.
        await run_in_threadpool(end_session, request)
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    sign_out(response)
    return response


# --- home -------------------------------------------------------------------------------------


def _home_context(runtime: Runtime, account: Account) -> dict[str, Any]:
    with runtime.db.read() as session:
        subs = [] if account.parent_id is not None else list(accounts_repo.subaccounts(session, account.id))
        parent = accounts_repo.by_id(session, account.parent_id) if account.parent_id is not None else None
    return {"title": "Dashboard", "account": account, "subaccounts": subs, "parent": parent}


@router.get("/dashboard")
@router.get("/dashboard/")
def home(request: Request, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/home.html", _home_context(runtime_of(request), account))


# --- SSO landing ------------------------------------------------------------------------------


def _route_exists(request: Request, path: str) -> bool:
    scope = {"type": "http", "path": path, "root_path": "", "method": "GET"}
    for route in request.app.router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return True
    return False


def _check_link_token(raw: str) -> None:
    """Refuse (410) a link whose token no token could look like, before any database work."""
    if not (10 <= len(raw) <= 100) or not raw.isalnum():
        raise LINK_GONE


def _redeemed(
    session: Session, runtime: Runtime, raw: str, purpose: str
) -> tuple[OneTimeToken, Account] | None:
    """Use up a one-time token (SSO, password reset): it and its account, or None when it is not
    usable or its account is gone."""
    token = accounts.redeem_token(session, runtime.keyring, raw, purpose)
    if token is None:
        return None
    account = accounts_repo.by_id(session, token.account_id)
    return None if account is None else (token, account)


def _redeem_sso(runtime: Runtime, raw: str) -> tuple[Account, str] | None:
    with runtime.db.transaction() as session:
        found = _redeemed(session, runtime, raw, sso.SSO_PURPOSE)
        if found is None:
            return None
        token, account = found
        try:
            accounts.ensure_usable(session, account, utcnow())
            accounts.ensure_dashboard_access(account)
        except ApiError:
            return None
        record_login(account)
        return account, sso.landing_path(token.page, token.target)


@router.get("/sso/{token}")
async def sso_landing(request: Request, token: str) -> Response:
    """Signs in with a one-time SSO token and lands on the requested page (410 when used/expired)."""
    _check_link_token(token)
    outcome = await run_in_threadpool(_redeem_sso, runtime_of(request), token)
    if outcome is None:
        raise LINK_GONE
    account, path = outcome
    # Pages of later dashboard sections may not exist on this server: land on home instead.
    if not _route_exists(request, path):
        path = "/dashboard/"
    response = RedirectResponse(path, status_code=303)
    sign_in(request, response, account, through_link=True)
    return no_store(response)


# --- password reset ---------------------------------------------------------------------------


def _token_usable(runtime: Runtime, raw: str) -> bool:
    with runtime.db.read() as session:
        found = accounts_repo.token_by_digest(session, runtime.keyring.digest(raw), sso.RESET_PURPOSE)
        return found is not None and found.used_at is None and found.expires_at > utcnow()


def _reset_page(request: Request, token: str, error: str = "", status_code: int = 200) -> Response:
    context = {
        "title": "Choose a new password",
        "token": token,
        "error": error,
        "min_length": MIN_PASSWORD_LENGTH,
    }
    return page(request, "dashboard/reset.html", context, status_code=status_code)


@router.get("/dashboard/reset/{token}")
async def reset_form(request: Request, token: str) -> Response:
    # Opening the link does not use it up (mail scanners open links); setting the password does.
    _check_link_token(token)
    if not await run_in_threadpool(_token_usable, runtime_of(request), token):
        raise LINK_GONE
    return _reset_page(request, token)


def _reset_password(runtime: Runtime, raw: str, password: str) -> str | None:
    """The account's email when the password was set; None when the token is not usable."""
    new_hash = hash_password(password)  # slow: outside the write transaction
    with runtime.db.transaction() as session:
        found = _redeemed(session, runtime, raw, sso.RESET_PURPOSE)
        if found is None:
            return None
        _token, account = found
        # Its other reset links (an older email, a link the master made) stop working too.
        accounts.set_password(session, account, new_hash)
        return account.email


class PasswordChange(NamedTuple):
    """What the account page's password form led to: the account with its new password, or what
    to tell the person."""

    account: Account | None
    problem: str = ""


def change_password(
    runtime: Runtime, account_id: int, current: str, new: str, address: str
) -> PasswordChange:
    """The signed-in person's own new password, once the current one is given (run in the thread
    pool). A guess at the current password counts as a sign-in attempt (the same limits: a session
    alone, an SSO link's say, must not become a way to guess it); 429 past them."""
    with runtime.db.read() as session:
        found = accounts_repo.by_id(session, account_id)
        if found is None:
            return PasswordChange(None, "Your account no longer exists.")
        email, stored = found.email, found.password_hash
    if not _login_allowed(runtime, email, address):
        raise TOO_MANY_ATTEMPTS
    # argon2 is slow on purpose: check and hash outside any write transaction.
    if not verify_password(stored, current):
        return PasswordChange(None, "Current password: this is not the password of this account.")
    new_hash = hash_password(new)
    with runtime.db.transaction() as session:
        account = accounts_repo.by_id(session, account_id)
        if account is None or account.password_hash != stored:
            return PasswordChange(None, "The password was changed meanwhile. Sign in again.")
        by_email, _by_address = _login_limits(runtime)
        by_email.refund(session, runtime.keyring, accounts.normalize_email(email), address)
        accounts.set_password(session, account, new_hash)
        return PasswordChange(account)


@router.post("/dashboard/reset/{token}")
async def reset_password(request: Request, token: str) -> Response:
    form = await checked_form(request)
    _check_link_token(token)
    password = password_text(form, "password")
    confirm = password_text(form, "password_confirm")
    if len(password) < MIN_PASSWORD_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        error = f"Use between {MIN_PASSWORD_LENGTH} and {MAX_PASSWORD_LENGTH} characters."
        return _reset_page(request, token, error, status_code=422)
    if password != confirm:
        return _reset_page(request, token, "The two passwords differ.", status_code=422)
    email = await run_in_threadpool(_reset_password, runtime_of(request), token, password)
    if email is None:
        raise LINK_GONE
    context = {"title": "Password changed", "email": email}
    response = page(request, "dashboard/reset_done.html", context)
    # Any session in this browser belonged to the old password.
    sign_out(response)
    return response
