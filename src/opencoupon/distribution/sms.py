"""SMS providers: one small interface, and a real HTTP client for Twilio-compatible REST APIs."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2

from opencoupon.distribution.deadline import Watchdog

DEFAULT_TWILIO_URL = "https://api.twilio.com"
PROVIDERS = ("twilio",)
# Of the provider's answer, no more than this is read (its JSON is a few hundred bytes).
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class SmsResult:
    """What the provider answered to an accepted message."""

    message_id: str
    response: str


class SmsError(Exception):
    """The provider refused or could not be reached. `transient` errors are worth retrying."""

    def __init__(self, message: str, *, transient: bool, response: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.response = response


class SmsProvider(Protocol):
    def send(self, to: str, sender: str, body: str) -> SmsResult: ...


class TwilioProvider:
    """POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json with form fields To, From, Body and
    HTTP basic auth sid:token. Any service speaking this API (Twilio, or a compatible gateway)
    works; the base URL is configurable per account. `timeout` bounds the whole request, from
    connecting to the last byte of the answer."""

    def __init__(
        self,
        base_url: str,
        account_sid: str,
        auth_token: str,
        *,
        timeout: float = 15.0,
        connect_address: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.timeout = timeout
        # The checked address of the base URL's host (distribution.service.connect_address): the
        # request goes there and nowhere a second DNS lookup would point; "" lets httpx resolve.
        self.connect_address = connect_address

    def send(self, to: str, sender: str, body: str) -> SmsResult:
        url = httpx2.URL(f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json")
        headers: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        if self.connect_address and self.connect_address != url.host:
            # Same Host header and TLS name (certificate check) as the URL, connection to the address.
            headers["Host"] = url.netloc.decode("ascii")
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
            url = url.copy_with(host=self.connect_address)
        with Watchdog(self.timeout) as watchdog:

            def trace(event: str, info: dict[str, Any]) -> None:
                # The connection, once made, is the watchdog's to cut at the deadline.
                if event == "connection.connect_tcp.complete":
                    stream = info.get("return_value")
                    sock = stream.get_extra_info("socket") if stream is not None else None
                    if isinstance(sock, socket.socket):
                        watchdog.watch(sock)

            extensions["trace"] = trace
            try:
                with (
                    httpx2.Client(timeout=self.timeout, follow_redirects=False) as client,
                    client.stream(
                        "POST",
                        url,
                        data={"To": to, "From": sender, "Body": body},
                        auth=(self.account_sid, self.auth_token),
                        headers=headers,
                        extensions=extensions,
                    ) as response,
                ):
                    status = response.status_code
                    text, cut = _read_answer(response)
            except httpx2.HTTPError as exc:
                if watchdog.fired:
                    raise SmsError(
                        f"SMS provider too slow: no answer within {self.timeout:g} s", transient=True
                    ) from exc
                raise SmsError(f"SMS provider not reachable: {exc!r}", transient=True) from exc
        answer = f"HTTP {status} {text[:1000]}" + (" [answer cut off]" if cut else "")
        if 200 <= status < 300:
            # Accepted (202 included), even when the rest of the answer did not come in time:
            # trying again would send the message twice.
            data = _json(text)
            sid = str(data.get("sid", "")) if isinstance(data, dict) else ""
            return SmsResult(message_id=sid, response=answer)
        # Rate limiting and server faults pass; other refusals (bad number, bad credentials,
        # unverified sender) would fail the same way again.
        transient = status == 429 or status >= 500
        message = _error_message(text)
        raise SmsError(f"SMS provider answered {status}: {message}", transient=transient, response=answer)


def _read_answer(response: httpx2.Response) -> tuple[str, bool]:
    """The answer's text, at most MAX_ANSWER_BYTES of it, and whether it was cut short (too long,
    or the connection ended or was cut at the deadline before its end)."""
    chunks: list[bytes] = []
    size = 0
    cut = False
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_ANSWER_BYTES:
                cut = True
                break
    except httpx2.HTTPError:
        cut = True
    raw = b"".join(chunks)[:MAX_ANSWER_BYTES]
    try:
        return raw.decode(response.charset_encoding or "utf-8", errors="replace"), cut
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace"), cut


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_message(text: str) -> str:
    data = _json(text)
    if isinstance(data, dict) and data.get("message"):
        code = data.get("code")
        return f"{data['message']}" + (f" (code {code})" if code else "")
    return text[:300]


def make_provider(
    provider: str,
    base_url: str,
    account_sid: str,
    auth_token: str,
    *,
    timeout: float,
    connect_address: str = "",
) -> SmsProvider:
    if provider == "twilio":
        return TwilioProvider(
            base_url, account_sid, auth_token, timeout=timeout, connect_address=connect_address
        )
    raise ValueError(f"unknown SMS provider {provider}")
