"""A direct path for API calls: a v3 call's path is exact (no path parameters), so it is looked up
in a dict and its endpoint runs without Starlette's route matching and FastAPI's request handler.

Matching a request against some 400 routes, and FastAPI's dependency machinery, cost about a
fifth of a validation's CPU. A trailing slash is ignored. The routes stay registered with FastAPI
too (OpenAPI, the Allow of a 405, anything not in the table); errors still reach the app's
exception handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]

API_PREFIXES = ("/v3/", "/v4/")

# Endpoints that take only the request (registered by kit.endpoint.v3_endpoint).
DIRECT_ENDPOINTS: set[Endpoint] = set()


def _api_routes(routes: list[BaseRoute]) -> Iterator[Route]:
    for route in routes:
        if isinstance(route, Route):
            yield route
        # FastAPI keeps included routers as branches; the project includes them without prefix.
        included = getattr(route, "original_router", None)
        if isinstance(included, APIRouter) and not included.prefix:
            yield from _api_routes(included.routes)


def direct_routes(app: FastAPI) -> dict[tuple[str, str], Endpoint]:
    """(method, path) → endpoint for every registered direct endpoint of this app; the first
    registration of a path wins, as in route matching."""
    table: dict[tuple[str, str], Endpoint] = {}
    for route in _api_routes(app.routes):
        if route.endpoint in DIRECT_ENDPOINTS and "{" not in route.path:
            for method in route.methods or ():
                table.setdefault((method, route.path), route.endpoint)
    return table


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of `path` answers (a 405's Allow header): route matching stops at
    the first route of the path, and a v3 call has one route per method."""
    methods: set[str] = set()
    for route in _api_routes(app.routes):
        if route.methods and route.path_regex.match(path):
            methods |= route.methods
    return sorted(methods)


class FastLane:
    """Pure ASGI middleware, installed outermost (inside Starlette's server-error handler)."""

    def __init__(self, app: ASGIApp, *, routes: dict[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            endpoint = self.routes.get((scope["method"], path))
            if endpoint is None and path.endswith("/") and len(path) > 1:
                # `/v3/coupon/info/` is answered, not redirected: an integration's HTTP client
                # (PHP's curl by default) does not follow a redirect of a POST.
                stripped = path.rstrip("/")
                endpoint = self.routes.get((scope["method"], stripped))
                if endpoint is None and stripped.startswith(API_PREFIXES):
                    # A REST path with parameters (`/v4/directory/dir_1/users/`) too: routed
                    # without its slash instead of Starlette's empty 307.
                    raw_path = scope.get("raw_path")
                    scope = {**scope, "path": stripped}
                    if isinstance(raw_path, bytes):
                        scope["raw_path"] = raw_path.rstrip(b"/")
            if endpoint is not None:
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(FastLane, routes=direct_routes(app))
