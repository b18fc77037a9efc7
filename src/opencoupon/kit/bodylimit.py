"""The request body limit (OPENCOUPON_MAX_BODY_BYTES) for everything but API calls, which kit.body
limits as it reads them: the dashboard's and the consumer pages' forms, the browser's push routes.

Starlette's form parser keeps up to 1,000 fields of 1 MB each in memory and spools files to disk
without end, all before a page checks the form's CSRF token, even before sign-in. Here a body
declared larger than the limit is answered 413 before any of it is read; a body sent without a
length (chunked) is counted as it is read and answered 413 once past the limit (the server drops
the rest)."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opencoupon.errors import error_response
from opencoupon.kit import ids
from opencoupon.kit.body import PayloadTooLarge
from opencoupon.kit.fastlane import API_PREFIXES


class BodyTooLarge(Exception):
    """Raised by the counting receive(): whatever read the body stops reading."""


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if ids.is_number(text) else None
    return None


async def too_large_response(scope: Scope, limit: int) -> Response:
    """The error page for a browser, the API's envelope (error 413) for anything else, as the
    app's own error handlers answer."""
    request = Request(scope)
    if "text/html" in request.headers.get("accept", ""):
        from opencoupon.dashboard.security import error_page  # here: the dashboard imports the kit

        message = f"What was sent is larger than the {limit:,} bytes this address takes. Send less."
        return await error_page(request, 413, "Too large", message)
    return error_response(PayloadTooLarge(limit))


class BodyLimit:
    """Pure ASGI middleware: each non-API request's body limited to `limit` bytes, or to the larger
    limit `larger` gives its path (an upload route)."""

    def __init__(self, app: ASGIApp, *, limit: int, larger: Mapping[str, int]) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.limit)
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            response = await too_large_response(scope, limit)
            await response(scope, receive, send)
            return
        received = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                # The app's answer to the body it could not read (FastAPI answers 400 for Form()
                # fields): the 413 below instead.
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            # BodyTooLarge, or whatever else the app raised once it could not read the body.
            if not over:
                raise
        if over and not started:
            response = await too_large_response(scope, limit)
            await response(scope, receive, send)


def install(app: FastAPI, limit: int, uploads: Mapping[str, int]) -> None:
    """`uploads`: an upload route's path and the largest file it takes; its body may hold that much
    more than `limit` (the rest of its form, and the multipart framing, stay within `limit`)."""
    larger = {path: limit + size for path, size in uploads.items()}
    app.add_middleware(BodyLimit, limit=limit, larger=larger)
