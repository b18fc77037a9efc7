"""Dashboard push page over real HTTP: compose to a whole campaign or one session, server-side
checks, the fan-out's progress until done (delivered to a real stand-in push service), CSRF and
tenancy."""

from __future__ import annotations

import re

import httpx2
from sqlalchemy import select

from conftest import LiveServer, TestAccount
from dashboard_fixtures import post_form, signed_in
from helpers import assert_ok
from opencoupon.kit.clock import utcnow
from opencoupon.models import CouponSession
from opencoupon.push import service as push_service
from opencoupon.runtime import Runtime
from test_push import Browser, _campaign, _subscribe
from test_push_review import _progress, _subscriber
from webhooks_fixtures import Receiver, drain

PAGE = "/dashboard/push"


def test_compose_and_follow_fanout(
    live_server: LiveServer,
    account: TestAccount,
    other_account: TestAccount,
    runtime: Runtime,
    http: httpx2.Client,
) -> None:
    standin = Receiver().start()
    try:
        campaign, codes = _campaign(runtime, account.id, sessions=2)
        browser = Browser()
        for n, code in enumerate(codes):
            assert _subscribe(http, code, browser.subscription(f"{standin.url}/push/{n}")).status_code == 201
        with signed_in(live_server.url, account.email) as web:
            bad = post_form(web, PAGE, PAGE, {"target": campaign, "message": ""})
            assert bad.status_code == 422
            assert "Message: write" in bad.text
            bad = post_form(web, PAGE, PAGE, {"target": campaign, "message": "x" * 1001})
            assert bad.status_code == 422
            assert "At most 1000" in bad.text
            bad = post_form(web, PAGE, PAGE, {"target": campaign, "recipient": "nosuchcode", "message": "Hi"})
            assert bad.status_code == 422
            sent = post_form(web, PAGE, PAGE, {"target": campaign, "message": "Sale today"})
            assert sent.status_code == 303
            path = sent.headers["location"]
            first = web.get(path).text
            assert "Sending" in first
            assert "hx-get" in first
            assert "0 of 2" in first
            drain(runtime)
            done = web.get(path + "/progress").text
            assert "hx-get" not in done
            assert re.search(r"<dd data-sent>2</dd>", done)
            assert len(standin.requests()) == 2
            one = post_form(
                web, PAGE, PAGE, {"target": campaign, "recipient": codes[0], "message": "Just you"}
            )
            assert "0 of 1" in web.get(one.headers["location"]).text
            assert (
                web.post(PAGE, data={"target": campaign, "message": "x", "csrf_token": "forged"}).status_code
                == 403
            )
        with signed_in(live_server.url, other_account.email) as stranger:
            assert stranger.get(path).status_code == 404
            refused = post_form(stranger, PAGE, PAGE, {"target": campaign, "message": "Hi"})
            assert refused.status_code == 422
            assert "not found" in refused.text.lower()
    finally:
        standin.stop()


def test_push_calls_and_the_dashboard_take_a_session_code_in_any_letter_case(
    account: TestAccount, runtime: Runtime, live_server: LiveServer
) -> None:
    """As couponsession/update does: the full code or its short form, upper case too, reach that
    session's browser (and only it)."""
    standin = Receiver().start()
    try:
        campaign, codes = _campaign(runtime, account.id, sessions=2)
        browser = Browser()
        with runtime.db.transaction() as session:
            subs = [_subscriber(session, code) for code in codes]
            short = session.scalar(select(CouponSession.short_code).where(CouponSession.code == codes[0]))
            push_service.subscribe_many(
                session,
                [
                    (sub, f"{standin.url}/push/{n}", browser.p256dh, browser.auth)
                    for n, sub in enumerate(subs)
                ],
                utcnow(),
            )
        assert short is not None
        for given in (codes[0].upper(), short.upper(), f" {short.upper()} "):
            answer = assert_ok(
                account.call(
                    "/v3/coupon/pushnotification/single", campaign=campaign, couponsession=given, message="Hi"
                )
            )
            assert answer["queued"] == "1", given
            progress = _progress(account, runtime, answer["notification"])
            assert (progress["status"], progress["sent"]) == ("done", 1), (given, progress)
        assert [r.path for r in standin.wait_for(3)] == ["/push/0"] * 3
        with signed_in(live_server.url, account.email) as web:
            sent = post_form(
                web, PAGE, PAGE, {"target": campaign, "recipient": codes[1].upper(), "message": "Hi"}
            )
            assert sent.status_code == 303, sent.text
        drain(runtime)
        assert [r.path for r in standin.wait_for(4)][-1] == "/push/1"
    finally:
        standin.stop()
