"""Sign-in cookies of directory users, and the CSRF token helpers of the directory forms.

A signed-in directory user carries one cookie per directory (`ocd_<code>`), signed with a key
derived from the server secret; it names the directory, the user and a random session ID made at
each sign-in, and every request re-reads the user, so blocking or a payment change takes effect at
once. Signing out records the session ID as ended (a `one_time_tokens` row, digest only, as the
dashboard does), so a copy of the cookie kept elsewhere stops working too. Forms carry a signed
double-submit CSRF token."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from opencoupon import web
from opencoupon.accounts import repository as accounts_repo
from opencoupon.directories import repository
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import ERASED_PASSWORD
from opencoupon.models import Directory, DirectoryUser
from opencoupon.runtime import Runtime
from opencoupon.web import runtime_of

LOGIN_MAX_AGE = 30 * 24 * 3600
SESSION_ENDED = "dir-session-ended"


def _serializer(runtime: Runtime, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.keyring.derive_key(purpose), salt=purpose)


def login_cookie_name(directory: Directory) -> str:
    return f"ocd_{directory.code}"


def _claim(request: Request, directory: Directory) -> tuple[int, str] | None:
    """(user ID, session ID) of a genuine, unexpired sign-in cookie for this directory."""
    raw = request.cookies.get(login_cookie_name(directory))
    if not raw:
        return None
    try:
        data: Any = _serializer(runtime_of(request), "directory-login").loads(raw, max_age=LOGIN_MAX_AGE)
    except BadSignature:
        return None
    if not isinstance(data, dict) or data.get("d") != directory.id:
        return None
    user_id, session_id = data.get("u"), data.get("s")
    # A cookie without a session ID predates server-side sign-out: its holder signs in again.
    if not isinstance(user_id, int) or not isinstance(session_id, str):
        return None
    return user_id, session_id


def _ended_digest(runtime: Runtime, session_id: str) -> str:
    return runtime.keyring.digest(f"{SESSION_ENDED}:{session_id}")


def signed_in_user(session: Session, request: Request, directory: Directory) -> DirectoryUser | None:
    claim = _claim(request, directory)
    if claim is None:
        return None
    user_id, session_id = claim
    digest = _ended_digest(runtime_of(request), session_id)
    if accounts_repo.token_by_digest(session, digest, SESSION_ENDED) is not None:
        return None
    user = repository.user(session, directory.id, user_id)
    # An erased user (privacy/) is nobody any more: a sign-in made before the erasure ends.
    if user is None or user.password_hash == ERASED_PASSWORD:
        return None
    return user


def sign_in(response: Response, request: Request, directory: Directory, user: DirectoryUser) -> None:
    """A new session, whatever the browser held before."""
    runtime = runtime_of(request)
    claim = {"d": directory.id, "u": user.id, "s": secrets.token_urlsafe(18)}
    value = _serializer(runtime, "directory-login").dumps(claim)
    response.set_cookie(
        login_cookie_name(directory),
        value,
        max_age=LOGIN_MAX_AGE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=web.is_secure(request),
    )


def sign_out(response: Response, request: Request, directory: Directory) -> None:
    """Delete the cookie and end its session on the server (blocking: call in the thread pool)."""
    response.delete_cookie(login_cookie_name(directory), path="/")
    claim = _claim(request, directory)
    if claim is None:
        return
    runtime = runtime_of(request)
    with runtime.db.transaction() as session:
        accounts_repo.record_ended_session(
            session,
            directory.account_id,
            SESSION_ENDED,
            _ended_digest(runtime, claim[1]),
            utcnow(),
            dt.timedelta(seconds=LOGIN_MAX_AGE),
        )


def safe_next(raw: str | None, default: str) -> str:
    """Only same-site paths, so the login form cannot be used as an open redirect."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return default


def csrf_token(request: Request) -> tuple[str, str | None]:
    """The token for a form, and the new cookie value when the browser has none yet."""
    cookie = web.csrf_cookie(request)
    fresh = None if request.cookies.get(web.CSRF_COOKIE) == cookie else cookie
    return web.form_token(runtime_of(request), cookie), fresh


def set_csrf_cookie(response: Response, request: Request, value: str | None) -> None:
    if value:
        web.with_csrf_cookie(response, request, value)
