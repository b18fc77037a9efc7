"""Sign-in cookies of directory users, and the CSRF token helpers of the directory forms.

A signed-in directory user carries one cookie per directory (`ocd_<code>`), signed with a key
derived from the server secret; it names the directory and the user, and every request re-reads
the user, so blocking or a payment change takes effect at once. Forms carry a signed
double-submit CSRF token."""

from __future__ import annotations

from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from opencoupon import web
from opencoupon.directories import repository
from opencoupon.models import Directory, DirectoryUser
from opencoupon.runtime import Runtime
from opencoupon.web import runtime_of

LOGIN_MAX_AGE = 30 * 24 * 3600


def _serializer(runtime: Runtime, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.keyring.derive_key(purpose), salt=purpose)


def login_cookie_name(directory: Directory) -> str:
    return f"ocd_{directory.code}"


def signed_in_user(session: Session, request: Request, directory: Directory) -> DirectoryUser | None:
    raw = request.cookies.get(login_cookie_name(directory))
    if not raw:
        return None
    try:
        data: Any = _serializer(runtime_of(request), "directory-login").loads(raw, max_age=LOGIN_MAX_AGE)
    except BadSignature:
        return None
    if not isinstance(data, dict) or data.get("d") != directory.id or not isinstance(data.get("u"), int):
        return None
    return repository.user(session, directory.id, data["u"])


def sign_in(response: Response, request: Request, directory: Directory, user: DirectoryUser) -> None:
    runtime = runtime_of(request)
    value = _serializer(runtime, "directory-login").dumps({"d": directory.id, "u": user.id})
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
    response.delete_cookie(login_cookie_name(directory), path="/")


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
