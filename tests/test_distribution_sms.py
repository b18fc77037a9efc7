"""/v3/send/sms against a local HTTP stand-in of a Twilio-compatible provider."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from conftest import free_port
from distribution_fixtures import CampaignRef, SmsStandIn
from helpers import assert_error, assert_ok
from opencoupon.config import Settings
from opencoupon.models import CouponSession, DistributionSend, SmsIntegration
from opencoupon.runtime import Runtime
from opencoupon.worker.runner import Runner


def configure_sms(account: Any, base_url: str, **extra: Any) -> dict[str, Any]:
    body = {
        "base_url": base_url,
        "account_sid": "AC0123456789abcdef",
        "auth_token": "token-s3cret",
        "sender": "+15005550006",
        **extra,
    }
    response = account.client.put("/v4/integrations/sms", json=body, headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def send_row(runtime: Runtime, send_id: str) -> DistributionSend:
    with runtime.db.read() as session:
        row = session.get(DistributionSend, int(send_id.removeprefix("snd_")))
        assert row is not None
        session.expunge(row)
        return row


def test_sms_request_shape_auth_and_link(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: SmsStandIn, settings: Settings
) -> None:
    configure_sms(account, dist_sms.url)
    body = assert_ok(
        account.call(
            "/v3/send/sms",
            campaign=dist_campaign.public_id,
            phone="+44 7911 123-456",
            message="Your coupon: {link} - see you soon!",
            firstname="Sam",
        )
    )
    assert body["action"] == "sms_sent"
    link = f"{settings.public_base_url}/p/{dist_campaign.code}/{body['couponsession']}"
    assert body["url"] == link
    with runtime.db.read() as session:
        row = session.scalar(select(CouponSession).where(CouponSession.code == body["couponsession"]))
        assert row is not None
        assert (row.campaign_id, row.source, row.phone, row.firstname) == (
            dist_campaign.id,
            "sms",
            "+447911123456",
            "Sam",
        )
    assert dist_sms.requests == []
    Runner(runtime).run_until_idle()

    [request] = dist_sms.requests
    assert request.path == "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
    assert request.basic_auth == ("AC0123456789abcdef", "token-s3cret")
    assert request.form == {
        "To": "+447911123456",
        "From": "+15005550006",
        "Body": f"Your coupon: {link} - see you soon!",
    }
    send = send_row(runtime, body["send"]["ID"])
    assert send.status == "sent"
    assert send.provider_message_id == "SM" + "1".zfill(32)
    assert send.provider_response.startswith("HTTP 201")
    listed = account.client.get(
        "/v4/sends", params={"couponsession": body["couponsession"]}, headers=account.headers
    ).json()
    assert [(s["channel"], s["status"], s["message"]) for s in listed["sends"]] == [
        ("sms", "sent", f"Your coupon: {link} - see you soon!")
    ]


def test_link_is_appended_without_a_placeholder_and_sender_can_be_alphanumeric(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: SmsStandIn, settings: Settings
) -> None:
    configure_sms(account, dist_sms.url)
    first = assert_ok(
        account.call(
            "/v3/send/sms",
            campaign=dist_campaign.public_id,
            phone="+15551234567",
            text="Hello!",
            sender="CoffeeCo",
        )
    )
    second = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234568"))
    Runner(runtime).run_until_idle()
    by_to = {r.form["To"]: r.form for r in dist_sms.requests}
    link1 = f"{settings.public_base_url}/p/{dist_campaign.code}/{first['couponsession']}"
    link2 = f"{settings.public_base_url}/p/{dist_campaign.code}/{second['couponsession']}"
    assert by_to["+15551234567"] == {"To": "+15551234567", "From": "CoffeeCo", "Body": f"Hello! {link1}"}
    assert by_to["+15551234568"]["Body"] == f"20% off your next coffee: {link2}"


def test_sms_errors(runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: SmsStandIn) -> None:
    assert_error(
        account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567"), 422, 103
    )
    configure_sms(account, dist_sms.url)
    for bad in ("5551234567", "+0123456789", "+1555abc4567", "+1234"):
        body = assert_error(
            account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone=bad), 422, 300
        )
        assert "E.164" in body["status"]["errors"]["error_message_description"][0]
    bad_sender = assert_error(
        account.call(
            "/v3/send/sms",
            campaign=dist_campaign.public_id,
            phone="+15551234567",
            sender="Way too long sender",
        ),
        422,
        300,
    )
    assert "sender" in bad_sender["status"]["errors"]["error_message_description"][0]
    assert_error(
        account.call(
            "/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567", message="x" * 1600
        ),
        422,
        300,
    )
    assert_error(account.call("/v3/send/sms", campaign="cam_99999999", phone="+15551234567"), 404, 502)
    assert_error(account.call("/v3/send/sms", campaign=dist_campaign.public_id), 422, 200)


def test_sms_settings_keep_the_token_secret(runtime: Runtime, account: Any, dist_sms: SmsStandIn) -> None:
    view = configure_sms(account, dist_sms.url)
    assert view == {
        "configured": True,
        "source": "account",
        "provider": "twilio",
        "base_url": dist_sms.url,
        "account_sid": "AC0123456789abcdef",
        "auth_token_set": True,
        "sender": "+15005550006",
        "updated_date_utc": view["updated_date_utc"],
    }
    with runtime.db.read() as session:
        row = session.scalar(select(SmsIntegration).where(SmsIntegration.account_id == account.id))
        assert row is not None
        assert "token-s3cret" not in row.token_encrypted
    # A first configuration needs the token; a later one may omit it.
    kept = account.client.put(
        "/v4/integrations/sms",
        json={"account_sid": "AC0123456789abcdef", "base_url": dist_sms.url, "sender": "Shop"},
        headers=account.headers,
    )
    assert kept.json()["sender"] == "Shop"
    assert_error(
        account.client.put(
            "/v4/integrations/sms",
            json={"account_sid": "AC/../x", "base_url": dist_sms.url},
            headers=account.headers,
        ),
        422,
        300,
    )
    assert_error(
        account.client.put(
            "/v4/integrations/sms",
            json={"account_sid": "AC1", "base_url": "ftp://example.com"},
            headers=account.headers,
        ),
        422,
        300,
    )
    assert account.client.delete("/v4/integrations/sms", headers=account.headers).json() == {
        "configured": False,
        "source": "",
    }
    assert_error(
        account.client.put("/v4/integrations/sms", json={"account_sid": "AC1"}, headers=account.headers),
        422,
        200,
    )


def test_an_sms_settings_put_keeps_the_sender_and_base_url_it_leaves_out(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: SmsStandIn
) -> None:
    """A PUT without `sender` emptied the default sender (and /v3/send/sms without one then
    answered 200) while it kept the token; now it keeps the sender, and "" clears it."""
    configure_sms(account, dist_sms.url, sender="Shop")
    kept = account.client.put(
        "/v4/integrations/sms", json={"account_sid": "AC0123456789abcdef"}, headers=account.headers
    )
    assert kept.status_code == 200, kept.text
    assert (kept.json()["sender"], kept.json()["base_url"]) == ("Shop", dist_sms.url)
    body = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567"))
    Runner(runtime).run_until_idle()
    assert send_row(runtime, body["send"]["ID"]).status == "sent"
    assert [r.form["From"] for r in dist_sms.requests] == ["Shop"]
    cleared = account.client.put(
        "/v4/integrations/sms",
        json={"account_sid": "AC0123456789abcdef", "sender": ""},
        headers=account.headers,
    )
    assert cleared.json()["sender"] == ""
    assert_error(
        account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567"), 422, 200
    )


def test_the_stored_sms_token_is_not_kept_for_another_gateway_or_account_sid(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: SmsStandIn
) -> None:
    """A PUT pointing base_url at one's own server without the token, then one send, handed the
    real token over (HTTP basic auth). Changing base_url or account_sid now needs the token."""
    real = {"base_url": "https://api.twilio.com", "account_sid": "AC0123", "sender": "+15005550006"}
    saved = account.client.put(
        "/v4/integrations/sms", json={**real, "auth_token": "real-twilio-token"}, headers=account.headers
    )
    assert saved.status_code == 200, saved.text
    for change in ({"base_url": dist_sms.url}, {"account_sid": "AC9999"}, {"base_url": "https://gw.example"}):
        refused = account.client.put("/v4/integrations/sms", json={**real, **change}, headers=account.headers)
        assert_error(refused, 422, 200)
        assert "auth_token" in refused.json()["status"]["errors"]["error_message_description"][0]
    view = account.client.get("/v4/integrations/sms", headers=account.headers).json()
    assert (view["base_url"], view["account_sid"]) == ("https://api.twilio.com", "AC0123")
    # Same gateway and account: the token is kept.
    assert account.client.put("/v4/integrations/sms", json=real, headers=account.headers).status_code == 200
    # With its own token the new gateway is the account's to use.
    configure_sms(account, dist_sms.url, account_sid="AC0123", auth_token="own-gateway-token")
    assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+447911123456"))
    Runner(runtime).run_until_idle()
    assert [r.basic_auth for r in dist_sms.requests] == [("AC0123", "own-gateway-token")]


def test_provider_server_errors_and_rate_limits_are_retried(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_sms: SmsStandIn,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "send_retry_base_seconds", 0.0)
    configure_sms(account, dist_sms.url)
    dist_sms.responses = [
        (503, {"code": 20503, "message": "Service unavailable"}),
        (429, {"code": 20429, "message": "Too many requests"}),
    ]
    body = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567"))
    Runner(runtime).run_until_idle()
    assert len(dist_sms.requests) == 3
    assert {r.form["Body"] for r in dist_sms.requests} == {dist_sms.requests[0].form["Body"]}
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.attempts) == ("sent", 3)


def test_provider_refusal_is_reported_at_once(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: SmsStandIn
) -> None:
    configure_sms(account, dist_sms.url)
    dist_sms.responses = [(400, {"code": 21211, "message": "The 'To' number +15551234567 is not valid."})]
    body = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567"))
    Runner(runtime).run_until_idle()
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.attempts) == ("failed", 1)
    assert "is not valid" in send.last_error
    assert "21211" in send.last_error
    assert send.provider_response.startswith("HTTP 400")
    entry = account.client.get(f"/v4/sends/{body['send']['ID']}", headers=account.headers).json()
    assert entry["status"] == "failed"
    assert entry["failed_date_utc"]


def test_unreachable_provider_is_retried_then_reported(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "send_retry_base_seconds", 0.0)
    monkeypatch.setattr(settings, "send_max_attempts", 3)
    configure_sms(account, f"http://127.0.0.1:{free_port()}")
    body = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567"))
    Runner(runtime).run_until_idle()
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.attempts) == ("failed", 3)
    assert "not reachable" in send.last_error
