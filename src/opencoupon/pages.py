"""Shared HTML rendering for consumer pages and the dashboard (Jinja2, server-side)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import Response

TEMPLATES_DIR = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

R = TypeVar("R", bound=Response)


def http_url(value: object) -> str:
    """`value` when it is an absolute http(s) address, otherwise "" (template filter `http_url`).
    For addresses a tenant typed (a campaign's image) that a page puts in `src` or `href`:
    autoescape keeps them inside the attribute, this keeps `javascript:`, `data:` and paths on
    this site out of it."""
    text = str(value or "")
    if any(c.isspace() or ord(c) < 32 for c in text):
        return ""
    try:
        parts = urlsplit(text)
    except ValueError:
        return ""
    return text if parts.scheme.lower() in ("http", "https") and parts.hostname else ""


templates.env.filters["http_url"] = http_url


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def render_error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", {"title": title, "message": message}, status_code=status_code)


def deny_framing(response: R) -> R:
    """No page of another site (nor this one) may show `response` in a frame: the pages where staff
    type a PIN, and the dashboard's, cannot be overlaid to trick a click or a keystroke
    (clickjacking). X-Frame-Options for older browsers, CSP frame-ancestors for the others."""
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response


def private_page(response: R) -> R:
    """A consumer page of one session, card holder or member, or with a form's CSRF token: its
    address is a bearer token or it shows personal data, so no cache keeps it (Cache-Control:
    no-store, as the dashboard's pages), no browser reads it as another type than it says
    (X-Content-Type-Options: nosniff), and no frame shows it (deny_framing)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return deny_framing(response)
