"""The ASGI application."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from opencoupon import __version__
from opencoupon.config import Settings, get_settings
from opencoupon.db.group import ReadGroup, WriteGroup
from opencoupon.errors import ApiError, error_response
from opencoupon.kit.endpoint import unstorable
from opencoupon.kit.fastlane import allowed_methods
from opencoupon.runtime import Runtime
from opencoupon.web import SafeFormCharset

log = logging.getLogger("opencoupon")

STATIC_DIR = Path(__file__).parent / "static"
# Seconds (Python's default is 0.005); measured best between 0.0002 and 0.001.
SQLITE_SWITCH_INTERVAL = 0.0005
UNUSABLE_REQUEST = "What was sent could not be used. Go back, reload the page and try again."

# Every module that contributes routes: it defines `router` (or `routers`). Requests are matched
# against routes in this order, about 2 µs a route: the consumer pages and QR codes (the most
# requested paths that are not exact v3 paths, which kit/fastlane.py dispatches) come first.
# No two modules share a path prefix, so the order changes nothing else.
ROUTER_MODULES = [
    "opencoupon.coupons.pages",
    "opencoupon.qr.router",
    "opencoupon.loyalty.pages",
    "opencoupon.directories.pages",
    "opencoupon.subaccounts.router",
    "opencoupon.accounts.router",
    "opencoupon.coupons.router",
    "opencoupon.singleuse.router",
    "opencoupon.loyalty.router",
    "opencoupon.directories.router",
    "opencoupon.webhooks.router",
    "opencoupon.push.router",
    "opencoupon.distribution.router",
    "opencoupon.privacy.router",
    "opencoupon.dashboard.router",
    "opencoupon.dashboard.pages",
    "opencoupon.docs",
]


def _routers() -> list[APIRouter]:
    found: list[APIRouter] = []
    for name in ROUTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
        found.extend(getattr(module, "routers", None) or [module.router])
    return found


def _http_error(status: int, headers: dict[str, str]) -> ApiError:
    if status == 404:
        return ApiError(404, "Route not found.", http_status=404, headers=headers)
    if status == 405:
        return ApiError(405, "Method not allowed on this route.", http_status=405, headers=headers)
    return ApiError(status, "Request could not be processed.", http_status=status, headers=headers)


def _http_headers(request: Request, exc: StarletteHTTPException) -> dict[str, str]:
    """The exception's headers; a 405's Allow names every method of the path, not only those of
    the first route matched (a v3 call's GET and POST are two routes)."""
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = allowed_methods(request.app, request.scope["path"])
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return headers


# How long a stopping server waits for the in-process job runner's running jobs.
RUNNER_STOP_SECONDS = 10.0


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = runtime or Runtime.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime.db.is_sqlite:
            # The thread holding the SQLite write lock must get the GIL back quickly after each
            # statement, or every writer queues behind the default 5 ms switch interval.
            sys.setswitchinterval(SQLITE_SWITCH_INTERVAL)
        runner = None
        runner_thread = None
        if runtime.db.is_sqlite and settings.run_worker_in_process:
            from opencoupon.worker.runner import Runner

            runner = Runner(runtime)
            runner_thread = runner.start_thread()
        app.state.runner = runner
        try:
            yield
        finally:
            if runner is not None and runner_thread is not None:
                # Jobs not started go back to the queue; running ones get a moment to finish.
                runner.stop()
                await asyncio.to_thread(runner_thread.join, RUNNER_STOP_SECONDS)
                if not runner_thread.is_alive():
                    from opencoupon.worker.runner import close_senders

                    await asyncio.to_thread(close_senders, runtime.settings)

    app = FastAPI(
        title="OpenCoupon",
        version=__version__,
        description=(
            "Coupontools-compatible coupon, loyalty card and directory API. v3 calls accept JSON, "
            "form-encoded or multipart bodies (or a query string), and credentials in the "
            "`X-Client-Id`/`X-Client-Secret` headers or as `client_id`/`client_secret` fields."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    # Quick calls on SQLite share transactions (db/group.py); on PostgreSQL each has its own.
    app.state.write_group = WriteGroup(runtime.db) if runtime.db.is_sqlite else None
    app.state.read_group = ReadGroup(runtime.db) if runtime.db.is_sqlite else None

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request: Request, exc: StarletteHTTPException) -> Response:
        headers = _http_headers(request, exc)
        if _wants_html(request) and 400 <= exc.status_code < 500:
            from opencoupon.dashboard.security import error_page

            if exc.status_code == 405:
                page = await error_page(request, 405, "Not allowed", "This page cannot be used that way.")
            elif exc.status_code == 404:
                page = await error_page(request, 404, "Page not found", "There is nothing at this address.")
            else:
                # A body the form parser refuses (a broken multipart upload...).
                page = await _not_understood(request, exc.status_code)
            page.headers.update(headers)
            return page
        return error_response(_http_error(exc.status_code, headers))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        if _wants_html(request):
            # A page's address or Form() fields of the wrong type (a file for a text field, letters
            # where the address has a number).
            return await _not_understood(request)
        return error_response(ApiError(300, "Invalid request."))

    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)
    async def _unstorable_value(request: Request, exc: Exception) -> Response:
        # A value the database cannot store (kit.endpoint.UNSTORABLE): PostgreSQL text with NUL,
        # a text longer than its column, a number beyond its range. The API refuses what it knows
        # while parsing; a page's form field or address reaches the database as typed. The
        # transaction rolled back.
        answer = unstorable(exc)
        if answer is None:
            return await _unexpected(request, exc)
        if _wants_html(request):
            return await _not_understood(request)
        return error_response(answer)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        body: dict[str, Any] = {
            "status": {
                "status": "failed",
                "errors": {
                    "error_message": "HTTP/1.0 500 Internal Server Error.",
                    "error_message_description": ["Internal error. The request was not completed."],
                    "error_code": [500],
                },
            }
        }
        return JSONResponse(body, status_code=500)

    app.add_api_route("/healthz", _health, methods=["GET"], include_in_schema=False)
    app.add_api_route("/noop", _noop, methods=["GET", "POST"], include_in_schema=False)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    for router in _routers():
        app.include_router(router)

    from opencoupon.dashboard.security import install as install_security
    from opencoupon.dashboard.singleuse import IMPORT_MAX_BYTES
    from opencoupon.docs import install_openapi
    from opencoupon.kit.bodylimit import install as install_body_limit
    from opencoupon.kit.fastlane import install as install_fast_lane

    # Inside the security middlewares (a 413 page is a page like any other), outside every route.
    install_body_limit(app, settings.max_body_bytes, {"/dashboard/singleuse/import": IMPORT_MAX_BYTES})
    install_security(app, runtime)
    install_openapi(app)
    # Inside the fast lane: v3 calls parse their own bodies (kit.body checks what they decode).
    app.add_middleware(SafeFormCharset)
    install_fast_lane(app)  # last: the outermost middleware
    return app


async def _not_understood(request: Request, status: int = 422) -> Response:
    from opencoupon.dashboard.security import error_page

    return await error_page(request, status, "Not understood", UNUSABLE_REQUEST)


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and not request.url.path.startswith(("/v3/", "/v4/"))


async def _health() -> dict[str, str]:
    return {"status": "ok"}


async def _noop() -> dict[str, Any]:
    """The ceiling every benchmark compares against: same server, no work."""
    return {"status": {"status": "OK"}}
