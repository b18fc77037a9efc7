"""QR codes (SVG and PNG, made with segno) of every campaign URL, session URL and staff scan URL."""

from __future__ import annotations

import functools
import io

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.requests import Request

from opencoupon.coupons import repository
from opencoupon.coupons.pages import _CODE
from opencoupon.coupons.service import methods_of
from opencoupon.errors import ApiError, error_response
from opencoupon.qr import codes
from opencoupon.runtime import Runtime

router = APIRouter(include_in_schema=False)

MEDIA = {"svg": "image/svg+xml", "png": "image/png"}


# The same URL always gives the same image, and campaign codes and reloaded coupon pages ask for
# the same ones again.
@functools.lru_cache(maxsize=2048)
def qr_image(url: str, kind: str) -> bytes:
    code = codes.make(url)
    out = io.BytesIO()
    if kind == "svg":
        code.save(out, kind="svg", scale=4, border=4, xmldecl=False)
    else:
        code.save(out, kind="png", scale=8, border=4)
    return out.getvalue()


def _exists(runtime: Runtime, code: str, session_code: str | None, scan: bool = False) -> bool:
    """Whether the page the QR code leads to is there: the campaign's (not deleted), a session
    of it that is not removed, and for the staff scan page, a campaign that uses QR validation."""
    if not _CODE.match(code) or (session_code is not None and not _CODE.match(session_code)):
        return False
    with runtime.db.read() as s:
        campaign = repository.campaign_by_code(s, code)
        if campaign is None:
            return False
        if scan and "qr" not in methods_of(campaign):
            return False
        if session_code is None:
            return True
        row = repository.session_in_campaign(s, campaign.id, session_code)
        return row is not None and row.removed_at is None


async def _answer(
    request: Request, fmt: str, path: str, code: str, session_code: str | None, scan: bool = False
) -> Response:
    runtime: Runtime = request.app.state.runtime
    if fmt not in MEDIA or not await run_in_threadpool(_exists, runtime, code, session_code, scan):
        return error_response(ApiError(404, "QR code not found.", http_status=404))
    image = await run_in_threadpool(qr_image, runtime.url(path), fmt)
    # A session's code holds its address, a bearer token: the browser may keep it, no shared cache.
    cache = "public, max-age=86400" if session_code is None else "private, max-age=86400"
    return Response(
        image, media_type=MEDIA[fmt], headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    )


@router.api_route("/qr/p/{code}.{fmt}", methods=["GET", "HEAD"])
async def campaign_qr(request: Request, code: str, fmt: str) -> Response:
    """QR code of the campaign URL /p/{code}."""
    return await _answer(request, fmt, f"/p/{code}", code, None)


@router.api_route("/qr/p/{code}/{session_code}.{fmt}", methods=["GET", "HEAD"])
async def session_qr(request: Request, code: str, session_code: str, fmt: str) -> Response:
    """QR code of a session URL /p/{code}/{session}."""
    return await _answer(request, fmt, f"/p/{code}/{session_code}", code, session_code)


@router.api_route("/qr/p/{code}/{session_code}/scan.{fmt}", methods=["GET", "HEAD"])
async def scan_qr(request: Request, code: str, session_code: str, fmt: str) -> Response:
    """QR code shown on the coupon: it leads staff to the PIN-protected validation page."""
    return await _answer(request, fmt, f"/p/{code}/{session_code}/scan", code, session_code, scan=True)
