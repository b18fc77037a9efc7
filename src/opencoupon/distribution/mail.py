"""Coupon emails: composing the message (HTML + text, QR code inline) and handing it to SMTP."""

from __future__ import annotations

import base64
import io
import re
import smtplib
import socket
import ssl
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from opencoupon import branding
from opencoupon.distribution.deadline import Watchdog
from opencoupon.qr import codes as qr_codes

TLS_MODES = ("none", "starttls", "tls")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}
# A whole SMTP attempt (connecting, TLS, login, the message) ends after this many times the
# per-operation timeout, however the server paces its answers.
ATTEMPT_TIMEOUTS = 3
# What smtplib's login() speaks.
_SMTPLIB_AUTH = {"CRAM-MD5", "PLAIN", "LOGIN"}

_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "distribution"
_env = Environment(
    loader=FileSystemLoader(str(_TEMPLATES)),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    keep_trailing_newline=True,
)


def header_text(value: str) -> str:
    """A value for an email header (subject, names): every line break Python's email policy
    refuses (str.splitlines: \\r \\n \\v \\f \\x1c-\\x1e \\x85 \\u2028 \\u2029) and every other
    control or format character folded into a space, ends trimmed. The API, the bulk CLI and the
    worker (for records stored before) all use it, so a subject is never accepted and then refused."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in value).strip()


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to send: an account's integration or the server default."""

    host: str
    port: int
    tls_mode: str
    username: str
    password: str
    sender_email: str
    sender_name: str
    # account / master / server: whose settings these are (shown in the send record).
    source: str


@dataclass(frozen=True)
class Branding:
    logo_url: str = ""
    primary: str = "#1f6feb"
    background: str = "#f4f5f7"
    text: str = "#1b1f24"
    company: str = ""


@dataclass(frozen=True)
class CouponContent:
    title: str
    subtitle: str
    description: str
    image_url: str
    link: str


class SmtpFailure(Exception):
    """The SMTP server refused the message or could not be reached."""

    def __init__(self, message: str, *, transient: bool, response: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.response = response


def parse_branding(branding_json: str, company: str) -> Branding:
    """Account.branding for an email: the same reading as the consumer pages (opencoupon.branding:
    only hex colours and http(s) logo URLs), with the email's defaults for what is not set."""
    brand = branding.read(branding_json, company)
    return Branding(
        logo_url=brand.logo_url,
        primary=brand.primary or Branding.primary,
        background=brand.background or Branding.background,
        text=brand.text or Branding.text,
        company=brand.company,
    )


def qr_png(link: str) -> bytes:
    buffer = io.BytesIO()
    qr_codes.make(link).save(buffer, kind="png", scale=6, border=2)
    return buffer.getvalue()


def compose(
    config: SmtpConfig,
    *,
    to_email: str,
    to_name: str,
    subject: str,
    greeting_name: str,
    content: CouponContent,
    branding: Branding,
    send_ref: str,
) -> EmailMessage:
    """A multipart/alternative message: text, and HTML with the QR code as a related CID image."""
    domain = config.sender_email.rsplit("@", 1)[-1]
    qr_cid = make_msgid(idstring="qr", domain=domain)
    context = {
        "subject": subject,
        "name": greeting_name,
        "coupon": content,
        "brand": branding,
        "qr_cid": qr_cid[1:-1],
    }
    message = EmailMessage()
    message["Subject"] = header_text(subject)
    # Address objects, not formataddr() strings: the email package parses a string again, and a
    # non-ASCII name holding ", Evil <evil@…>" became a second address.
    message["From"] = Address(display_name=header_text(config.sender_name), addr_spec=config.sender_email)
    message["To"] = Address(display_name=header_text(to_name), addr_spec=to_email)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(idstring=send_ref, domain=domain)
    message["X-OpenCoupon-Send"] = send_ref
    message.set_content(_env.get_template("email.txt").render(context))
    message.add_alternative(_env.get_template("email.html").render(context), subtype="html")
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    html_part.add_related(qr_png(content.link), "image", "png", cid=qr_cid, filename="coupon-qr.png")
    return message


def _smtp_error(exc: smtplib.SMTPResponseException) -> SmtpFailure:
    text = (
        exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    )
    answer = f"{exc.smtp_code} {text}"
    # RFC 5321: 4xx is temporary (try again later), 5xx permanent (the same message would be
    # refused again); codes outside both (-1: the server closed) are treated as temporary.
    transient = not 500 <= exc.smtp_code <= 599
    return SmtpFailure(f"SMTP server answered {answer}", transient=transient, response=answer)


class _PinnedConnection(smtplib.SMTP):
    """The connection goes to one of `connect_addresses` (already checked), tried in order until
    one answers, while the host name stays the one TLS verifies: smtplib would otherwise resolve
    the name again itself. The connection is watched by the attempt's watchdog from the moment
    it exists."""

    connect_addresses: tuple[str, ...]
    watchdog: Watchdog

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        last_error: OSError | None = None
        addresses = self.connect_addresses or (host,)
        for index, address in enumerate(addresses):
            # Every try within the attempt's deadline, each with its share of it: a silent first
            # address leaves the others time to be tried.
            if self.watchdog.remaining() <= 0 and last_error is not None:
                break
            connect_timeout = self.watchdog.connect_timeout(timeout, len(addresses) - index)
            try:
                sock = socket.create_connection((address, port), connect_timeout, self.source_address)
            except OSError as exc:
                last_error = exc
                continue
            sock.settimeout(timeout)  # reads and writes: the per-operation timeout
            self.watchdog.watch(sock)
            return sock
        assert last_error is not None
        raise last_error


class _Pinned(smtplib.SMTP):
    """The constructor of both pinned classes: where to connect is set before smtplib's own
    __init__ connects; `smtplib_options` (SMTP_SSL's TLS context) go on to it."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_addresses: Sequence[str],
        timeout: float,
        watchdog: Watchdog,
        **smtplib_options: Any,
    ) -> None:
        self.connect_addresses = tuple(connect_addresses)
        self.watchdog = watchdog
        super().__init__(host, port, timeout=timeout, **smtplib_options)


class _PinnedSMTP(_Pinned, _PinnedConnection):
    """Plain SMTP (STARTTLS is the conversation's) on a pinned connection."""


class _PinnedSMTPSSL(_Pinned, smtplib.SMTP_SSL, _PinnedConnection):
    """Implicit TLS on a pinned connection: SMTP_SSL (after _Pinned's __init__, before
    _PinnedConnection's socket) wraps what _PinnedConnection connects, and checks the certificate
    against the host name with the `context` it is given."""


def deliver(
    config: SmtpConfig,
    message: EmailMessage,
    recipient: str,
    *,
    timeout: float,
    connect_addresses: Sequence[str] = (),
) -> str:
    """Send one message; the server's final answer (e.g. "250 2.0.0 Ok: queued as …").
    `timeout` bounds each network operation, and ATTEMPT_TIMEOUTS times it the whole attempt.
    `connect_addresses`: where to connect for config.host, in the order to try them, as checked
    (distribution.service.smtp_addresses); empty: config.host as smtplib resolves it."""
    limit = timeout * ATTEMPT_TIMEOUTS
    smtp: smtplib.SMTP | None = None
    try:
        with Watchdog(limit) as watchdog:
            try:
                kind: type[_Pinned] = _PinnedSMTP
                tls_options: dict[str, Any] = {}
                if config.tls_mode == "tls":
                    kind, tls_options = _PinnedSMTPSSL, {"context": ssl.create_default_context()}
                smtp = kind(
                    config.host,
                    config.port,
                    connect_addresses=connect_addresses,
                    timeout=timeout,
                    watchdog=watchdog,
                    **tls_options,
                )
                answer = _converse(smtp, config, message, recipient)
            except smtplib.SMTPResponseException as exc:
                raise _smtp_error(exc) from exc
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()))
                raise _smtp_error(smtplib.SMTPResponseException(code, reply)) from exc
            except (smtplib.SMTPException, OSError) as exc:
                if watchdog.fired:
                    raise SmtpFailure(
                        f"SMTP server too slow: the attempt was cut off after {limit:g} s", transient=True
                    ) from exc
                # Connection refused or dropped, timeouts, TLS failures: the server may be back later.
                raise SmtpFailure(f"SMTP server not reachable: {exc!r}", transient=True) from exc
            # The message is accepted (250 to its data): whatever QUIT answers, or if it is never
            # answered, it is sent. (`with smtp:` raised on a QUIT answer other than 221.)
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            return answer
    finally:
        if smtp is not None:
            smtp.close()


def _converse(smtp: smtplib.SMTP, config: SmtpConfig, message: EmailMessage, recipient: str) -> str:
    """EHLO to the answer to the message's data (250): that answer."""
    envelope_from = config.sender_email
    smtp.ehlo()
    if config.tls_mode == "starttls":
        try:
            smtp.starttls(context=ssl.create_default_context())
        except smtplib.SMTPNotSupportedError:
            raise SmtpFailure(
                "the server offers no STARTTLS: check tls in the email settings "
                "(tls for implicit TLS, usually port 465; none for a server without TLS)",
                transient=False,
            ) from None
        smtp.ehlo()
    if config.username:
        _login(smtp, config.username, config.password)
    code, reply = smtp.mail(envelope_from)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, envelope_from)
    code, reply = smtp.rcpt(recipient)
    if code not in (250, 251):
        raise smtplib.SMTPResponseException(code, reply)
    code, reply = smtp.data(message.as_bytes(policy=SMTP))
    # smtplib raises only when DATA itself is refused, not for the answer to the message.
    if code != 250:
        raise smtplib.SMTPResponseException(code, reply)
    return f"{code} {reply.decode(errors='replace')}"


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """Log in; credentials with non-ASCII characters as UTF-8 with AUTH PLAIN (RFC 4616), which
    smtplib cannot send (it encodes them as ASCII). A server offering no AUTH, or no method we
    speak, fails the send for good: the settings are what is wrong."""
    smtp.ehlo_or_helo_if_needed()
    offered = set(smtp.esmtp_features.get("auth", "").upper().split()) if smtp.has_extn("auth") else set()
    if not offered:
        raise SmtpFailure(
            "the server offers no AUTH: check username in the email settings "
            "(leave it empty for a server that takes mail without login)",
            transient=False,
        )
    if (username + password).isascii():
        if not offered & _SMTPLIB_AUTH:
            raise SmtpFailure(
                f"the server offers no AUTH method OpenCoupon speaks (it offers {' '.join(sorted(offered))})",
                transient=False,
            )
        smtp.login(username, password)
        return
    if "PLAIN" not in offered:
        raise SmtpFailure(
            "the server offers no AUTH PLAIN, which a username or password with non-ASCII characters needs",
            transient=False,
        )
    token = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode("ascii")
    code, reply = smtp.docmd("AUTH", "PLAIN " + token)
    if code not in (235, 503):  # 503: already authenticated (smtplib's login takes it too)
        raise smtplib.SMTPAuthenticationError(code, reply)


def address_ok(email: str) -> bool:
    """A plain ASCII address the SMTP envelope accepts as is."""
    if len(email) > 254 or not _EMAIL.match(email):
        return False
    try:
        Address(addr_spec=email)
    except (ValueError, IndexError):
        return False
    return True


_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
