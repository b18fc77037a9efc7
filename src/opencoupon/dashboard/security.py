"""Sign-in sessions and CSRF protection for every HTML form (dashboard pages reuse this module).

- Session: a cookie signed with itsdangerous (key `derive_key("session")`), HttpOnly, SameSite=Lax,
  Secure behind https, holding the account ID, a fingerprint of its password hash (so a password
  change ends every other session), a random session ID made at each sign-in and how it signed in:
  a session opened through an SSO link holds the account's `sso_generation`, which a secret
  rotation with grace 0 moves on (after a leak: the link may have been made with the leaked
  secret), ending it. Signing out records the session ID as ended (a `one_time_tokens` row,
  purpose `session-ended`, digest only), so a copy of the cookie stops working too. Blocked or
  expired accounts are signed out on their next request.
- CSRF: signed double-submit. A random nonce lives in its own HttpOnly cookie; forms carry
  `csrf_token(request)`, a signature over (nonce, signed-in account) with `derive_key("csrf")`.
  `verify_csrf(request, form)` refuses a POST whose token does not match (HTTP 403).

Usage in a page:

    @router.get("/dashboard/things")
    def things(request: Request, account: Account = Depends(require_login)) -> Response:
        return render(request, "dashboard/things.html", {"account": account})

    @router.post("/dashboard/things")
    async def add_thing(request: Request, account: Account = Depends(require_login)) -> Response:
        form = await checked_form(request)
        ...

Templates: `<input type="hidden" name="csrf_token" value="{{ csrf_token(request) }}">`.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opencoupon.accounts import repository as accounts_repo
from opencoupon.accounts import service as accounts
from opencoupon.dashboard.notices import NOTICE_FIELDS, SignedNotices
from opencoupon.errors import ApiError
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account
from opencoupon.pages import deny_framing, render_error_page, templates
from opencoupon.runtime import Runtime

SESSION_COOKIE = "oc_session"
CSRF_COOKIE = "oc_csrf"
CSRF_FIELD = "csrf_token"
LOGIN_PATH = "/dashboard/login"
SESSION_ENDED = "session-ended"
# How a session signed in (claim "m"): with the password, or through a one-time SSO link.
BY_PASSWORD = "password"
BY_LINK = "link"
_STATE_NEW_NONCE = "opencoupon_csrf_nonce"


class PageError(Exception):
    """An HTML error page (403 forged form, 410 used link, 429 too many attempts...)."""

    def __init__(self, status_code: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message


class LoginRequired(Exception):
    """The page needs a signed-in person: answered with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _serializer(request: Request, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_runtime(request).keyring.derive_key(purpose), salt=f"opencoupon-{purpose}")


def _max_age(request: Request) -> int:
    return _runtime(request).settings.session_max_age_hours * 3600


def _secure(request: Request) -> bool:
    return _runtime(request).settings.base_url.startswith("https://")


def _password_epoch(request: Request, account: Account) -> str:
    return _runtime(request).keyring.digest("session-epoch:" + (account.password_hash or ""))[:16]


# --- sessions ---------------------------------------------------------------------------------


def sign_in(request: Request, response: Response, account: Account, *, through_link: bool = False) -> None:
    """Put the session cookie for `account` on `response`: a new session, whatever the browser held
    before. `through_link`: signed in by an SSO link, so a rotation after a leak ends it."""
    claim: dict[str, Any] = {
        "a": account.id,
        "e": _password_epoch(request, account),
        "s": secrets.token_urlsafe(18),
        "m": BY_PASSWORD,
        "sg": account.sessions_generation,
    }
    if through_link:
        claim.update(m=BY_LINK, g=account.sso_generation)
    value = _serializer(request, "session").dumps(claim)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=_max_age(request),
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )


def sign_out(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def _ended_digest(request: Request, session_id: str) -> str:
    return _runtime(request).keyring.digest(f"{SESSION_ENDED}:{session_id}")


def end_session(request: Request) -> None:
    """Record this request's session as ended, so its cookie is refused even where a copy of it
    survives (blocking; call in the thread pool). The record outlives the cookie's own lifetime."""
    claim = _session_claim(request)
    if claim is None:
        return
    runtime = _runtime(request)
    lifetime = dt.timedelta(seconds=_max_age(request))
    with runtime.db.transaction() as session:
        accounts_repo.record_ended_session(
            session,
            claim.account_id,
            SESSION_ENDED,
            _ended_digest(request, claim.session_id),
            utcnow(),
            lifetime,
        )


def record_login(account: Account) -> None:
    """The vendor's `lastlogin` / `amountlogin` fields."""
    account.last_login_at = utcnow()
    account.login_count = (account.login_count or 0) + 1


class SessionClaim(NamedTuple):
    account_id: int
    password_epoch: str
    session_id: str
    # The account's sso_generation when an SSO link signed it in; None for a password sign-in.
    sso_generation: int | None
    # The account's sessions_generation when it signed in (0 for a cookie from before it existed).
    sessions_generation: int


def _session_claim(request: Request) -> SessionClaim | None:
    """What a genuine, unexpired session cookie holds."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(request, "session").loads(raw, max_age=_max_age(request))
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    account_id, epoch, session_id = data.get("a"), data.get("e"), data.get("s")
    if not isinstance(account_id, int) or not isinstance(epoch, str) or not isinstance(session_id, str):
        return None
    sessions_generation = data.get("sg", 0)
    if not isinstance(sessions_generation, int):
        return None
    if data.get("m") == BY_PASSWORD:
        return SessionClaim(account_id, epoch, session_id, None, sessions_generation)
    # A link's session, or one from before sessions said how they began (it may be a link's too).
    generation = data.get("g", 0)
    if not isinstance(generation, int):
        return None
    return SessionClaim(account_id, epoch, session_id, generation, sessions_generation)


def current_account(request: Request) -> Account | None:
    """FastAPI dependency: the signed-in account, or None. Cached per request."""
    if hasattr(request.state, "opencoupon_account"):
        cached: Account | None = request.state.opencoupon_account
        return cached
    found: Account | None = None
    refused = False
    claim = _session_claim(request)
    if claim is not None:
        runtime = _runtime(request)
        with runtime.db.read() as session:
            account = accounts_repo.by_id(session, claim.account_id)
            if (
                account is not None
                and hmac.compare_digest(_password_epoch(request, account), claim.password_epoch)
                and claim.sso_generation in (None, account.sso_generation)
                and claim.sessions_generation == account.sessions_generation
                and accounts_repo.token_by_digest(
                    session, _ended_digest(request, claim.session_id), SESSION_ENDED
                )
                is None
            ):
                try:
                    accounts.ensure_usable(session, account, utcnow())
                    accounts.ensure_dashboard_access(account)
                    found = account
                except ApiError:
                    refused = True
    if refused:
        # Blocked, expired or without dashboard access: the session ends here, so lifting the
        # block later does not bring back a session (perhaps a stolen one) signed in before it.
        end_session(request)
    request.state.opencoupon_account = found
    return found


def known_account(request: Request) -> Account | None:
    """The account current_account already found for this request, without reading the database
    (None when nothing looked yet): for what renders on the event loop."""
    found: Account | None = getattr(request.state, "opencoupon_account", None)
    return found


async def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    """An error page from an async handler: under /dashboard/, the signed-in person (who keeps the
    navigation) is looked up in the thread pool first, so rendering reads nothing."""
    if request.url.path.startswith("/dashboard/"):
        await run_in_threadpool(current_account, request)
        # A dashboard error page keeps the navigation and the sign-out form: no frames either.
        return deny_framing(render_error_page(request, status_code, title, message))
    return render_error_page(request, status_code, title, message)


def require_login(request: Request) -> Account:
    """FastAPI dependency for pages that need a signed-in person (redirects to the login page)."""
    account = current_account(request)
    if account is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return account


def safe_next(value: str | None, default: str = "/dashboard/") -> str:
    """Only same-site paths: never an open redirect to another host. A notice in the address is
    dropped: the sign-in post's redirect is signed (dashboard/notices.py), and the address came
    from whoever wrote the link."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    parts = urlsplit(value)
    params = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in params if k not in NOTICE_FIELDS]
    if len(kept) == len(params):
        return value
    return urlunsplit(("", "", parts.path, urlencode(kept), parts.fragment))


# --- CSRF -------------------------------------------------------------------------------------


def _nonce(request: Request) -> str:
    existing = request.cookies.get(CSRF_COOKIE, "")
    if 20 <= len(existing) <= 100 and existing.replace("-", "").replace("_", "").isalnum():
        return existing
    state = request.scope.setdefault("state", {})
    if _STATE_NEW_NONCE not in state:
        state[_STATE_NEW_NONCE] = secrets.token_urlsafe(32)
    return str(state[_STATE_NEW_NONCE])


def _csrf_subject(request: Request) -> int:
    # The account the session cookie names (signature checked, no database read, so async
    # handlers can verify without blocking).
    claim = _session_claim(request)
    return claim.account_id if claim is not None else 0


def _notice_subject(scope: Scope) -> int:
    """The account a notice is signed for and shown to (dashboard/notices.py): the same cookie
    reading as the CSRF token's, from the middleware's scope."""
    return _csrf_subject(Request(scope))


def csrf_token(request: Request) -> str:
    """The hidden-field value every state-changing form carries."""
    return str(_serializer(request, "csrf").dumps([_nonce(request), _csrf_subject(request)]))


def verify_csrf(request: Request, form: Mapping[str, Any]) -> None:
    """Refuse (403) a form POST whose token is missing, forged, stale or from another browser."""
    token = form.get(CSRF_FIELD)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    valid = False
    if isinstance(token, str) and cookie:
        try:
            data = _serializer(request, "csrf").loads(token, max_age=_max_age(request))
        except BadSignature:
            data = None
        if isinstance(data, list) and len(data) == 2 and isinstance(data[0], str):
            valid = hmac.compare_digest(data[0], cookie) and data[1] == _csrf_subject(request)
    if not valid:
        raise PageError(
            403,
            "Form expired or forged",
            "This form could not be accepted. Go back, reload the page and try again.",
        )


async def checked_form(request: Request) -> FormData:
    """The posted form, once verify_csrf has accepted its token. Its fields are read as text:
    files posted in their place are closed at once, not left open until garbage collection."""
    form = await request.form()
    await form.close()
    verify_csrf(request, form)
    return form


class CsrfCookieMiddleware:
    """Sets the CSRF nonce cookie on the response of a page that handed out its first token.
    Pure ASGI so API calls pay nothing but a path check."""

    def __init__(self, app: ASGIApp, *, secure: bool = False, max_age: int = 12 * 3600) -> None:
        self.app = app
        self.secure = secure
        self.max_age = max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(("/v3/", "/v4/", "/static/")):
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                nonce = scope.get("state", {}).get(_STATE_NEW_NONCE)
                if nonce:
                    cookie = f"{CSRF_COOKIE}={nonce}; Path=/; Max-Age={self.max_age}; HttpOnly; SameSite=Lax"
                    if self.secure:
                        cookie += "; Secure"
                    headers = list(message.get("headers", []))
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def install(app: FastAPI, runtime: Runtime) -> None:
    """Error pages, the login redirect, the CSRF cookie and the template helper."""
    templates.env.globals["csrf_token"] = csrf_token
    templates.env.globals["CSRF_FIELD"] = CSRF_FIELD

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        response = await error_page(request, exc.status_code, exc.title, exc.message)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(LoginRequired)
    async def _login_required(_request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(exc.next_path, safe='/')}", status_code=303)

    app.add_middleware(SignedNotices, key=runtime.keyring.derive_key("notices"), account_of=_notice_subject)
    app.add_middleware(
        CsrfCookieMiddleware,
        secure=runtime.settings.base_url.startswith("https://"),
        max_age=runtime.settings.session_max_age_hours * 3600,
    )
