"""Swagger UI at /docs, served from vendored swagger-ui-dist files (no CDN), and the security
schemes the v3/v4 operations refer to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

SECURITY_SCHEMES: dict[str, Any] = {
    "ClientId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Client-Id",
        "description": "API client ID (also accepted as `client_id` in the body, or `x-api-key`).",
    },
    "ClientSecret": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Client-Secret",
        "description": "API client secret (also accepted as `client_secret` in the body, or `x-api-secret`).",
    },
}


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title="OpenCoupon API",
        swagger_js_url="/static/swagger/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger/swagger-ui.css",
        swagger_favicon_url="/static/swagger/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": True},
    )


def install_openapi(app: FastAPI) -> None:
    """Add the security schemes to the generated spec (built once, on first use)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
