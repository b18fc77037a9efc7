"""QR codes of campaign and session URLs: decode the real image and find the URL."""

from __future__ import annotations

import io

import httpx2
import zxingcpp
from PIL import Image

from conftest import LiveServer
from coupons_fixtures import Acct, bulk_sessions, create_campaign, open_session
from helpers import assert_ok
from opencoupon.runtime import Runtime


def _decode_png(data: bytes) -> str:
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(data)))
    assert len(results) == 1
    return str(results[0].text)


def test_png_qr_codes_carry_campaign_session_and_scan_urls(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account)
    session = open_session(live_server, campaign["code"])
    base = "http://testserver.local"
    with httpx2.Client(base_url=live_server.url) as client:
        for path in (
            f"/p/{campaign['code']}",
            f"/p/{campaign['code']}/{session}",
            f"/p/{campaign['code']}/{session}/scan",
        ):
            response = client.get(f"/qr{path}.png")
            assert response.status_code == 200
            assert response.headers["content-type"] == "image/png"
            assert _decode_png(response.content) == base + path


def test_svg_qr_codes_and_unknown_codes(account: Acct, live_server: LiveServer) -> None:
    campaign = create_campaign(account)
    session = open_session(live_server, campaign["code"])
    with httpx2.Client(base_url=live_server.url) as client:
        svg = client.get(f"/qr/p/{campaign['code']}/{session}.svg")
        assert svg.status_code == 200
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert svg.text.lstrip().startswith("<svg")
        assert client.get("/qr/p/nosuch.png").status_code == 404
        assert client.get(f"/qr/p/{campaign['code']}/aaaaaaaaaaaaaaaaaaaaa.png").status_code == 404
        assert client.get(f"/qr/p/{campaign['code']}.gif").status_code == 404
    info = account.call("/v3/coupon/info", campaign=campaign["id"]).json()["coupon_info"]
    assert info["qr_code_url"] == f"http://testserver.local/qr/p/{campaign['code']}.png"


def test_no_qr_code_for_a_page_that_is_not_there(
    account: Acct, live_server: LiveServer, runtime: Runtime
) -> None:
    """A removed session's page and the scan page of a campaign without QR validation answer
    404 (or 409): so do their QR codes."""
    campaign = create_campaign(account)
    kept, removed = bulk_sessions(runtime, campaign["id"], 2, source="single_use")
    assert_ok(account.call("/v3/singleuse/remove", single_use_code=removed))
    pin_only = create_campaign(account, validation_methods="pin")
    (session,) = bulk_sessions(runtime, pin_only["id"], 1)
    with httpx2.Client(base_url=live_server.url) as client:
        assert client.get(f"/qr/p/{campaign['code']}/{kept}.png").status_code == 200
        assert client.get(f"/qr/p/{campaign['code']}/{removed}.png").status_code == 404
        assert client.get(f"/qr/p/{campaign['code']}/{removed}/scan.png").status_code == 404
        assert client.get(f"/qr/p/{pin_only['code']}/{session}.svg").status_code == 200
        assert client.get(f"/qr/p/{pin_only['code']}/{session}/scan.svg").status_code == 404
