"""Sign-in cookies of directory users and CSRF tokens of the directory forms.

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

from opencoupon.directories import repository
from opencoupon.kit.crypto import constant_time_equals, token
from opencoupon.models import Directory, DirectoryUser
from opencoupon.runtime import Runtime

LOGIN_MAX_AGE = 30 * 24 * 3600
CSRF_COOKIE = "oc_csrf"
CSRF_MAX_AGE = 12 * 3600


def _serializer(runtime: Runtime, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.keyring.derive_key(purpose), salt=purpose)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _secure(runtime: Runtime) -> bool:
    return runtime.settings.public_base_url.startswith("https://")


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
        secure=_secure(runtime),
    )


def sign_out(response: Response, request: Request, directory: Directory) -> None:
    response.delete_cookie(login_cookie_name(directory), path="/")


def csrf_token(request: Request) -> tuple[str, str | None]:
    """The token for a form, and a new cookie value when the browser has none yet."""
    raw = request.cookies.get(CSRF_COOKIE)
    fresh = None
    if not raw or len(raw) > 128:
        raw = fresh = token(24)
    return _serializer(runtime_of(request), "csrf").dumps(raw), fresh


def set_csrf_cookie(response: Response, request: Request, value: str | None) -> None:
    if value:
        response.set_cookie(
            CSRF_COOKIE, value, path="/", httponly=True, samesite="lax", secure=_secure(runtime_of(request))
        )


def csrf_ok(request: Request, form_token: str) -> bool:
    raw = request.cookies.get(CSRF_COOKIE)
    if not raw or not form_token:
        return False
    try:
        value = _serializer(runtime_of(request), "csrf").loads(form_token, max_age=CSRF_MAX_AGE)
    except BadSignature:
        return False
    return isinstance(value, str) and constant_time_equals(value, raw)


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def safe_next(raw: str | None, default: str) -> str:
    """Only same-site paths, so the login form cannot be used as an open redirect."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return default
