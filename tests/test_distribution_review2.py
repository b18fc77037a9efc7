"""Distribution faults found in a second review: slow providers holding the worker, QUIT answers
after an accepted message, provider answers the database cannot store, names that smuggled an
address into To/From, non-ASCII SMTP logins, servers without STARTTLS or AUTH, SMS gateways
answering 202, and CLI text that is not UTF-8. Real app, database, worker, SMTP servers (aiosmtpd,
and raw sockets that misbehave) and HTTP stand-ins on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import update

from conftest import free_port
from distribution_fixtures import (
    CampaignRef,
    SmsStandIn,
    SmtpHandler,
    SmtpServer,
    TrickleServer,
    make_campaign,
)
from helpers import assert_ok
from opencoupon.config import Settings
from opencoupon.models import Job
from opencoupon.runtime import Runtime
from opencoupon.worker.runner import Runner
from test_distribution_email import abandon, configure_smtp, run_jobs, send_row
from test_distribution_sms import configure_sms
from test_distribution_smtp_tls import Login, _server_context, certificate  # noqa: F401


def _wait_until(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.05)
    return done()


def _run_jobs_for_at_most(runtime: Runtime, seconds: float) -> float:
    """run_jobs in a thread; how long it took (the test fails if it is still running)."""
    import threading

    started = time.monotonic()
    worker = threading.Thread(target=run_jobs, args=(runtime,), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the attempt was still running after {seconds} s"
    return time.monotonic() - started


# --- 1. slow providers -------------------------------------------------------------------------


def test_a_trickling_smtp_server_is_cut_off_at_the_attempts_deadline(
    runtime: Runtime,
    settings: Settings,
    account: Any,
    dist_campaign: CampaignRef,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A greeting that never ends, one byte at a time (each read well within the timeout): the
    attempt held its worker thread for ever. Now it ends after three timeouts, to be retried."""
    monkeypatch.setattr(settings, "smtp_timeout_seconds", 0.5)
    slow = TrickleServer(b"220-slow\r\n")
    configure_smtp(account, slow.port)
    answer = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="slow@example.org")
    )
    try:
        took = _run_jobs_for_at_most(runtime, 10)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.attempts) == ("retrying", 1), (row.status, row.last_error)
        assert "too slow" in row.last_error
        assert 1.4 < took < 5
    finally:
        slow.close()
        abandon(runtime, answer["send"]["ID"])


def test_one_accounts_slow_smtp_server_does_not_hold_up_another_accounts_send(
    runtime: Runtime,
    settings: Settings,
    account: Any,
    other_account: Any,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight sends to a trickling server took all eight threads of the in-process runner (those
    of `opencoupon serve`), and every other account's email, webhook and push waited behind them;
    stopping the runner hung. One account's sends now hold at most a few threads, and each
    attempt ends at its deadline."""
    monkeypatch.setattr(settings, "smtp_timeout_seconds", 1.5)  # attempts cut after 4.5 s
    slow = TrickleServer(b"220-slow\r\n")
    configure_smtp(account, slow.port)
    configure_smtp(other_account, dist_smtp.port)
    other_campaign = make_campaign(runtime, other_account.id)
    stuck = [
        assert_ok(account.call("/v3/send/email", campaign=dist_campaign.public_id, email=f"s{n}@example.org"))
        for n in range(8)
    ]
    victim = assert_ok(
        other_account.call("/v3/send/email", campaign=other_campaign.public_id, email="v@example.org")
    )
    runner = Runner(runtime, concurrency=8)
    thread = runner.start_thread()
    try:
        sent = _wait_until(lambda: send_row(runtime, victim["send"]["ID"]).status == "sent", 3.0)
        assert sent, "another account's email waited behind the slow server"
        assert len(dist_smtp.handler.to("v@example.org")) == 1
    finally:
        stopping = time.monotonic()
        runner.stop()
        thread.join(20)
        stopped_in = time.monotonic() - stopping
        slow.close()
        for answer in [*stuck, victim]:
            abandon(runtime, answer["send"]["ID"])
    assert not thread.is_alive()
    assert stopped_in < 8, "the runner's shutdown waited on the slow server"
    assert slow.connections <= 4, "one account held more than its share of the worker threads"


def test_an_sms_gateway_that_never_finishes_its_headers_is_cut_off(
    runtime: Runtime,
    settings: Settings,
    account: Any,
    dist_campaign: CampaignRef,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "sms_timeout_seconds", 1.0)
    slow = TrickleServer(b"X-Slow: 1\r\n", opening=b"HTTP/1.1 201 Created\r\n", pause=0.05)
    configure_sms(account, slow.url)
    answer = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+447911123456"))
    try:
        took = _run_jobs_for_at_most(runtime, 10)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.attempts) == ("retrying", 1), (row.status, row.last_error)
        assert "too slow" in row.last_error
        assert took < 4
    finally:
        slow.close()
        abandon(runtime, answer["send"]["ID"])


def test_an_sms_accepted_with_a_never_ending_body_is_recorded_sent_not_sent_again(
    runtime: Runtime,
    settings: Settings,
    account: Any,
    dist_campaign: CampaignRef,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`response.text` read a trickled body for ever. The answer is read up to the deadline (and a
    size cap): the status already said the message was taken, so it is recorded sent."""
    monkeypatch.setattr(settings, "sms_timeout_seconds", 1.0)
    head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    slow = TrickleServer(b"x", opening=head + b'{"sid": "SM77", "pad": "', pause=0.05)
    configure_sms(account, slow.url)
    answer = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+447911123456"))
    try:
        took = _run_jobs_for_at_most(runtime, 10)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.attempts) == ("sent", 1), (row.status, row.last_error)
        assert row.provider_response.startswith('HTTP 201 {"sid": "SM77", "pad": "x')
        assert took < 4
        assert slow.connections == 1
    finally:
        slow.close()
        abandon(runtime, answer["send"]["ID"])


# --- 2. QUIT after an accepted message ---------------------------------------------------------


class QuitHandler(SmtpHandler):
    quit_reply: str = "221 Bye"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0)
        return self.quit_reply


@pytest.fixture
def quit_smtp() -> Iterator[tuple[int, QuitHandler]]:
    handler, port = QuitHandler(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


@pytest.mark.parametrize("reply", ["500 5.5.1 QUIT not understood", "250 2.0.0 Bye", "421 4.4.2 closing"])
def test_an_accepted_message_is_sent_once_whatever_quit_answers(
    account: Any, runtime: Runtime, dist_campaign: CampaignRef, quit_smtp: tuple[int, QuitHandler], reply: str
) -> None:
    """smtplib's `with` raised on a QUIT answer other than 221 after DATA was answered 250: the
    message was recorded failed (500) or retried and sent again (421)."""
    port, handler = quit_smtp
    handler.quit_reply = reply
    configure_smtp(account, port)
    answer = assert_ok(
        account.call(
            "/v3/send/email", campaign=dist_campaign.public_id, email="jane@example.org", check_unique=True
        )
    )
    try:
        run_jobs(runtime)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.last_error) == ("sent", ""), (row.status, row.last_error)
        assert row.provider_response.startswith("250 2.0.0 Ok: queued")
        with runtime.db.transaction() as session:  # any retry comes due
            session.execute(update(Job).where(Job.status == "queued").values(run_at=Job.created_at))
        run_jobs(runtime)
        assert len(handler.to("jane@example.org")) == 1
    finally:
        abandon(runtime, answer["send"]["ID"])


# --- 3. provider answers the database cannot store ---------------------------------------------


def test_an_accepted_sms_whose_answer_holds_a_nul_is_recorded_sent_once(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: SmsStandIn
) -> None:
    """PostgreSQL refuses NUL in text: recording the sid raised, the job was retried (the SMS sent
    again, up to eight times), then dead with the send `sending` for good."""
    configure_sms(account, dist_sms.url)
    dist_sms.responses = [(201, {"sid": "SM1\u0000", "status": "queued", "note": "\ud800"})] * 3
    answer = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+447911123456"))
    try:
        run_jobs(runtime)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.provider_message_id) == ("sent", "SM1"), (row.status, row.last_error)
        assert "\x00" not in row.provider_response
        assert len(dist_sms.requests) == 1
    finally:
        abandon(runtime, answer["send"]["ID"])


def test_a_refusal_whose_message_holds_a_nul_is_recorded_failed(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: SmsStandIn
) -> None:
    configure_sms(account, dist_sms.url)
    dist_sms.responses = [(400, {"code": 21211, "message": "Invalid\u0000 'To' number"})]
    answer = assert_ok(account.call("/v3/send/sms", campaign=dist_campaign.public_id, phone="+447911123456"))
    try:
        run_jobs(runtime)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.attempts) == ("failed", 1), (row.status, row.last_error)
        assert row.last_error == "SMS provider answered 400: Invalid 'To' number (code 21211)"
    finally:
        abandon(runtime, answer["send"]["ID"])


class NulReplyHandler(SmtpHandler):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await super().handle_DATA(server, session, envelope)
        return "250 2.0.0 Ok: queued as \x00NUL"


def test_an_smtp_answer_holding_a_nul_is_stored_without_it(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef
) -> None:
    handler, port = NulReplyHandler(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    configure_smtp(account, port)
    answer = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="nul@example.org")
    )
    try:
        run_jobs(runtime)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.provider_response) == ("sent", "250 2.0.0 Ok: queued as NUL"), row.last_error
        assert len(handler.to("nul@example.org")) == 1
    finally:
        controller.stop()
        abandon(runtime, answer["send"]["ID"])


# --- 4. names that hold an address -------------------------------------------------------------


def test_a_name_with_an_address_in_it_stays_a_name_in_the_to_header(
    account: Any, runtime: Runtime, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    """formataddr() made "=?utf-8?…?=, Evil <evil@attacker.example> <jane@…>" of a non-ASCII
    name, which the email package read back as two addresses."""
    configure_smtp(account, dist_smtp.port)
    answer = assert_ok(
        account.call(
            "/v3/send/email",
            campaign=dist_campaign.public_id,
            email="jane@example.org",
            firstname="é, Evil <evil@attacker.example>",
        )
    )
    run_jobs(runtime)
    assert send_row(runtime, answer["send"]["ID"]).status == "sent"
    (got,) = dist_smtp.handler.to("jane@example.org")
    (to,) = got.message["To"].addresses
    assert (to.addr_spec, to.display_name) == ("jane@example.org", "é, Evil <evil@attacker.example>")


def test_a_sender_name_with_an_address_in_it_stays_a_name_in_the_from_header(
    account: Any, runtime: Runtime, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    configure_smtp(account, dist_smtp.port, sender_name="Bänk, Support <support@bank.example>")
    answer = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="sam@example.org")
    )
    run_jobs(runtime)
    assert send_row(runtime, answer["send"]["ID"]).status == "sent"
    (got,) = dist_smtp.handler.to("sam@example.org")
    (sender,) = got.message["From"].addresses
    assert (sender.addr_spec, sender.display_name) == (
        "coupons@shop.example",
        "Bänk, Support <support@bank.example>",
    )


# --- 5. and 6. logins -------------------------------------------------------------------------


class AcceptsOne(Login):
    def __init__(self, user: str, password: str) -> None:
        super().__init__()
        self.expected = (user, password)

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        seen = (data.login.decode(), data.password.decode())
        self.seen.append(seen)
        return AuthResult(success=seen == self.expected, handled=False)


def test_a_non_ascii_smtp_login_is_sent_as_utf8(
    account: Any,
    runtime: Runtime,
    dist_campaign: CampaignRef,
    certificate: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """smtplib encodes credentials as ASCII: such a login never worked, and the send failed as
    "internal error" with a traceback in the log."""
    handler, login, port = SmtpHandler(), AcceptsOne("mäiler", "pässwört"), free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=_server_context(certificate),
        require_starttls=True,
        auth_required=True,
        authenticator=login,
    )
    controller.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    configure_smtp(account, port, tls="starttls", username="mäiler", password="pässwört")
    answer = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="u@example.org")
    )
    try:
        run_jobs(runtime)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.last_error) == ("sent", ""), (row.status, row.last_error)
        assert login.seen == [("mäiler", "pässwört")]
        assert len(handler.to("u@example.org")) == 1
    finally:
        controller.stop()
        abandon(runtime, answer["send"]["ID"])


@pytest.mark.parametrize(
    ("settings_change", "expected"),
    [
        ({"tls": "starttls"}, "the server offers no STARTTLS: check tls"),
        ({"username": "mailer", "password": "x"}, "the server offers no AUTH: check username"),
    ],
)
def test_a_server_without_starttls_or_auth_fails_at_once_with_a_clear_reason(
    account: Any,
    runtime: Runtime,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings_change: dict[str, str],
    expected: str,
) -> None:
    """Both were retried for hours as "SMTP server not reachable"; the settings are what is wrong."""
    configure_smtp(account, dist_smtp.port, **settings_change)
    answer = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="n@example.org")
    )
    try:
        run_jobs(runtime)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.attempts) == ("failed", 1), (row.status, row.last_error)
        assert expected in row.last_error
        assert dist_smtp.handler.messages == []
    finally:
        abandon(runtime, answer["send"]["ID"])


# --- 7. 202 Accepted ---------------------------------------------------------------------------


def test_a_gateway_answering_202_accepted_is_recorded_sent(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_sms: SmsStandIn
) -> None:
    """Only 200 and 201 counted: a 202 was recorded failed, and check_unique sent it again."""
    configure_sms(account, dist_sms.url)
    dist_sms.responses = [(202, {"sid": "SM202", "status": "accepted"})]
    call = {"campaign": dist_campaign.public_id, "phone": "+447911123456", "check_unique": True}
    answer = assert_ok(account.call("/v3/send/sms", **call))
    try:
        run_jobs(runtime)
        row = send_row(runtime, answer["send"]["ID"])
        assert (row.status, row.provider_message_id) == ("sent", "SM202"), (row.status, row.last_error)
        assert row.provider_response.startswith("HTTP 202")
        again = assert_ok(account.call("/v3/send/sms", **call))
        assert again["action"] == "already_sent"
        assert len(dist_sms.requests) == 1
    finally:
        abandon(runtime, answer["send"]["ID"])


# --- 8. CLI text that is not UTF-8 -------------------------------------------------------------


@pytest.mark.parametrize("option", ["--subject", "--campaign"])
def test_cli_text_that_is_not_utf8_is_a_one_line_error(
    option: str,
    account: Any,
    runtime: Runtime,
    dist_campaign: CampaignRef,
    dist_smtp: SmtpServer,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--subject $'\\xff'` arrives as a lone surrogate (Python's surrogateescape): it ended in a
    long traceback."""
    from typer.testing import CliRunner

    from opencoupon.cli.main import app
    from opencoupon.config import get_settings
    from test_distribution_bulk import cli_env, write_csv

    configure_smtp(account, dist_smtp.port)
    for name, value in cli_env(settings, tmp_path).items():
        if name.startswith("OPENCOUPON_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        recipients = write_csv(tmp_path / "r.csv", ["x@example.org"])
        values = {"--campaign": dist_campaign.public_id, "--subject": "Gift"}
        values[option] = "Caf\udce9"  # "Café" in Latin-1, read as UTF-8
        args = ["send", "email", str(recipients), *(part for pair in values.items() for part in pair)]
        result = CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert f"Invalid value for '{option}'" in result.stderr
    assert "not UTF-8" in result.stderr
    assert dist_smtp.handler.messages == []


def test_worker_once_sends_every_due_send_of_one_account(
    runtime: Runtime, account: Any, dist_campaign: CampaignRef, dist_smtp: SmtpServer
) -> None:
    """`opencoupon worker --once` (16 threads, run_until_idle) ends when nothing is due: the sends
    over the account's share of 4 were put back for a moment and left for the next run, so a
    cron-driven worker sent four of an account's emails a run."""
    configure_smtp(account, dist_smtp.port)
    campaign = dist_campaign.public_id
    answers = [
        assert_ok(account.call("/v3/send/email", campaign=campaign, email=f"once{n}@example.org"))
        for n in range(16)
    ]
    Runner(runtime, concurrency=16).run_until_idle()
    statuses = [send_row(runtime, answer["send"]["ID"]).status for answer in answers]
    assert statuses == ["sent"] * 16
