"""SMS providers: one small interface, and a real HTTP client for Twilio-compatible REST APIs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx2

DEFAULT_TWILIO_URL = "https://api.twilio.com"
PROVIDERS = ("twilio",)


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
    works; the base URL is configurable per account."""

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
        extensions: dict[str, str] = {}
        if self.connect_address and self.connect_address != url.host:
            # Same Host header and TLS name (certificate check) as the URL, connection to the address.
            headers["Host"] = url.netloc.decode("ascii")
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
            url = url.copy_with(host=self.connect_address)
        try:
            with httpx2.Client(timeout=self.timeout, follow_redirects=False) as client:
                response = client.post(
                    url,
                    data={"To": to, "From": sender, "Body": body},
                    auth=(self.account_sid, self.auth_token),
                    headers=headers,
                    extensions=extensions,
                )
        except httpx2.HTTPError as exc:
            raise SmsError(f"SMS provider not reachable: {exc!r}", transient=True) from exc
        answer = f"HTTP {response.status_code} {response.text[:1000]}"
        if response.status_code in (200, 201):
            try:
                data = response.json()
            except ValueError:
                data = {}
            sid = str(data.get("sid", "")) if isinstance(data, dict) else ""
            return SmsResult(message_id=sid, response=answer)
        # Rate limiting and server faults pass; other refusals (bad number, bad credentials,
        # unverified sender) would fail the same way again.
        transient = response.status_code == 429 or response.status_code >= 500
        message = _error_message(response)
        raise SmsError(
            f"SMS provider answered {response.status_code}: {message}", transient=transient, response=answer
        )


def _error_message(response: httpx2.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict) and data.get("message"):
        code = data.get("code")
        return f"{data['message']}" + (f" (code {code})" if code else "")
    return response.text[:300]


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
