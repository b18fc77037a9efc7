"""What every server-rendered consumer page shares: the runtime, content negotiation, and one
CSRF scheme.

CSRF is a signed double submit: the browser holds a random value in the `oc_csrf` cookie
(HttpOnly, SameSite=Lax), and each form carries a token signing that value plus a nonce. A forged
post from another site has neither; a token copied from another browser does not match its
cookie. The nonce also lets a page recognise a retried submission of the same form.
"""

from __future__ import annotations

import codecs
import ipaddress
import re
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from python_multipart.multipart import parse_options_header
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from opencoupon.errors import ApiError
from opencoupon.kit.body import check_characters
from opencoupon.kit.crypto import constant_time_equals, token
from opencoupon.runtime import Runtime

CSRF_COOKIE = "oc_csrf"
CSRF_MAX_AGE = 12 * 3600
COOKIE_MAX_AGE = 400 * 24 * 3600


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def form_text(request: Request) -> dict[str, str]:
    """A posted form's text fields (the last value of a repeated one). A file posted in place of a
    text field reads as empty and is closed at once, not left open until garbage collection."""
    form = await request.form()
    await form.close()
    return {key: value if isinstance(value, str) else "" for key, value in form.items()}


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def fields_with_control_characters(fields: dict[str, str]) -> list[str]:
    """The names of the form fields holding a control character (NUL, which PostgreSQL cannot
    store and SQLite stored, a line break, an escape, ...) or text no database can store (a lone
    surrogate): a page refuses them, as the API refuses them (kit.body.check_characters, 301)."""
    found: list[str] = []
    for name, value in fields.items():
        try:
            check_characters({name: value})
        except ApiError:
            found.append(name)
            continue
        if _CONTROL.search(value):
            found.append(name)
    return found


def client_key(request: Request) -> str:
    """Who is asking, for limits per client: the address, and for IPv6 its /64 network (one
    subscriber line holds a whole /64, so its single addresses would be keys without end)."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # An IPv4 client of a dual-stack socket (`--host ::`, several workers): its own address,
        # not the /64 that every IPv4 client shares (`::ffff:0:0/64`).
        return str(address.ipv4_mapped)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host


def wants_json(request: Request) -> bool:
    """The JSON form of a page: asked for with `Accept: application/json` (browsers never do)."""
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def is_secure(request: Request) -> bool:
    """Cookies get the Secure flag when the service is served over https."""
    return runtime_of(request).settings.public_base_url.startswith("https://")


def _serializer(runtime: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.keyring.derive_key("csrf"), salt="opencoupon-form")


def csrf_cookie(request: Request) -> str:
    """The browser's CSRF cookie value, or a new one to set with `with_csrf_cookie`."""
    raw = request.cookies.get(CSRF_COOKIE, "")
    return raw if 16 <= len(raw) <= 128 else token(24)


def with_csrf_cookie(response: Response, request: Request, cookie: str) -> Response:
    if request.cookies.get(CSRF_COOKIE) != cookie:
        response.set_cookie(
            CSRF_COOKIE,
            cookie,
            max_age=COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="lax",
            secure=is_secure(request),
        )
    return response


def form_token(runtime: Runtime, cookie: str) -> str:
    """The hidden field of one form shown to the browser holding `cookie`."""
    return str(_serializer(runtime).dumps({"c": cookie, "n": token(12)}))


def form_nonce(
    runtime: Runtime, request: Request, form_token: str, max_age: int = CSRF_MAX_AGE
) -> str | None:
    """The nonce of a genuine, unexpired form of this browser; None when forged, expired or
    made for another browser."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not form_token:
        return None
    try:
        data: Any = _serializer(runtime).loads(form_token, max_age=max_age)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not constant_time_equals(str(data.get("c", "")), cookie):
        return None
    nonce = data.get("n")
    return nonce if isinstance(nonce, str) else None


def csrf_ok(request: Request, form_token: str) -> bool:
    return form_nonce(runtime_of(request), request, form_token) is not None


FORM_EXPIRED = "The form expired. Please try again."
NO_COOKIES = "Your browser did not send cookies: allow cookies for this site and try again."


def csrf_refusal(request: Request) -> str:
    """What a refused form says: a browser that sends no cookies at all would be told the form
    expired however often it tried, so it is told to allow them."""
    return FORM_EXPIRED if request.cookies.get(CSRF_COOKIE) else NO_COOKIES


# Codecs that cannot turn bytes into text no database stores (a lone surrogate).
_SAFE_CODECS = {"utf-8", "ascii", "iso8859-1", "cp1252"}


class SafeFormCharset:
    """Pure ASGI middleware: a multipart form is decoded with the charset its Content-Type names,
    any Python codec, so `charset=unicode_escape` turned a field's `\\ud800` into a lone surrogate,
    a 500 wherever the page stored, hashed or rendered it. Another charset than UTF-8, ASCII or
    Latin-1 is dropped: the form is read as UTF-8."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            for index, (name, value) in enumerate(headers):
                if name == b"content-type" and value[:19].lower() == b"multipart/form-data":
                    # Read as Starlette's parser reads it (quotes, the last of repeated options):
                    # a regex took the first `charset` of `charset=utf-8; charset=unicode_escape`.
                    _kind, options = parse_options_header(value)
                    charset = options.get(b"charset")
                    if charset is not None and not _safe_codec(charset):
                        boundary = options.get(b"boundary", b"").replace(b"\\", b"\\\\").replace(b'"', b'\\"')
                        fixed = [*headers]
                        fixed[index] = (name, b'multipart/form-data; boundary="' + boundary + b'"')
                        scope = {**scope, "headers": fixed}
                    break
        await self.app(scope, receive, send)


def _safe_codec(name: bytes) -> bool:
    try:
        return codecs.lookup(name.decode("latin-1")).name in _SAFE_CODECS
    except LookupError:
        return False  # Starlette reads an unknown one as Latin-1 already; dropped all the same
