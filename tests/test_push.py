"""Web Push: subscriptions through the browser route, aes128gcm payloads that a push-service
stand-in decrypts with the subscriber's private key, VAPID tokens, fan-out progress, and removal
of subscriptions the push service says are gone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import http_ece
import httpx2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from sqlalchemy import func, select

from conftest import TEST_SECRET_KEY
from helpers import assert_error, assert_ok
from opencoupon.config import Settings
from opencoupon.coupons.sessions import new_session
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign, PushSubscription
from opencoupon.pages import templates
from opencoupon.push import service as push_service
from opencoupon.push import targets
from opencoupon.push.vapid import b64url, b64url_decode
from opencoupon.runtime import Runtime
from webhooks_fixtures import Receiver, Reply, drain

if TYPE_CHECKING:
    from conftest import TestAccount


class Browser:
    """A subscriber: its own P-256 key pair and auth secret, as a browser makes them."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = b64url(b"0123456789abcdef")
        self.p256dh = b64url(
            self.key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    def subscription(self, endpoint: str) -> dict[str, Any]:
        return {"endpoint": endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    def decrypt(self, body: bytes) -> dict[str, Any]:
        plain = http_ece.decrypt(
            body, private_key=self.key, auth_secret=b64url_decode(self.auth), version="aes128gcm"
        )
        return dict(json.loads(plain))


def _campaign(runtime: Runtime, account_id: int, sessions: int = 1) -> tuple[str, list[str]]:
    with runtime.db.transaction() as session:
        now = utcnow()
        campaign = Campaign(
            account_id=account_id,
            code=f"p{time.time_ns() % 10**11:011d}"[-10:],
            name="Push test",
            title="Spring sale",
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
        session.flush()
        codes = [new_session(session, campaign).code for _ in range(sessions)]
        return f"cam_{campaign.id}", codes


def _subscribe(http: httpx2.Client, code: str, subscription: dict[str, Any]) -> httpx2.Response:
    return http.post(
        "/push/subscriptions",
        json={"target": {"kind": "coupon_session", "code": code}, "subscription": subscription},
    )


def _wait_done(acc: TestAccount, fanout_id: str, runtime: Runtime, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        drain(runtime)
        progress = acc.client.get(f"/v4/push/fanouts/{fanout_id}", headers=acc.headers)
        assert progress.status_code == 200, progress.text
        body = dict(progress.json())
        if body["status"] == "done" or time.monotonic() > deadline:
            return body


def test_single_push_is_encrypted_for_the_subscriber_and_signed_with_vapid(
    account: TestAccount, runtime: Runtime, http: httpx2.Client, settings: Settings, var_dir: Path
) -> None:
    push_service_standin = Receiver().start()
    try:
        campaign, (code,) = _campaign(runtime, account.id)
        browser = Browser()
        endpoint = push_service_standin.url + "/push/abc123"
        subscribed = _subscribe(http, code, browser.subscription(endpoint))
        assert subscribed.status_code == 201, subscribed.text
        # Subscribing again is the same subscription.
        assert _subscribe(http, code, browser.subscription(endpoint)).status_code == 201

        answer = assert_ok(
            account.call(
                "/v3/coupon/pushnotification/single", campaign=campaign, couponsession=code, message="Hi!"
            )
        )
        assert answer["queued"] == "1"
        drain(runtime)
        got = push_service_standin.wait_for(1)
        assert len(got) == 1
        request = got[0]
        assert request.headers["content-encoding"] == "aes128gcm"
        assert int(request.headers["ttl"]) > 0
        message = browser.decrypt(request.raw)
        assert message["body"] == "Hi!"
        assert message["title"] == "Spring sale"
        assert message["url"].endswith(f"/{code}")

        # VAPID: a valid ES256 token for this push service's origin, with the server's public key.
        scheme, _, params = request.headers["authorization"].partition(" ")
        assert scheme == "vapid"
        parts = dict(p.split("=", 1) for p in params.split(","))
        public = http.get("/push/vapid-public-key").json()["publicKey"]
        assert parts["k"] == public
        assert Vapid02.verify(request.headers["authorization"])
        claims = json.loads(b64url_decode(parts["t"].split(".")[1]))
        assert claims["aud"] == push_service_standin.url
        assert claims["exp"] <= time.time() + 24 * 3600
        assert claims["sub"].startswith("mailto:")

        # The 6-character short code works too; progress is readable.
        short = assert_ok(
            account.call(
                "/v3/coupon/pushnotification/single", campaign=campaign, couponsession=code[:6], message="2"
            )
        )
        progress = _wait_done(account, short["notification"], runtime)
        assert progress["sent"] == 1
        assert progress["queued"] == 1

        # `opencoupon vapid show` prints the same key (kept in the database).
        shown = subprocess.run(
            [str(Path(sys.executable).parent / "opencoupon"), "vapid", "show"],
            env={
                "PATH": "/usr/bin:/bin",
                "OPENCOUPON_DATABASE_URL": settings.database_url,
                "OPENCOUPON_SECRET_KEY": TEST_SECRET_KEY,
                "OPENCOUPON_VAR_DIR": str(var_dir),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert shown.stdout.strip() == public
    finally:
        push_service_standin.stop()


def test_push_errors(account: TestAccount, other_account: TestAccount, runtime: Runtime) -> None:
    campaign, (code,) = _campaign(runtime, account.id)
    other_campaign, (other_code,) = _campaign(runtime, other_account.id)
    single = "/v3/coupon/pushnotification/single"
    assert_error(account.call(single, campaign=campaign, couponsession="x" * 21, message="m"), 404, 505)
    assert_error(account.call(single, campaign=campaign, couponsession=other_code, message="m"), 404, 505)
    foreign = account.call(single, campaign=other_campaign, couponsession=other_code, message="m")
    unknown = account.call(single, campaign="cam_999999999", couponsession=code, message="m")
    assert_error(foreign, 404, 502)
    assert foreign.json() == unknown.json()
    assert_error(account.call(single, campaign=campaign, couponsession=code), 422, 200)
    assert_error(account.call(single, campaign=campaign, couponsession=code, message="x" * 1001), 422, 300)
    nobody = assert_ok(account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="m"))
    assert nobody["queued"] == "0"
    assert_error(
        account.client.get(f"/v4/push/fanouts/{nobody['notification']}", headers=other_account.headers),
        404,
        404,
    )
    loyalty_unknown = account.call("/v3/loyalty/pushnotification/all", loyaltycard="999999999", message="m")
    assert_error(loyalty_unknown, 404, 508)
    assert_error(
        account.call("/v3/loyalty/pushnotification/single", loyaltycard="999999999", user="1", message="m"),
        404,
        508,
    )


def test_subscription_route_rules(account: TestAccount, runtime: Runtime, http: httpx2.Client) -> None:
    _, (code,) = _campaign(runtime, account.id)
    browser = Browser()
    assert (
        _subscribe(http, "nope" * 5 + "x", browser.subscription("https://push.example/1")).status_code == 404
    )
    bad_key = {"endpoint": "https://push.example/1", "keys": {"p256dh": "AAAA", "auth": browser.auth}}
    assert _subscribe(http, code, bad_key).status_code == 422
    assert _subscribe(http, code, browser.subscription("file:///etc/passwd")).status_code == 422
    assert http.post("/push/subscriptions", content=b"not json").status_code == 422
    ok = _subscribe(http, code, browser.subscription("https://push.example/1"))
    assert ok.status_code == 201
    removed = http.request(
        "DELETE",
        "/push/subscriptions",
        json={
            "target": {"kind": "coupon_session", "code": code},
            "subscription": browser.subscription("https://push.example/1"),
        },
    )
    assert removed.json() == {"removed": 1, "remaining": 0}
    runtime.settings.allow_private_webhooks = False
    try:
        private = _subscribe(http, code, browser.subscription("https://127.0.0.1/push"))
        assert private.status_code == 422
    finally:
        runtime.settings.allow_private_webhooks = True


def test_fanout_to_10000_subscriptions_completes_and_gone_ones_are_removed(
    account: TestAccount, runtime: Runtime
) -> None:
    total = 10_000
    standin = Receiver().start()
    browser = Browser()
    standin.behaviour = lambda path, _h, _b: Reply(
        status=410 if path.endswith("/gone") else 404 if path.endswith("/missing") else 201
    )
    try:
        campaign, codes = _campaign(runtime, account.id, sessions=100)
        with runtime.db.transaction() as session:
            subscribers = [targets.coupon_subscriber(session, code) for code in codes]
            items = []
            for n in range(total):
                target = subscribers[n % len(codes)]
                assert target is not None
                suffix = "gone" if n == 1234 else "missing" if n == 4321 else "ok"
                items.append((target, f"{standin.url}/push/{n}/{suffix}", browser.p256dh, browser.auth))
            push_service.subscribe_many(session, items, utcnow())
        started = time.monotonic()
        answer = assert_ok(
            account.call("/v3/coupon/pushnotification/all", campaign=campaign, message="Big sale")
        )
        assert answer["queued"] == str(total)
        progress = _wait_done(account, answer["notification"], runtime, timeout=60)
        elapsed = time.monotonic() - started
        assert progress["status"] == "done", progress
        assert progress["sent"] == total - 2
        assert progress["removed"] == 2
        assert progress["failed"] == 0
        got = standin.requests()
        assert len(got) == total
        # Every payload decrypts for the subscriber (a sample: decrypting all would double the time).
        for request in got[:: total // 50]:
            assert browser.decrypt(request.raw)["body"] == "Big sale"
        with runtime.db.read() as session:
            left = session.scalar(
                select(func.count())
                .select_from(PushSubscription)
                .where(PushSubscription.account_id == account.id)
            )
        assert left == total - 2
        assert elapsed < 60
    finally:
        standin.stop()


def test_optin_partial_and_service_worker(http: httpx2.Client) -> None:
    html = templates.get_template("push/optin.html").render(
        push_target={"kind": "coupon_session", "code": "abcdefghijklmnopqrstu"}
    )
    assert 'data-push-kind="coupon_session"' in html
    assert 'data-push-code="abcdefghijklmnopqrstu"' in html
    assert "<noscript>" in html
    assert "/static/push/optin.js" in html
    assert "hidden" in html
    assert templates.get_template("push/optin.html").render(push_target=None).strip() == ""
    for path in ("/static/push/sw.js", "/static/push/optin.js"):
        resp = http.get(path)
        assert resp.status_code == 200
        assert "javascript" in resp.headers["content-type"]
    assert "showNotification" in http.get("/static/push/sw.js").text
