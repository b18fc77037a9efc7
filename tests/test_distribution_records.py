"""Send records: visible per session, tenant-scoped, safe to retry with Idempotency-Key; the
migration creates exactly the tables the models describe."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from conftest import free_port
from distribution_fixtures import CampaignRef, SmtpHandler, SmtpServer
from helpers import assert_error, assert_ok
from opencoupon.db.base import Base
from opencoupon.distribution import service
from opencoupon.distribution.mail import SmtpConfig, deliver
from opencoupon.distribution.service import sends_for_session
from opencoupon.distribution.sms import make_provider
from opencoupon.models import CouponSession, DistributionSend
from opencoupon.runtime import Runtime
from opencoupon.webhooks import ssrf
from opencoupon.worker.runner import Runner
from test_distribution_bulk import OPENCOUPON, cli_env
from test_distribution_email import configure_smtp

DISTRIBUTION_TABLES = {"email_integrations", "sms_integrations", "distribution_sends"}


def test_migration_matches_the_models(runtime: Runtime) -> None:
    with runtime.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)

    mine = [entry for entry in diff if any(table in repr(entry) for table in DISTRIBUTION_TABLES)]
    assert mine == []


def test_session_data_lists_its_sends(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    configure_smtp(account, dist_smtp.port)
    first = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="s1@example.org")
    )
    assert_ok(
        account.call(
            "/v3/send/email",
            campaign=dist_campaign.public_id,
            email="s2@example.org",
            couponsession=first["couponsession"],
        )
    )
    Runner(runtime).run_until_idle()
    with runtime.db.read() as session:
        row = session.scalar(select(CouponSession).where(CouponSession.code == first["couponsession"]))
        assert row is not None
        sends = sends_for_session(session, row.id)
    assert [(s["recipient"], s["status"], s["couponsession"]) for s in sends] == [
        ("s1@example.org", "sent", first["couponsession"]),
        ("s2@example.org", "sent", first["couponsession"]),
    ]
    assert all(s["sent_date_utc"] and s["provider_response"].startswith("250") for s in sends)


def test_sends_are_visible_only_to_their_account(
    account: Any, other_account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    configure_smtp(account, dist_smtp.port)
    body = assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="t@example.org"))
    send_id = body["send"]["ID"]
    mine = account.client.get(f"/v4/sends/{send_id}", headers=account.headers)
    assert mine.status_code == 200
    theirs = other_account.client.get(f"/v4/sends/{send_id}", headers=other_account.headers)
    unknown = other_account.client.get("/v4/sends/snd_999999999", headers=other_account.headers)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    assert other_account.client.get("/v4/sends", headers=other_account.headers).json()["total"] == 0
    assert_error(
        other_account.client.get(
            "/v4/sends", params={"couponsession": body["couponsession"]}, headers=other_account.headers
        ),
        404,
        505,
    )
    by_campaign = account.client.get(
        "/v4/sends", params={"campaign": dist_campaign.public_id, "channel": "email"}, headers=account.headers
    ).json()
    assert [s["id"] for s in by_campaign["sends"]] == [send_id]


def test_a_retried_request_with_an_idempotency_key_sends_once(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    configure_smtp(account, dist_smtp.port)
    headers = {**account.headers, "Idempotency-Key": "send-u-1"}
    params = {"campaign": dist_campaign.public_id, "email": "u@example.org"}
    first = account.client.post("/v3/send/email", json=params, headers=headers)
    again = account.client.post("/v3/send/email", json=params, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    Runner(runtime).run_until_idle()
    assert len(dist_smtp.handler.to("u@example.org")) == 1
    with runtime.db.read() as session:
        count = session.scalar(
            select(func.count())
            .select_from(DistributionSend)
            .where(DistributionSend.recipient == "u@example.org")
        )
    assert count == 1


def test_a_coupon_deleted_before_delivery_is_not_sent(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    from opencoupon.kit.clock import utcnow
    from opencoupon.models import Campaign

    configure_smtp(account, dist_smtp.port)
    body = assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="v@example.org"))
    with runtime.db.transaction() as session:
        row = session.get(Campaign, dist_campaign.id)
        assert row is not None
        row.deleted_at = utcnow()
    Runner(runtime).run_until_idle()
    assert dist_smtp.handler.messages == []
    entry = account.client.get(f"/v4/sends/{body['send']['ID']}", headers=account.headers).json()
    assert entry["status"] == "failed"
    assert "deleted" in entry["last_error"]


def test_a_directory_is_sent_as_its_link(
    runtime: Runtime, account: Any, dist_smtp: SmtpServer, settings: Any
) -> None:
    from opencoupon import models
    from opencoupon.kit.clock import utcnow

    directory_model: Any = getattr(models, "Directory", None)
    if directory_model is None:
        pytest.skip("directories are not part of this build")
    now = utcnow()
    with runtime.db.transaction() as session:
        directory = directory_model(
            account_id=account.id,
            code="dirx" + str(account.id)[-4:],
            name="City deals",
            description="Every coupon in town.",
            access="public",
            payment_url="",
            created_at=now,
            updated_at=now,
        )
        session.add(directory)
        session.flush()
        public_id, code = f"dir_{directory.id}", directory.code
    configure_smtp(account, dist_smtp.port)
    body = assert_ok(
        account.call("/v3/send/email", campaign=public_id, email="w@example.org", check_unique=True)
    )
    assert (body["action"], body["couponsession"]) == ("email_sent", "")
    assert body["url"] == f"{settings.public_base_url}/d/{code}"
    again = assert_ok(
        account.call("/v3/send/email", campaign=public_id, email="w@example.org", check_unique=True)
    )
    assert again["action"] == "already_sent"
    Runner(runtime).run_until_idle()
    [received] = dist_smtp.handler.to("w@example.org")
    text = received.message.get_body(preferencelist=("plain",))
    assert text is not None
    assert body["url"] in text.get_content()
    assert "City deals" in text.get_content()


class HoldingHandler(SmtpHandler):
    """Holds the first message's DATA until released, then refuses it (the sender is gone)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_calls == 0:
            self.data_calls += 1
            await asyncio.to_thread(self.release.wait, 60)
            return "451 4.4.2 Connection lost"
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.slow
def test_a_send_left_sending_by_a_killed_worker_is_resumed_after_a_pause(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    settings: Any,
    tmp_path: Path,
    clock_offset: Any,
) -> None:
    handler = HoldingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        configure_smtp(account, port)
        body = assert_ok(
            account.call("/v3/send/email", campaign=dist_campaign.public_id, email="x1@example.org")
        )
        worker = subprocess.Popen(
            [OPENCOUPON, "worker"],
            env=cli_env(settings, tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while handler.data_calls == 0:
                assert worker.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.02)
            # The worker is in the middle of handing the message over: kill it there.
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
        handler.release.set()
        entry = account.client.get(f"/v4/sends/{body['send']['ID']}", headers=account.headers).json()
        assert (entry["status"], entry["attempts"]) == ("sending", 1)
        # Once its lease has run out the job is claimed again, but a send marked `sending` so
        # recently may still be on its way: it waits rather than risk a duplicate.
        clock_offset(dt.timedelta(minutes=2))
        Runner(runtime).run_until_idle()
        assert handler.messages == []
        clock_offset(dt.timedelta(minutes=8))
        Runner(runtime).run_until_idle()
        assert len(handler.to("x1@example.org")) == 1
        entry = account.client.get(f"/v4/sends/{body['send']['ID']}", headers=account.headers).json()
        assert (entry["status"], entry["attempts"]) == ("sent", 2)
    finally:
        controller.stop()


def test_tenants_cannot_point_the_server_at_private_addresses(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Set while allowed (as in development), then the server runs with the protection on.
    configure_smtp(account, dist_smtp.port)
    monkeypatch.setattr(settings, "allow_private_webhooks", False)
    for host in ("127.0.0.1", "10.1.2.3", "localhost", "[::1]"):
        refused = account.client.put(
            "/v4/integrations/email",
            json={"host": host, "sender_email": "a@shop.example"},
            headers=account.headers,
        )
        assert_error(refused, 422, 300)
    assert_error(
        account.client.put(
            "/v4/integrations/sms",
            json={"account_sid": "AC1", "auth_token": "t", "base_url": "http://192.168.1.20:8080"},
            headers=account.headers,
        ),
        422,
        300,
    )
    body = assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="y@example.org"))
    Runner(runtime).run_until_idle()
    assert dist_smtp.handler.messages == []
    entry = account.client.get(f"/v4/sends/{body['send']['ID']}", headers=account.headers).json()
    assert entry["status"] == "failed"
    assert "private or loopback" in entry["last_error"]


def test_private_literals_in_any_form_are_refused_at_registration(
    account: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook rules (webhooks.ssrf) apply: NAT64 and 6to4 forms of private addresses, the
    decimal form of 127.0.0.1, not only what ipaddress calls non-global."""
    monkeypatch.setattr(settings, "allow_private_webhooks", False)
    for host in ("64:ff9b::a9fe:a9fe", "2002:7f00:1::", "2130706433", "0x7f.1", "Localhost"):
        refused = account.client.put(
            "/v4/integrations/email",
            json={"host": host, "sender_email": "a@shop.example"},
            headers=account.headers,
        )
        assert_error(refused, 422, 300)
        bracketed = f"[{host}]" if ":" in host else host
        refused = account.client.put(
            "/v4/integrations/sms",
            json={"account_sid": "AC1", "auth_token": "t", "base_url": f"https://{bracketed}"},
            headers=account.headers,
        )
        assert_error(refused, 422, 300)


def test_sms_settings_need_https_outside_development(
    account: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The auth token goes with every message: plain HTTP only where private targets are allowed
    (development and tests, for a gateway on the same machine)."""
    monkeypatch.setattr(settings, "allow_private_webhooks", False)
    refused = account.client.put(
        "/v4/integrations/sms",
        json={"account_sid": "AC1", "auth_token": "t", "base_url": f"http://{PUBLIC_ADDRESS}"},
        headers=account.headers,
    )
    body = assert_error(refused, 422, 300)
    assert "https" in body["status"]["errors"]["error_message_description"][0]
    saved = account.client.put(
        "/v4/integrations/sms",
        json={"account_sid": "AC1", "auth_token": "t", "base_url": f"https://{PUBLIC_ADDRESS}"},
        headers=account.headers,
    )
    assert saved.status_code == 200, saved.text


PUBLIC_ADDRESS = "93.184.216.34"


def _rebinding_resolver(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """`name` resolves to a public address once, then to 127.0.0.1 (a DNS rebinding attack);
    returns the list of answers given."""
    answers: list[str] = []
    system = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return system(host, port, *args, **kwargs)
        address = PUBLIC_ADDRESS if not answers else "127.0.0.1"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_dns_rebinding_cannot_reach_a_private_smtp_server_or_sms_gateway(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    dist_sms: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker connects to the address it checked, never to what a second lookup answers."""
    sms_port = int(dist_sms.url.rsplit(":", 1)[1])
    configure_smtp(account, dist_smtp.port, host="rebind.example")
    response = account.client.put(
        "/v4/integrations/sms",
        json={
            "account_sid": "AC1",
            "auth_token": "t",
            "sender": "+15005550006",
            "base_url": f"http://rebind.example:{sms_port}",
        },
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    monkeypatch.setattr(settings, "allow_private_webhooks", False)
    # The public address does not answer here: keep the attempts short, and retry much later.
    monkeypatch.setattr(settings, "smtp_timeout_seconds", 0.5)
    monkeypatch.setattr(settings, "sms_timeout_seconds", 0.5)
    monkeypatch.setattr(settings, "send_retry_base_seconds", 3600.0)
    answers = _rebinding_resolver(monkeypatch, "rebind.example")
    email = assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email="r@example.org"))
    Runner(runtime).run_until_idle()
    assert answers[:1] == [PUBLIC_ADDRESS]
    answers.clear()
    sms = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567"))
    Runner(runtime).run_until_idle()
    assert answers[:1] == [PUBLIC_ADDRESS]
    assert dist_smtp.handler.messages == []
    assert dist_sms.requests == []
    for send in (email, sms):
        entry = account.client.get(f"/v4/sends/{send['send']['ID']}", headers=account.headers).json()
        assert entry["status"] == "retrying", entry


DUAL_STACK_ANSWER = ["2603:1026:c06:142d::2", "52.96.165.18", "40.99.10.34"]


def test_a_providers_addresses_keep_the_resolvers_order_all_checked(
    runtime: Runtime, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """getaddrinfo's order (RFC 6724: IPv4 first on a host without IPv6) is the order the worker
    tries; sorting the addresses as text put a dual-stack provider's IPv6 address first, the only
    one tried, unreachable from an IPv4-only server."""
    system = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "smtp.dual.example":
            order = DUAL_STACK_ANSWER[1:] + DUAL_STACK_ANSWER[:1]
        elif host == "smtp.mixed.example":
            order = ["52.96.165.18", "10.1.2.3"]
        else:
            return system(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in order + order  # one entry per address family/protocol: each address once
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(settings, "allow_private_webhooks", False)
    expected = ["52.96.165.18", "40.99.10.34", "2603:1026:c06:142d::2"]
    assert ssrf.lookup("smtp.dual.example", 587) == expected
    assert service.connect_addresses(runtime, "smtp.dual.example", 587) == expected
    with pytest.raises(service.PrivateTarget):
        service.connect_addresses(runtime, "smtp.mixed.example", 587)


def test_the_worker_tries_each_address_of_the_smtp_host_and_sms_gateway_in_turn(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: Any
) -> None:
    """The first address a name resolves to refuses the connection, the next one answers: the email
    and the SMS go out through the next one, at the first attempt."""
    handler = SmtpHandler()
    smtp_port = free_port()
    # The working SMTP server is on the name's second address; nothing listens on its first.
    controller = Controller(handler, hostname="127.0.0.2", port=smtp_port)
    controller.start()
    sms_port = int(dist_sms.url.rsplit(":", 1)[1])
    names = {"smtp.dual.example": ["127.0.0.1", "127.0.0.2"], "sms.dual.example": ["127.0.0.3", "127.0.0.1"]}
    ssrf.set_lookup(lambda host, port: names[host] if host in names else ssrf.system_lookup(host, port))
    try:
        configure_smtp(account, smtp_port, host="smtp.dual.example")
        saved = account.client.put(
            "/v4/integrations/sms",
            json={
                "account_sid": "AC1",
                "auth_token": "t",
                "sender": "+15005550006",
                "base_url": f"http://sms.dual.example:{sms_port}",
            },
            headers=account.headers,
        )
        assert saved.status_code == 200, saved.text
        email = assert_ok(
            account.call("/v3/send/email", campaign=dist_campaign.public_id, email="d@example.org")
        )
        sms = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567"))
        Runner(runtime).run_until_idle()
    finally:
        ssrf.set_lookup(None)
        controller.stop()
    for send in (email, sms):
        entry = account.client.get(f"/v4/sends/{send['send']['ID']}", headers=account.headers).json()
        assert (entry["status"], entry["attempts"]) == ("sent", 1), entry
    assert [m.rcpt_tos for m in handler.messages] == [["d@example.org"]]
    assert [r.host for r in dist_sms.requests] == [f"sms.dual.example:{sms_port}"]


@contextmanager
def silent_address(address: str, port: int) -> Iterator[None]:
    """`address:port` neither takes nor refuses a connection (as behind a firewall that drops
    packets): a listener whose backlog is full, so the system drops new connection attempts."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind((address, port))
        listener.listen(0)
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((address, port))
            fillers.append(filler)
        time.sleep(0.2)
        with pytest.raises(TimeoutError):
            socket.create_connection((address, port), 0.5).close()
        yield
    finally:
        for sock in (*fillers, listener):
            sock.close()


def test_an_sms_gateway_whose_first_address_is_silent_is_reached_at_the_next(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    dist_sms: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway's first address never answers: its connect took the whole attempt's deadline,
    so the next address was never tried, and every retry did the same until the send failed. Each
    address now connects within its share of the deadline (as SMTP does), and the SMS goes out
    through the next address at the first attempt."""
    monkeypatch.setattr(settings, "sms_timeout_seconds", 2.0)
    monkeypatch.setattr(settings, "send_retry_base_seconds", 3600.0)
    sms_port = int(dist_sms.url.rsplit(":", 1)[1])
    names = {"sms.dual.example": ["127.0.0.3", "127.0.0.1"]}
    ssrf.set_lookup(lambda host, port: names[host] if host in names else ssrf.system_lookup(host, port))
    try:
        with silent_address("127.0.0.3", sms_port):
            saved = account.client.put(
                "/v4/integrations/sms",
                json={
                    "account_sid": "AC1",
                    "auth_token": "t",
                    "sender": "+15005550006",
                    "base_url": f"http://sms.dual.example:{sms_port}",
                },
                headers=account.headers,
            )
            assert saved.status_code == 200, saved.text
            sms = assert_ok(
                account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15551234567")
            )
            Runner(runtime).run_until_idle()
    finally:
        ssrf.set_lookup(None)
    entry = account.client.get(f"/v4/sends/{sms['send']['ID']}", headers=account.headers).json()
    assert (entry["status"], entry["attempts"]) == ("sent", 1), entry
    assert [r.host for r in dist_sms.requests] == [f"sms.dual.example:{sms_port}"]


def test_a_pinned_connection_keeps_the_host_name(dist_smtp: SmtpServer, dist_sms: Any) -> None:
    """Connected to the checked address, the server still sees (and TLS would verify) the name."""
    config = SmtpConfig(
        host="smtp.shop.example",
        port=dist_smtp.port,
        tls_mode="none",
        username="",
        password="",
        sender_email="coupons@shop.example",
        sender_name="Shop",
        source="account",
    )
    message = EmailMessage()
    message["Subject"] = "Pinned"
    message.set_content("hello")
    answer = deliver(config, message, "p@example.org", timeout=5, connect_addresses=["127.0.0.1"])
    assert answer.startswith("250")
    assert [m.rcpt_tos for m in dist_smtp.handler.messages] == [["p@example.org"]]
    sms_port = dist_sms.url.rsplit(":", 1)[1]
    provider = make_provider(
        "twilio",
        f"http://sms.shop.example:{sms_port}",
        "AC1",
        "t",
        timeout=5,
        connect_addresses=["127.0.0.1"],
    )
    provider.send("+15551234567", "Shop", "hello")
    assert [r.path for r in dist_sms.requests] == ["/2010-04-01/Accounts/AC1/Messages.json"]
    assert [r.host for r in dist_sms.requests] == [f"sms.shop.example:{sms_port}"]


def test_a_sends_page_number_too_large_for_the_database_is_refused_not_a_500(account: Any) -> None:
    answer = account.client.get("/v4/sends", params={"page": "99999999999999999999"}, headers=account.headers)
    assert_error(answer, 422, 300)
