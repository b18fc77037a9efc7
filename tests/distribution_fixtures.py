"""Fixtures for distribution tests: campaigns made through the ORM, a real SMTP server (aiosmtpd)
on loopback, misbehaving SMTP servers, and an HTTP stand-in of a Twilio-compatible SMS API."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller

from conftest import free_port
from opencoupon.kit import ids
from opencoupon.kit.clock import utcnow
from opencoupon.models import Campaign
from opencoupon.runtime import Runtime


@dataclass
class CampaignRef:
    id: int
    code: str

    @property
    def public_id(self) -> str:
        return f"cam_{self.id}"


def make_campaign(runtime: Runtime, account_id: int, **fields: Any) -> CampaignRef:
    """A campaign created directly through the ORM (campaign CRUD is another capability)."""
    now = utcnow()
    values: dict[str, Any] = {
        "name": "Spring sale",
        "title": "20% off your next coffee",
        "subtitle": "Any size, any blend",
        "description": "Show this coupon at the counter.",
        "image_url": "https://images.example.com/coffee.png",
        **fields,
    }
    with runtime.db.transaction() as session:
        campaign = Campaign(
            account_id=account_id,
            code=ids.random_code(6),
            status="active",
            kind="coupon",
            created_at=now,
            updated_at=now,
            claim_form={},
            settings={},
            **values,
        )
        session.add(campaign)
        session.flush()
        return CampaignRef(campaign.id, campaign.code)


@pytest.fixture
def dist_campaign(runtime: Runtime, account: Any) -> CampaignRef:
    return make_campaign(runtime, account.id)


# --- SMTP --------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpHandler:
    """Records every message; `replies` (consumed one per DATA) make it refuse instead."""

    messages: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    data_calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.data_calls += 1
            if self.replies:
                return self.replies.pop(0)
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 2.0.0 Ok: queued as TEST" + str(self.data_calls)

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if address in m.rcpt_tos]


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: SmtpHandler


@pytest.fixture
def dist_smtp() -> Iterator[SmtpServer]:
    handler = SmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()


class DroppingServer:
    """Accepts TCP connections and closes them at once (a crashed or overloaded relay)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def dist_dropping_smtp() -> Iterator[DroppingServer]:
    server = DroppingServer()
    yield server
    server.close()


class TrickleServer:
    """Answers every connection with `opening` at once, then `pattern` over and over, one byte
    every `pause` seconds: each read of the client ends well within its timeout, the answer never
    does (an endless multi-line SMTP greeting, an HTTP body that never ends)."""

    def __init__(self, pattern: bytes, *, opening: bytes = b"", pause: float = 0.2) -> None:
        self.pattern, self.opening, self.pause = pattern, opening, pause
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(self.opening)
                while not self._stop.is_set():
                    for byte in self.pattern:
                        if self._stop.wait(self.pause):
                            return
                        conn.send(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


# --- SMS provider stand-in ---------------------------------------------------------------------


@dataclass
class SmsRequest:
    path: str
    authorization: str
    form: dict[str, str]
    host: str = ""  # the Host header

    @property
    def basic_auth(self) -> tuple[str, str]:
        kind, _, value = self.authorization.partition(" ")
        assert kind == "Basic"
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, password


class SmsStandIn:
    """A Twilio-compatible Messages endpoint on loopback. `responses` (status, body) are used one
    per request; when empty it accepts the message (201 with a sid)."""

    def __init__(self) -> None:
        self.requests: list[SmsRequest] = []
        self.responses: list[tuple[int, dict[str, Any]]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                stand_in.requests.append(
                    SmsRequest(
                        self.path, self.headers.get("Authorization", ""), form, self.headers.get("Host", "")
                    )
                )
                if stand_in.responses:
                    status, body = stand_in.responses.pop(0)
                else:
                    status = 201
                    body = {
                        "sid": f"SM{len(stand_in.requests):032d}",
                        "status": "queued",
                        "to": form.get("To"),
                    }
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dist_sms() -> Iterator[SmsStandIn]:
    stand_in = SmsStandIn()
    yield stand_in
    stand_in.close()
