"""/v3/send/email against a real SMTP server (aiosmtpd on loopback), delivered by the real worker."""

from __future__ import annotations

import datetime as dt
import io
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import func, select, update

from conftest import free_port
from distribution_fixtures import CampaignRef, DroppingServer, SmtpHandler, SmtpServer, make_campaign
from helpers import assert_error, assert_ok, race
from opencoupon.config import Settings
from opencoupon.models import Account, CouponSession, DistributionSend, EmailIntegration, Job
from opencoupon.runtime import Runtime
from opencoupon.worker.runner import Runner


def configure_smtp(account: Any, port: int, **extra: Any) -> dict[str, Any]:
    body = {
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "sender_email": "coupons@shop.example",
        "sender_name": "Demo Coffee",
        **extra,
    }
    response = account.client.put("/v4/integrations/email", json=body, headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def run_jobs(runtime: Runtime) -> None:
    """Deliver every due send. No more threads than one account's share of the worker
    (distribution.tasks.SENDS_PER_TENANT): with more, its sends over the share would be put back
    for a moment, not run."""
    Runner(runtime, concurrency=4).run_until_idle()


def send_row(runtime: Runtime, send_id: str) -> DistributionSend:
    with runtime.db.read() as session:
        row = session.get(DistributionSend, int(send_id.removeprefix("snd_")))
        assert row is not None
        session.expunge(row)
        return row


def abandon(runtime: Runtime, send_id: str) -> None:
    """Drop a send a test left retrying, so no later test's worker run delivers it to a server
    that happens to reuse its port."""
    from sqlalchemy import update

    number = int(send_id.removeprefix("snd_"))
    with runtime.db.transaction() as session:
        session.execute(update(Job).where(Job.payload == f'{{"send_id": {number}}}').values(status="dead"))
        session.execute(
            update(DistributionSend)
            .where(DistributionSend.id == number)
            .values(status="failed", dedup_key=None)
        )


def test_email_reaches_the_smtp_server_with_both_parts_link_and_qr_code(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings: Settings,
    http: httpx2.Client,
) -> None:
    with runtime.db.transaction() as session:
        owner = session.get(Account, account.id)
        assert owner is not None
        owner.branding = '{"logo": "https://cdn.example.com/logo.png", "primary_color": "#ff6600"}'
        owner.company_name = "Demo Coffee Co."
    configure_smtp(account, dist_smtp.port)
    body = assert_ok(
        account.call(
            "/v3/send/email",
            campaign=dist_campaign.public_id,
            email="Jane.Doe@example.org",
            subject="A gift for you",
            firstname="Jane",
            lastname="Doe",
        )
    )
    assert body["action"] == "email_sent"
    code = body["couponsession"]
    assert len(code) == 21
    assert body["url"] == f"{settings.public_base_url}/p/{dist_campaign.code}/{code}"
    assert body["send"]["status"] == "queued"

    # The session exists, belongs to the campaign and carries what the sender knew.
    with runtime.db.read() as session:
        row = session.scalar(select(CouponSession).where(CouponSession.code == code))
        assert row is not None
        assert (row.campaign_id, row.source, row.email) == (dist_campaign.id, "email", "Jane.Doe@example.org")
        assert (row.firstname, row.lastname) == ("Jane", "Doe")
        assert str(row.id) == body["sequenceid"]

    assert dist_smtp.handler.messages == []  # nothing is sent inside the API call
    run_jobs(runtime)

    [received] = dist_smtp.handler.to("Jane.Doe@example.org")
    assert received.mail_from == "coupons@shop.example"
    msg = received.message
    assert msg["Subject"] == "A gift for you"
    assert msg["From"] == "Demo Coffee <coupons@shop.example>"
    assert msg["To"] == "Jane Doe <Jane.Doe@example.org>"
    assert msg["Message-ID"].endswith("@shop.example>")
    assert msg["Date"]
    assert msg["X-OpenCoupon-Send"] == body["send"]["ID"]
    assert msg.get_content_type() == "multipart/alternative"

    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    text_content, html_content = text.get_content(), html.get_content()
    assert body["url"] in text_content
    assert "Hi Jane," in text_content
    assert "20% off your next coffee" in text_content
    assert f'href="{body["url"]}"' in html_content
    assert "https://images.example.com/coffee.png" in html_content
    assert "https://cdn.example.com/logo.png" in html_content
    assert "#ff6600" in html_content
    assert "Demo Coffee Co." in html_content

    # The QR code is an inline PNG referenced by Content-ID, and it encodes the link.
    cid = re.search(r'src="cid:([^"]+)"', html_content)
    assert cid is not None
    [image] = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert image["Content-ID"] == f"<{cid.group(1)}>"
    import zxingcpp
    from PIL import Image

    [decoded] = zxingcpp.read_barcodes(Image.open(io.BytesIO(image.get_content())))
    assert decoded.text == body["url"]

    send = send_row(runtime, body["send"]["ID"])
    assert send.status == "sent"
    assert send.attempts == 1
    assert send.provider_response.startswith("250 ")
    assert send.sent_at is not None

    # The record is visible through the API, by session.
    listed = account.client.get("/v4/sends", params={"couponsession": code}, headers=account.headers).json()
    assert listed["total"] == 1
    [entry] = listed["sends"]
    assert entry["id"] == body["send"]["ID"]
    assert entry["status"] == "sent"
    assert entry["couponsession"] == code
    assert entry["campaign"] == dist_campaign.public_id
    assert entry["recipient"] == "Jane.Doe@example.org"
    assert (entry["origin"], entry["requested_by"]) == ("api", str(account.id))
    assert entry["provider_response"].startswith("250")

    # ... and in the session's own data.
    data = account.call("/v3/couponsession/data", couponsession=code).json()
    assert [s["id"] for s in data["sends"]] == [body["send"]["ID"]]
    assert data["sends"][0]["status"] == "sent"

    # The link leads to the session on the live server.
    path = body["url"].removeprefix(settings.public_base_url)
    page = http.get(path, headers={"Accept": "text/html"}, follow_redirects=True)
    assert page.status_code == 200
    assert "20% off your next coffee" in page.text


def test_check_unique_does_not_send_twice_and_says_so(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    configure_smtp(account, dist_smtp.port)
    first = assert_ok(
        account.call(
            "/v3/send/email", campaign=dist_campaign.public_id, email="once@example.org", check_unique=True
        )
    )
    assert first["action"] == "email_sent"
    # Case differs, still the same address; form-encoded "1" is a boolean too.
    again = assert_ok(
        account.client.post(
            "/v3/send/email",
            data={"campaign": dist_campaign.public_id, "email": "ONCE@example.org", "check_unique": "1"},
            headers=account.headers,
        )
    )
    assert again["action"] == "already_sent"
    assert again["couponsession"] == first["couponsession"]
    assert again["send"]["ID"] == first["send"]["ID"]
    assert "already received" in again["message"]
    # Without check_unique the same address can get the coupon again (a new session).
    other = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="once@example.org")
    )
    assert other["action"] == "email_sent"
    assert other["couponsession"] != first["couponsession"]
    run_jobs(runtime)
    assert len(dist_smtp.handler.to("once@example.org")) == 2
    # Another campaign is another coupon.
    second = make_campaign(runtime, account.id)
    fresh = assert_ok(
        account.call("/v3/send/email", campaign=second.public_id, email="once@example.org", check_unique=True)
    )
    assert fresh["action"] == "email_sent"


def test_check_unique_holds_under_concurrent_requests(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer, live_server: Any
) -> None:
    configure_smtp(account, dist_smtp.port)

    def send(_: int) -> str:
        with httpx2.Client(base_url=live_server.url, timeout=30) as client:
            response = client.post(
                "/v3/send/email",
                json={"campaign": dist_campaign.public_id, "email": "race@example.org", "check_unique": True},
                headers=account.headers,
            )
            return str(assert_ok(response)["action"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        actions = list(pool.map(send, range(16)))
    assert actions.count("email_sent") == 1
    assert actions.count("already_sent") == 15
    with runtime.db.read() as session:
        count = session.scalar(
            select(func.count())
            .select_from(DistributionSend)
            .where(DistributionSend.campaign_id == dist_campaign.id)
        )
        sessions = session.scalar(
            select(func.count())
            .select_from(CouponSession)
            .where(CouponSession.campaign_id == dist_campaign.id)
        )
    assert (count, sessions) == (1, 1)
    run_jobs(runtime)
    assert len(dist_smtp.handler.to("race@example.org")) == 1


def test_reusing_a_session_sends_its_link(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer, settings: Settings
) -> None:
    configure_smtp(account, dist_smtp.port)
    first = assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="a@example.org"))
    code = first["couponsession"]
    again = assert_ok(
        account.call(
            "/v3/send/email",
            campaign=dist_campaign.public_id,
            email="b@example.org",
            couponsession=code[:6],
            firstname="Bea",
        )
    )
    assert again["couponsession"] == code
    with runtime.db.read() as session:
        row = session.scalar(select(CouponSession).where(CouponSession.code == code))
        assert row is not None
        # What the session held is kept; blanks are filled in.
        assert (row.email, row.firstname) == ("a@example.org", "Bea")
    # A third person gets the same link, without someone else's name in the greeting.
    assert_ok(
        account.call(
            "/v3/send/email", campaign=dist_campaign.public_id, email="c@example.org", couponsession=code
        )
    )
    run_jobs(runtime)
    [received] = dist_smtp.handler.to("b@example.org")
    text = received.message.get_body(preferencelist=("plain",))
    assert text is not None
    assert f"{settings.public_base_url}/p/{dist_campaign.code}/{code}" in text.get_content()
    assert text.get_content().startswith("Hi Bea,")
    [third] = dist_smtp.handler.to("c@example.org")
    third_text = third.message.get_body(preferencelist=("plain",))
    assert third_text is not None
    assert third_text.get_content().startswith("Hello,")
    assert code in third_text.get_content()
    # An unknown session, or one of another campaign, is 505.
    other = make_campaign(runtime, account.id)
    assert_error(
        account.call("/v3/send/email", campaign=other.public_id, email="c@example.org", couponsession=code),
        404,
        505,
    )


def test_errors_missing_integration_bad_address_unknown_campaign(
    runtime: Runtime, account: Any, other_account: Any, dist_campaign: CampaignRef
) -> None:
    assert_error(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="x@example.org"), 422, 104
    )
    assert_error(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="not-an-email"), 422, 305
    )
    assert_error(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="a@b@example.org"), 422, 305
    )
    missing = assert_error(account.call("/v3/send/email", email="x@example.org"), 422, 200)
    assert missing["status"]["errors"]["error_message_description"] == ["Missing parameter: campaign"]
    assert_error(account.call("/v3/send/email", campaign="cam_x1", email="x@example.org"), 422, 301)
    unknown = assert_error(
        account.call("/v3/send/email", campaign="cam_999999", email="x@example.org"), 404, 502
    )
    # Another account's campaign answers exactly like a missing one.
    foreign = assert_error(
        other_account.call("/v3/send/email", campaign=dist_campaign.public_id, email="x@example.org"),
        404,
        502,
    )
    assert foreign["status"]["errors"] == {
        **unknown["status"]["errors"],
    }
    # A directory ID is accepted; unknown directories answer 502 as at the vendor.
    directory = assert_error(
        account.call("/v3/send/email", campaign="dir_424242", email="x@example.org"), 404, 502
    )
    assert directory["status"]["errors"]["error_message_description"] == ["Directory ID not found."]
    with runtime.db.read() as session:
        count = session.scalar(
            select(func.count())
            .select_from(DistributionSend)
            .where(DistributionSend.account_id == account.id)
        )
    assert count == 0


def test_server_default_smtp_is_used_when_the_account_has_none(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_host", "127.0.0.1")
    monkeypatch.setattr(settings, "smtp_port", dist_smtp.port)
    monkeypatch.setattr(settings, "smtp_tls", "none")
    monkeypatch.setattr(settings, "smtp_sender_email", "noreply@opencoupon.example")
    view = account.client.get("/v4/integrations/email", headers=account.headers).json()
    assert view == {
        "configured": True,
        "source": "server",
        "sender_email": "noreply@opencoupon.example",
        "sender_name": "OpenCoupon",
    }
    body = assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="d@example.org"))
    run_jobs(runtime)
    [received] = dist_smtp.handler.to("d@example.org")
    assert received.mail_from == "noreply@opencoupon.example"
    assert send_row(runtime, body["send"]["ID"]).status == "sent"


def test_a_subaccount_without_settings_uses_its_masters(
    runtime: Runtime, account: Any, subaccount: Any, dist_smtp: SmtpServer
) -> None:
    configure_smtp(account, dist_smtp.port, sender_email="master@shop.example")
    sub_campaign = make_campaign(runtime, subaccount.id)
    view = subaccount.client.get("/v4/integrations/email", headers=subaccount.headers).json()
    assert view["source"] == "master"
    assert "host" not in view
    assert_ok(subaccount.call("/v3/send/email", campaign=sub_campaign.public_id, email="e@example.org"))
    # The master may send its subaccount's coupon too.
    assert_ok(account.call("/v3/send/email", campaign=sub_campaign.public_id, email="f@example.org"))
    run_jobs(runtime)
    assert dist_smtp.handler.to("e@example.org")[0].mail_from == "master@shop.example"
    assert len(dist_smtp.handler.to("f@example.org")) == 1


def test_integration_settings_keep_the_password_secret(runtime: Runtime, account: Any) -> None:
    saved = configure_smtp(account, 2525, username="mailer", password="s3cret-pass")
    assert saved == {
        "configured": True,
        "source": "account",
        "host": "127.0.0.1",
        "port": 2525,
        "tls": "none",
        "username": "mailer",
        "password_set": True,
        "sender_email": "coupons@shop.example",
        "sender_name": "Demo Coffee",
        "updated_date_utc": saved["updated_date_utc"],
    }
    with runtime.db.read() as session:
        from opencoupon.models import EmailIntegration

        row = session.scalar(select(EmailIntegration).where(EmailIntegration.account_id == account.id))
        assert row is not None
        assert "s3cret-pass" not in row.password_encrypted
        assert runtime.keyring.decrypt(row.password_encrypted) == "s3cret-pass"
    # Omitting the password keeps it, for the same server and login.
    kept = account.client.put(
        "/v4/integrations/email",
        json={"host": "127.0.0.1", "sender_email": "x@shop.example"},
        headers=account.headers,
    ).json()
    assert (kept["port"], kept["password_set"], kept["sender_email"]) == (2525, True, "x@shop.example")
    bad = account.client.put(
        "/v4/integrations/email",
        json={"host": "smtp.example.com", "tls": "ssl", "sender_email": "x@shop.example"},
        headers=account.headers,
    )
    assert_error(bad, 422, 302)
    assert_error(
        account.client.put(
            "/v4/integrations/email",
            json={"host": "smtp.example.com", "sender_email": "nope"},
            headers=account.headers,
        ),
        422,
        305,
    )
    gone = account.client.delete("/v4/integrations/email", headers=account.headers)
    assert gone.json() == {"configured": False, "source": ""}
    spec = account.client.get("/openapi.json").json()
    assert {"get", "put", "delete"} <= set(spec["paths"]["/v4/integrations/email"])


def test_a_put_keeps_the_settings_it_leaves_out_and_clears_those_sent_empty(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef
) -> None:
    """Changing only the sender's name keeps the login (it was dropped while the password was
    kept: the settings looked complete and every email then went out without AUTH)."""
    logins: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)

    handler, port = SmtpHandler(), free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        configure_smtp(account, port, username="mailer", password="pw")
        renamed = account.client.put(
            "/v4/integrations/email",
            json={"host": "127.0.0.1", "sender_email": "coupons@shop.example", "sender_name": "New name"},
            headers=account.headers,
        ).json()
        assert {k: renamed[k] for k in ("port", "tls", "username", "password_set", "sender_name")} == {
            "port": port,
            "tls": "none",
            "username": "mailer",
            "password_set": True,
            "sender_name": "New name",
        }
        assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="k@example.org"))
        run_jobs(runtime)
    finally:
        controller.stop()
    assert logins == [("mailer", "pw")]
    [received] = handler.to("k@example.org")
    assert received.message["From"] == "New name <coupons@shop.example>"

    def put(**fields: Any) -> dict[str, Any]:
        body = {"host": "127.0.0.1", "sender_email": "coupons@shop.example", **fields}
        response = account.client.put("/v4/integrations/email", json=body, headers=account.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    # null is the same as leaving the field out; "" clears it.
    assert put(username=None, sender_name=None)["username"] == "mailer"
    cleared = put(username="", sender_name="", password="")
    assert (cleared["username"], cleared["sender_name"], cleared["password_set"]) == ("", "", False)
    # The port is kept while the TLS mode is; a new mode without a port takes that mode's port.
    assert put(tls="tls")["port"] == 465


def test_the_stored_smtp_password_is_not_kept_for_another_server_or_login(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef
) -> None:
    """Pointing the settings at one's own server without the password, then sending once, read the
    "never shown again" password back (the worker logged in there with it). A PUT that changes
    host, port, tls or username must now give the password again."""
    logins: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)

    handler, port = SmtpHandler(), free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        configure_smtp(
            account, 2525, host="smtp.realprovider.example", username="mailer", password="the-real-S3cret"
        )
        for change in (
            {"host": "127.0.0.1", "port": port},
            {"port": port},
            {"tls": "starttls", "port": 2525},
            {"username": "someone-else"},
            {"username": ""},
        ):
            refused = account.client.put(
                "/v4/integrations/email",
                json={
                    "host": "smtp.realprovider.example",
                    "sender_email": "coupons@shop.example",
                    **change,
                },
                headers=account.headers,
            )
            assert_error(refused, 422, 200)
            assert "password" in refused.json()["status"]["errors"]["error_message_description"][0]
        view = account.client.get("/v4/integrations/email", headers=account.headers).json()
        assert (view["host"], view["port"], view["username"]) == ("smtp.realprovider.example", 2525, "mailer")
        # With the password given again, the new server is the account's to use.
        configure_smtp(account, port, username="mailer", password="own-server-pass")
        assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="y@example.org"))
        run_jobs(runtime)
    finally:
        controller.stop()
    assert ("mailer", "the-real-S3cret") not in logins
    assert logins == [("mailer", "own-server-pass")]
    assert len(handler.to("y@example.org")) == 1


def test_a_host_change_racing_the_owners_password_never_gets_the_password(
    runtime: Runtime, account: Any, live_server: Any, remember_secret: Any
) -> None:
    """The owner saves the password while another client (who cleared it before) points the host
    elsewhere without it, both at once. On PostgreSQL the host change read the row before the
    owner's commit, passed the "give the password again" check and was then written over it: the
    owner's password stored for the other host (130 of 150 trials). Whatever the order, the
    password now stays with the owner's host."""
    password = "owner-Secret-77"
    remember_secret(password)
    common = {"tls": "none", "port": 2525, "sender_email": "coupons@shop.example"}
    owner_put = {"host": "smtp.shop.example", "password": password, **common}
    other_put = {"host": "evil.example", **common}
    configure_smtp(account, 2525, host="smtp.shop.example")
    clients = [httpx2.Client(base_url=live_server.url, timeout=30) for _ in range(2)]
    try:
        for _ in range(40):
            with runtime.db.transaction() as session:
                session.execute(
                    update(EmailIntegration)
                    .where(EmailIntegration.account_id == account.id)
                    .values(host="smtp.shop.example", password_encrypted="")
                )
            owner, other = race(
                2,
                lambda i: clients[i].put(
                    "/v4/integrations/email", json=(owner_put, other_put)[i], headers=account.headers
                ),
            )
            assert owner.status_code == 200, owner.text
            if other.status_code != 200:  # after the owner's PUT: the password must be given
                assert_error(other, 422, 200)
            view = account.client.get("/v4/integrations/email", headers=account.headers).json()
            assert (view["host"], view["password_set"]) == ("smtp.shop.example", True), (view, other.text)
    finally:
        for client in clients:
            client.close()


def test_temporary_smtp_refusals_are_retried_with_backoff_then_succeed(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    clock_offset: Any,
) -> None:
    monkeypatch.setattr(settings, "send_retry_base_seconds", 60.0)
    configure_smtp(account, dist_smtp.port)
    dist_smtp.handler.replies = ["451 4.3.0 Mailbox busy, try later"]
    body = assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="g@example.org"))
    run_jobs(runtime)
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.attempts) == ("retrying", 1)
    assert "451" in send.last_error
    assert send.provider_response.startswith("451")
    assert send.next_attempt_at is not None
    wait = (send.next_attempt_at - send.updated_at).total_seconds()
    assert 50 <= wait <= 70
    run_jobs(runtime)  # not due yet
    assert dist_smtp.handler.data_calls == 1
    clock_offset(dt.timedelta(seconds=75))
    run_jobs(runtime)
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.attempts, send.last_error) == ("sent", 2, "")
    assert len(dist_smtp.handler.to("g@example.org")) == 1


def test_a_failing_smtp_server_is_retried_then_reported(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "send_retry_base_seconds", 0.0)
    monkeypatch.setattr(settings, "send_max_attempts", 3)
    configure_smtp(account, dist_smtp.port)
    dist_smtp.handler.replies = ["421 4.7.0 Too many connections"] * 5
    body = assert_ok(
        account.call(
            "/v3/send/email", campaign=dist_campaign.public_id, email="h@example.org", check_unique=True
        )
    )
    run_jobs(runtime)
    assert dist_smtp.handler.data_calls == 3
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.attempts) == ("failed", 3)
    assert "421" in send.last_error
    assert send.failed_at is not None
    entry = account.client.get(f"/v4/sends/{body['send']['ID']}", headers=account.headers).json()
    assert entry["status"] == "failed"
    assert "421" in entry["last_error"]
    assert entry["attempts"] == 3
    failed = account.client.get("/v4/sends", params={"status": "failed"}, headers=account.headers).json()
    assert [s["id"] for s in failed["sends"]] == [body["send"]["ID"]]
    with runtime.db.read() as session:
        job = session.scalar(select(Job).where(Job.payload == f'{{"send_id": {send.id}}}'))
        assert job is not None
        assert job.status == "done"
    # A send that failed for good does not count as received: check_unique may try again.
    dist_smtp.handler.replies = []
    again = assert_ok(
        account.call(
            "/v3/send/email", campaign=dist_campaign.public_id, email="h@example.org", check_unique=True
        )
    )
    assert again["action"] == "email_sent"
    run_jobs(runtime)
    assert len(dist_smtp.handler.to("h@example.org")) == 1


def test_permanent_smtp_refusal_is_reported_without_retrying(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    configure_smtp(account, dist_smtp.port)
    dist_smtp.handler.replies = ["554 5.7.1 Message rejected as spam"]
    body = assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="i@example.org"))
    run_jobs(runtime)
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.attempts) == ("failed", 1)
    assert send.provider_response == "554 5.7.1 Message rejected as spam"
    assert dist_smtp.handler.data_calls == 1


def test_a_dropped_connection_is_retried_then_reported(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_dropping_smtp: DroppingServer,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "send_retry_base_seconds", 0.0)
    monkeypatch.setattr(settings, "send_max_attempts", 2)
    configure_smtp(account, dist_dropping_smtp.port)
    body = assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="j@example.org"))
    run_jobs(runtime)
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.attempts) == ("failed", 2)
    assert "not reachable" in send.last_error
    assert dist_dropping_smtp.connections == 2


def test_a_silent_smtp_server_never_blocks_the_api(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A server that accepts TCP connections but never greets: the worker times out, the API does not wait.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        monkeypatch.setattr(settings, "smtp_timeout_seconds", 0.5)
        monkeypatch.setattr(settings, "send_retry_base_seconds", 60.0)
        configure_smtp(account, int(silent.getsockname()[1]))
        started = time.monotonic()
        body = assert_ok(
            account.call("/v3/send/email", campaign=dist_campaign.public_id, email="k@example.org")
        )
        assert time.monotonic() - started < 0.5
        worker = threading.Thread(target=run_jobs, args=(runtime,))
        worker.start()
        # While the worker waits on the silent server, the API keeps answering at once.
        started = time.monotonic()
        listed = account.client.get(f"/v4/sends/{body['send']['ID']}", headers=account.headers)
        assert listed.status_code == 200
        assert time.monotonic() - started < 0.5
        worker.join(timeout=10)
        send = send_row(runtime, body["send"]["ID"])
        assert send.status == "retrying"
        assert "timed out" in send.last_error.lower()
        abandon(runtime, body["send"]["ID"])
    finally:
        silent.close()


def test_longest_names_are_stored_whole_within_their_columns(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    """A first and a last name of 100 characters each (the most a session keeps) are accepted and
    stored; the recipient's full name fits its 200-character column (PostgreSQL refuses more)."""
    configure_smtp(account, dist_smtp.port)
    first, last = "F" * 100, "L" * 100
    body = assert_ok(
        account.call(
            "/v3/send/email",
            campaign=dist_campaign.public_id,
            email="long.names@example.org",
            firstname=first + "extra",
            lastname=last + "extra",
        )
    )
    with runtime.db.read() as session:
        send = session.scalar(
            select(DistributionSend).where(DistributionSend.recipient == "long.names@example.org")
        )
        assert send is not None
        assert send.firstname == first
        assert len(send.recipient_name) <= 200
        assert send.recipient_name.startswith(f"{first} L")
        row = session.scalar(select(CouponSession).where(CouponSession.code == body["couponsession"]))
        assert row is not None
        assert (row.firstname, row.lastname) == (first, last)
