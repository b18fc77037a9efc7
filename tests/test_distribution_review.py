"""Distribution faults found in review: header values with line breaks other than CR/LF, malformed
provider URLs and ports, and parallel first PUTs of the settings. Real app, database, worker, SMTP
server (aiosmtpd) and SMS stand-in on loopback."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
from sqlalchemy import func, select, update

from distribution_fixtures import CampaignRef, SmsStandIn, SmtpServer
from helpers import assert_error, assert_ok
from opencoupon.distribution import cli
from opencoupon.models import DistributionSend, EmailIntegration, SmsIntegration
from opencoupon.runtime import Runtime
from test_distribution_email import configure_smtp, run_jobs, send_row
from test_distribution_sms import configure_sms

# Every character str.splitlines breaks at (which Python's email policy refuses in a header), and
# other control and format characters.
BREAKS = ["\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
OTHERS = ["\t", "\x1f", "\x7f", "\u200e"]


def test_subjects_and_names_with_any_line_break_are_sent_on_one_line(
    account: Any, runtime: Runtime, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    configure_smtp(account, dist_smtp.port, sender_name="Demo\u2028Coffee\x0bShop")
    for n, char in enumerate(BREAKS + OTHERS):
        to = f"jane{n}@example.org"
        answer = assert_ok(
            account.call(
                "/v3/send/email",
                campaign=dist_campaign.public_id,
                email=to,
                subject=f"Gift{char}for you",
                firstname=f"Ja{char}ne",
                lastname=f"Do{char}e",
            )
        )
        assert answer["action"] == "email_sent"
        run_jobs(runtime)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.last_error) == ("sent", ""), (repr(char), row.last_error)
        (got,) = dist_smtp.handler.to(to)
        message = got.message
        assert " ".join(str(message["Subject"]).split()) == "Gift for you", repr(char)
        assert " ".join(str(message["To"]).split()).startswith("Ja ne Do e"), message["To"]
        assert "Demo Coffee Shop" in str(message["From"])


def test_a_stored_subject_with_a_line_break_is_folded_by_the_worker(
    account: Any, runtime: Runtime, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    """A send recorded before the API folded every line break still goes out."""
    configure_smtp(account, dist_smtp.port)
    answer = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="sam@example.org")
    )
    number = int(answer["send"]["ID"].removeprefix("snd_"))
    with runtime.db.transaction() as session:
        session.execute(
            update(DistributionSend)
            .where(DistributionSend.id == number)
            .values(subject="Old\u2028subject", recipient_name="Sam\x85Smith")
        )
    run_jobs(runtime)
    assert send_row(runtime, answer["send"]["ID"]).status == "sent"
    (got,) = dist_smtp.handler.to("sam@example.org")
    assert str(got.message["Subject"]) == "Old subject"


def test_bulk_send_folds_a_carriage_return_in_the_subject(
    account: Any, runtime: Runtime, dist_campaign: CampaignRef, dist_smtp: SmtpServer, tmp_path: Path
) -> None:
    configure_smtp(account, dist_smtp.port)
    recipients = tmp_path / "recipients.csv"
    recipients.write_text("email,firstname\njane@example.org,Jane\nsam@example.org,Sam\u2028X\n")
    cli._send(runtime, recipients, dist_campaign.public_id, "Your coupon\rX-Evil: 1", 100.0, False, False)
    run_jobs(runtime)
    with runtime.db.read() as session:
        rows = list(
            session.scalars(select(DistributionSend).where(DistributionSend.campaign_id == dist_campaign.id))
        )
    assert sorted(row.status for row in rows) == ["sent", "sent"], [row.last_error for row in rows]
    assert {row.subject for row in rows} == {"Your coupon X-Evil: 1"}
    for address in ("jane@example.org", "sam@example.org"):
        (got,) = dist_smtp.handler.to(address)
        assert got.message["X-Evil"] is None
        assert str(got.message["Subject"]) == "Your coupon X-Evil: 1"


def test_malformed_provider_urls_hosts_and_ports_are_refused(account: Any, runtime: Runtime) -> None:
    sms = "/v4/integrations/sms"
    for base_url in (
        "http://[::1",
        "https://api.example.com:99999",
        "https://api.example.com:0",
        "https://api.example.com:x",
        "https://[fe80::1%25eth0]",
        "https://a..b",
        "https://-bad-.example.com",
    ):
        body = {"account_sid": "AC1", "auth_token": "t", "base_url": base_url}
        assert_error(account.client.put(sms, json=body, headers=account.headers), 422, 300)
    for host in ("[::1", "::1]", "a..b", "-", "fe80::1%eth0", "[example.com]", "exa mple.com"):
        body = {"host": host, "sender_email": "a@b.com"}
        response = account.client.put("/v4/integrations/email", json=body, headers=account.headers)
        assert_error(response, 422, 300)
    for port in (0, 65536, 99999):
        body = {"host": "smtp.example.com", "port": port, "sender_email": "a@b.com"}
        response = account.client.put("/v4/integrations/email", json=body, headers=account.headers)
        assert_error(response, 422, 300)
    with runtime.db.read() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(SmsIntegration)
                .where(SmsIntegration.account_id == account.id)
            )
            == 0
        )
        assert (
            session.scalar(
                select(func.count())
                .select_from(EmailIntegration)
                .where(EmailIntegration.account_id == account.id)
            )
            == 0
        )
    # Well-formed ones are taken (loopback is allowed in tests).
    for base_url in ("https://api.example.com:65535", "http://[::1]:8080", "https://sms.example.com."):
        body = {"account_sid": "AC1", "auth_token": "t", "base_url": base_url}
        assert account.client.put(sms, json=body, headers=account.headers).status_code == 200, base_url
    for host in ("[::1]", "::1", "smtp.example.com", "127.0.0.1", "mail-1.example.co.uk."):
        body = {"host": host, "port": 2525, "sender_email": "a@b.com"}
        response = account.client.put("/v4/integrations/email", json=body, headers=account.headers)
        assert response.status_code == 200, (host, response.text)


def test_a_stored_bad_sms_url_fails_the_send_at_once(
    account: Any, runtime: Runtime, dist_campaign: CampaignRef, dist_sms: SmsStandIn
) -> None:
    configure_sms(account, dist_sms.url)
    with runtime.db.transaction() as session:
        session.execute(
            update(SmsIntegration)
            .where(SmsIntegration.account_id == account.id)
            .values(base_url="https://api.example.com:99999")
        )
    answer = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+15005550001"))
    run_jobs(runtime)
    row = send_row(runtime, answer["send"]["ID"])
    assert (row.status, row.attempts) == ("failed", 1)
    assert "base_url" in row.last_error


def test_parallel_first_puts_of_the_settings_all_succeed(
    account: Any, runtime: Runtime, live_server: Any
) -> None:
    def put(path: str, body: dict[str, Any]) -> int:
        with httpx2.Client(base_url=live_server.url, timeout=30) as client:
            return client.put(path, json=body, headers=account.headers).status_code

    sms = [
        (
            "/v4/integrations/sms",
            {"account_sid": "AC1", "auth_token": f"t{n}", "base_url": "https://api.example.com"},
        )
        for n in range(8)
    ]
    email = [
        ("/v4/integrations/email", {"host": "smtp.example.com", "port": 2500 + n, "sender_email": "a@b.com"})
        for n in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda call: put(*call), sms)) == [200] * 8
        assert list(pool.map(lambda call: put(*call), email)) == [200] * 8
    with runtime.db.read() as session:
        smtp = session.scalars(
            select(EmailIntegration).where(EmailIntegration.account_id == account.id)
        ).one()
        assert 2500 <= smtp.port < 2508
        assert session.scalars(select(SmsIntegration).where(SmsIntegration.account_id == account.id)).one()
    # A first PUT without the token is still refused, and creates nothing.
    other = {"account_sid": "AC1", "base_url": "https://api.example.com"}
    assert account.client.delete("/v4/integrations/sms", headers=account.headers).status_code == 200
    assert_error(account.client.put("/v4/integrations/sms", json=other, headers=account.headers), 422, 200)
