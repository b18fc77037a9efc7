"""The signature scheme, pinned to the Standard Webhooks reference vector."""

from __future__ import annotations

import datetime as dt

from standardwebhooks import Webhook

from opencoupon.webhooks import signing


def test_reference_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = signing.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_new_secrets_verify_with_the_reference_library() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    now = int(dt.datetime.now(dt.UTC).timestamp())
    body = '{"id":"evt_x","data":{"a":"é"}}'
    headers = signing.headers([secret, signing.new_secret()], "evt_x", now, body)
    assert Webhook(secret).verify(body, headers) == {"id": "evt_x", "data": {"a": "é"}}
    assert len(headers["webhook-signature"].split(" ")) == 2


def test_retry_schedule_default() -> None:
    from opencoupon.config import Settings

    settings = Settings(database_url="sqlite://", secret_key="k")
    assert signing.retry_delays(settings) == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    for attempt, delay in enumerate(signing.DEFAULT_RETRY_DELAYS, start=1):
        got = signing.next_delay(settings, attempt)
        assert got is not None
        assert 0.9 * delay <= got <= 1.1 * delay
    assert signing.next_delay(settings, 8) is None
