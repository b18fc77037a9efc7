"""SMTP over STARTTLS and implicit TLS with login, against aiosmtpd with a certificate made here
(trusted through SSL_CERT_FILE, as a private CA would be)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import free_port
from distribution_fixtures import CampaignRef, SmtpHandler
from helpers import assert_ok
from opencoupon.config import Settings
from opencoupon.runtime import Runtime
from opencoupon.webhooks import ssrf
from opencoupon.worker.runner import Runner
from test_distribution_email import abandon, configure_smtp, send_row


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class Login:
    """aiosmtpd authenticator accepting one user; remembers what clients sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = data.login.decode(), data.password.decode()
        self.seen.append((user, password))
        return AuthResult(success=(user, password) == ("mailer", "app-pass"), handled=False)


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return context


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[int, SmtpHandler, Login]]:
    handler, login, port = SmtpHandler(), Login(), free_port()
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
    yield port, handler, login
    controller.stop()


def test_starttls_with_login(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    certificate: tuple[Path, Path],
    starttls_server: tuple[int, SmtpHandler, Login],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, handler, login = starttls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    configure_smtp(account, port, tls="starttls", username="mailer", password="app-pass")
    body = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="tls@example.org")
    )
    Runner(runtime).run_until_idle()
    assert login.seen == [("mailer", "app-pass")]
    assert len(handler.to("tls@example.org")) == 1
    assert send_row(runtime, body["send"]["ID"]).status == "sent"


def test_a_bracketed_ipv6_host_is_stored_bare_and_its_certificate_verified(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`[::1]` (the docs allow IPv6 in brackets) is the address ::1: stored bare, connected to, and
    what STARTTLS checks the certificate against (a name "[::1]" matches no certificate)."""
    handler, login, port = SmtpHandler(), Login(), free_port()
    controller = Controller(
        handler,
        hostname="::1",
        port=port,
        tls_context=_server_context(certificate),
        require_starttls=True,
        auth_required=True,
        authenticator=login,
    )
    controller.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    try:
        saved = configure_smtp(
            account, port, host="[::1]", tls="starttls", username="mailer", password="app-pass"
        )
        body = assert_ok(
            account.call("/v3/send/email", campaign=dist_campaign.public_id, email="v6@example.org")
        )
        Runner(runtime).run_until_idle()
    finally:
        controller.stop()
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.last_error) == ("sent", "")
    assert len(handler.to("v6@example.org")) == 1
    assert saved["host"] == "::1"
    assert account.client.get("/v4/integrations/email", headers=account.headers).json()["host"] == "::1"


def test_wrong_smtp_password_is_reported_without_retrying(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    certificate: tuple[Path, Path],
    starttls_server: tuple[int, SmtpHandler, Login],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, handler, _login = starttls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    configure_smtp(account, port, tls="starttls", username="mailer", password="wrong")
    body = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="tls2@example.org")
    )
    Runner(runtime).run_until_idle()
    send = send_row(runtime, body["send"]["ID"])
    assert (send.status, send.attempts) == ("failed", 1)
    assert send.provider_response.startswith("535")
    assert handler.messages == []


def test_an_untrusted_certificate_is_not_accepted(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    starttls_server: tuple[int, SmtpHandler, Login],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    port, _handler, login = starttls_server
    # An empty trust store: the server's certificate cannot be verified.
    empty = tmp_path / "none.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    monkeypatch.setattr(settings, "send_retry_base_seconds", 60.0)
    configure_smtp(account, port, tls="starttls", username="mailer", password="app-pass")
    body = assert_ok(
        account.call("/v3/send/email", campaign=dist_campaign.public_id, email="tls3@example.org")
    )
    Runner(runtime).run_until_idle()
    send = send_row(runtime, body["send"]["ID"])
    assert send.status == "retrying"
    assert "CERTIFICATE_VERIFY_FAILED" in send.last_error
    abandon(runtime, body["send"]["ID"])
    assert login.seen == []


def test_implicit_tls(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler, port = SmtpHandler(), free_port()
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, ssl_context=_server_context(certificate)
    )
    controller.start()
    try:
        configure_smtp(account, port, tls="tls")
        body = assert_ok(
            account.call("/v3/send/email", campaign=dist_campaign.public_id, email="tls4@example.org")
        )
        Runner(runtime).run_until_idle()
        assert len(handler.to("tls4@example.org")) == 1
        assert send_row(runtime, body["send"]["ID"]).status == "sent"
    finally:
        controller.stop()


def test_implicit_tls_on_a_pinned_address_checks_the_certificate_against_the_host_name(
    runtime: Runtime,
    account: Any,
    dist_campaign: CampaignRef,
    certificate: tuple[Path, Path],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker connects to the checked address (127.0.0.1) of the name; SMTP_SSL, built by the
    constructor both pinned SMTP classes share, still verifies the certificate (made for
    127.0.0.1 only) against the name: nothing is sent to a server that cannot prove it is it."""
    handler, port = SmtpHandler(), free_port()
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.setattr(settings, "send_retry_base_seconds", 3600.0)
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, ssl_context=_server_context(certificate)
    )
    controller.start()
    names = {"smtp.tls.example": ["127.0.0.1"]}
    ssrf.set_lookup(lambda host, p: names[host] if host in names else ssrf.system_lookup(host, p))
    try:
        configure_smtp(account, port, tls="tls", host="smtp.tls.example")
        body = assert_ok(
            account.call("/v3/send/email", campaign=dist_campaign.public_id, email="tls5@example.org")
        )
        Runner(runtime).run_until_idle()
    finally:
        ssrf.set_lookup(None)
        controller.stop()
    send = send_row(runtime, body["send"]["ID"])
    abandon(runtime, body["send"]["ID"])
    assert send.status == "retrying"
    assert "CERTIFICATE_VERIFY_FAILED" in send.last_error
    assert "smtp.tls.example" in send.last_error
    assert handler.messages == []
