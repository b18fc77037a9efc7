"""SMS providers: one small interface, and a real HTTP client for Twilio-compatible REST APIs."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
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
        connect_addresses: Sequence[str] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.timeout = timeout
        # The checked addresses of the base URL's host (distribution.service.connect_addresses),
        # in the order to try them: the request goes to the first that answers and nowhere a
        # second DNS lookup would point; empty lets httpx resolve.
        self.connect_addresses = tuple(connect_addresses)

    def send(self, to: str, sender: str, body: str) -> SmsResult:
        url = httpx2.URL(f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json")
        with Watchdog(self.timeout) as watchdog:
            try:
                status, text, cut = self._post_to_first_answering(url, to, sender, body, watchdog)
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

    def _post_to_first_answering(
        self, url: httpx2.URL, to: str, sender: str, body: str, watchdog: Watchdog
    ) -> tuple[int, str, bool]:
        """POST to the first address that takes the connection, in order: a connection refused,
        unreachable or not made in time sent nothing, so the next address is tried (within the
        attempt's deadline, each connect with its share of it, as for SMTP: a silent address leaves
        the next ones time); any later failure ends the attempt (the message may have gone out)."""
        *others, last = self.connect_addresses or (url.host,)
        for index, address in enumerate(others):
            try:
                return self._post(url, address, to, sender, body, watchdog, len(others) + 1 - index)
            except (httpx2.ConnectError, httpx2.ConnectTimeout):
                if watchdog.remaining() <= 0:
                    raise
        return self._post(url, last, to, sender, body, watchdog, 1)

    def _post(
        self,
        url: httpx2.URL,
        address: str,
        to: str,
        sender: str,
        body: str,
        watchdog: Watchdog,
        addresses_left: int,
    ) -> tuple[int, str, bool]:
        """One request over a connection to `address` (of `addresses_left` still to try): the
        status, the answer's text and whether it was cut short."""
        headers: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        if address != url.host:
            # Same Host header and TLS name (certificate check) as the URL, connection to the address.
            headers["Host"] = url.netloc.decode("ascii")
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
            url = url.copy_with(host=address)

        def trace(event: str, info: dict[str, Any]) -> None:
            # The connection, once made, is the watchdog's to cut at the deadline.
            if event == "connection.connect_tcp.complete":
                stream = info.get("return_value")
                sock = stream.get_extra_info("socket") if stream is not None else None
                if isinstance(sock, socket.socket):
                    watchdog.watch(sock)

        extensions["trace"] = trace
        timeout = httpx2.Timeout(
            max(0.01, min(self.timeout, watchdog.remaining())),
            connect=watchdog.connect_timeout(self.timeout, addresses_left),
        )
        with (
            httpx2.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream(
                "POST",
                url,
                data={"To": to, "From": sender, "Body": body},
                auth=(self.account_sid, self.auth_token),
                headers=headers,
                extensions=extensions,
            ) as response,
        ):
            text, cut = _read_answer(response)
            return response.status_code, text, cut


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
    connect_addresses: Sequence[str] = (),
) -> SmsProvider:
    if provider == "twilio":
        return TwilioProvider(
            base_url, account_sid, auth_token, timeout=timeout, connect_addresses=connect_addresses
        )
    raise ValueError(f"unknown SMS provider {provider}")
