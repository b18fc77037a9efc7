"""A campaign's image URL is set by the tenant (API or dashboard) and shown to consumers: the coupon
page and the dashboard's preview of it show it only when it is an absolute http(s) address (never
`javascript:`, `data:` or a path on this site), as the coupon email already did
(distribution.tasks)."""

from __future__ import annotations

import httpx2
import pytest

from conftest import LiveServer
from coupons_fixtures import Acct, create_campaign
from dashboard_fixtures import signed_in

GOOD = "https://images.example.com/coffee.png"
BAD = [
    "javascript:alert(document.cookie)",
    " JavaScript:alert(1)",
    "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",
    "/p/SOMEONEELSE",
    "//evil.example/a.png",
]


@pytest.mark.parametrize("image", BAD)
def test_only_http_images_reach_the_pages(account: Acct, live_server: LiveServer, image: str) -> None:
    bad = create_campaign(account, title="Bad image", image=image)
    good = create_campaign(account, title="Good image", image=GOOD)
    with httpx2.Client(base_url=live_server.url, timeout=30, follow_redirects=True) as phone:
        page = phone.get(f"/p/{bad['code']}")
        assert page.status_code == 200
        assert "coupon-image" not in page.text
        shown = phone.get(f"/p/{good['code']}")
        assert f'class="coupon-image" src="{GOOD}"' in shown.text
    with signed_in(live_server.url, account.email) as web:
        assert "coupon-image" not in web.get(f"/dashboard/campaigns/{bad['id']}/preview").text
        assert GOOD in web.get(f"/dashboard/campaigns/{good['id']}/preview").text
