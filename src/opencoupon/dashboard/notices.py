"""The notices a dashboard post leaves for the page it redirects to (`?done=…`, `?problem=…`) are
signed, so a link made by someone else cannot put its own words on a dashboard page.

One ASGI middleware does both sides, so no page or handler changes: the redirect (3xx) that
answers a dashboard POST (every one is CSRF-checked: only the dashboard's own forms get here) gets
`n=<signature>` added when its address carries a notice; an incoming /dashboard/ request whose
notice does not match its signature has the notice removed before any handler reads it. The
signature covers the notice, the page's path and the signed-in account (the session cookie's), so
a notice made for one page of one account shows nowhere else: not on another page, not to another
account that is handed the link. GET
redirects are never signed: they may echo an address someone else wrote (a trailing-slash
redirect keeps the query string), and sign-in's `next` is stripped of notices (security.safe_next)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOTICE_FIELDS = ("done", "problem")
SIGNATURE_FIELD = "n"
PREFIX = "/dashboard"


def _signature(key: bytes, account_id: int, path: str, params: list[tuple[str, str]]) -> str:
    notice = [[name, value] for name, value in params if name in NOTICE_FIELDS]
    # JSON keeps the parts apart: no path or notice text can pass for another split.
    text = json.dumps([account_id, path, notice])
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:32]


def signed_location(key: bytes, location: str, account_id: int) -> str:
    """`location` with the signature of its notice for `account_id` added (unchanged when it
    carries none)."""
    parts = urlsplit(location)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != SIGNATURE_FIELD]
    if not parts.path.startswith(PREFIX) or not any(k in NOTICE_FIELDS for k, _v in params):
        return location
    # Signed as the request for it will carry its path: percent-decoded (the ASGI scope's path).
    signature = _signature(key, account_id, unquote(parts.path), params)
    query = urlencode([*params, (SIGNATURE_FIELD, signature)])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def checked_query(key: bytes, query: str, path: str, account_id: int) -> str:
    """`query` of a request for `path` by `account_id`, without its notice unless the notice's
    signature is right for both."""
    params = parse_qsl(query, keep_blank_values=True)
    if not any(k in NOTICE_FIELDS for k, _v in params):
        return query
    given = next((v for k, v in params if k == SIGNATURE_FIELD), "")
    if hmac.compare_digest(given, _signature(key, account_id, path, params)):
        return query
    return urlencode([(k, v) for k, v in params if k not in NOTICE_FIELDS and k != SIGNATURE_FIELD])


class SignedNotices:
    """`account_of(scope)`: the account ID the request's session cookie names (0 when none)."""

    def __init__(self, app: ASGIApp, *, key: bytes, account_of: Callable[[Scope], int]) -> None:
        self.app = app
        self.key = key
        self.account_of = account_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        account_id = self.account_of(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        checked = checked_query(self.key, query, scope["path"], account_id)
        if checked != query:
            scope = {**scope, "query_string": checked.encode("latin-1")}

        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return

        async def send_signed(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = [
                    (name, signed_location(self.key, value.decode("latin-1"), account_id).encode("latin-1"))
                    if name.lower() == b"location"
                    else (name, value)
                    for name, value in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_signed)
