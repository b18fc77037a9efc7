"""The SSRF table (reliability-performance.md §6, R10): every target refused at registration, and at
delivery time no connection to a non-public address is ever opened."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import update

from helpers import assert_error
from opencoupon.models import Account
from opencoupon.runtime import Runtime
from opencoupon.webhooks import ssrf
from webhooks_fixtures import drain, emit

if TYPE_CHECKING:
    from conftest import TestAccount

PUBLIC = "93.184.216.34"

# Hostnames the simulated DNS answers (name -> addresses).
FAKE_DNS = {
    "public.example": [PUBLIC],
    "private.example": ["10.1.2.3"],
    "mixed.example": [PUBLIC, "127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "v6private.example": ["fd00::1"],
}

# Hosts spelling 127.0.0.1 / localhost in other Unicode characters: full-width digits, the
# ideographic, full-width and half-width full stops, circled and mathematical digits, a full-width
# short form, a small roman numeral ell, full-width letters.
UNICODE_LOOPBACK = [
    "１２７.０.０.１",
    "127。0。0。1",
    "127．0．0．1",
    "127｡0｡0｡1",
    "①②⑦.0.0.1",
    "𝟏𝟐𝟕.𝟎.𝟎.𝟏",
    "１２７.１",
    "ⅼocalhost",
    "ＬＯＣＡＬＨＯＳＴ",
]

R10_TABLE = [
    "https://127.0.0.1/hook",
    "https://localhost/hook",
    "https://app.localhost/hook",
    "https://0.0.0.0/hook",
    "https://10.0.0.5/hook",
    "https://172.16.3.4/hook",
    "https://192.168.1.10/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.100.100.200/",
    "https://100.64.0.1/",
    "https://[::1]/hook",
    "https://[::]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::ffff:a9fe:a9fe]/hook",
    "https://[64:ff9b::a9fe:a9fe]/hook",
    "https://[64:ff9b:1::a00:1]/hook",
    "https://[fd00:ec2::254]/hook",
    "https://[fe80::1]/hook",
    "https://[2002:7f00:1::]/hook",
    # ::/8 (IETF reserved): IPv4-compatible addresses, IPv4-translated (::ffff:0:0:0/96).
    "https://[::127.0.0.1]/hook",
    "https://[::7f00:1]/hook",
    "https://[::a9fe:a9fe]/hook",
    "https://[::ffff:0:7f00:1]/hook",
    "https://[::ffff:0:a9fe:a9fe]/hook",
    "https://[3fff::1]/hook",  # documentation (RFC 9637)
    "https://[5f00::1]/hook",  # SRv6 SIDs (RFC 9602)
    "https://[ff02::1]/hook",
    "https://224.0.0.1/hook",
    "https://240.0.0.1/hook",
    "https://255.255.255.255/hook",
    "https://198.18.0.1/hook",
    "https://2130706433/hook",
    "https://0x7f.1/hook",
    "https://017700000001/hook",
    # Unicode spellings the HTTP client (yarl: NFKC / UTS #46) turns into the address they spell.
    *(f"https://{host}/hook" for host in UNICODE_LOOPBACK),
    "https://１６９.２５４.１６９.２５４/latest/meta-data/",
    "https://１０。０。０。５/hook",
    "https://private.example/hook",
    "https://mixed.example/hook",
    "https://metadata.example/hook",
    "https://v6private.example/hook",
    "https://nxdomain.example/hook",
    "http://public.example/hook",
    "https://user:pass@public.example/hook",
    "file:///etc/passwd",
    "gopher://public.example:70/_GET",
    "ftp://public.example/",
    "https:///nohost",
    "https://public.example:0/",
]


def _fake_lookup(host: str, port: int) -> list[str]:
    if host in FAKE_DNS:
        return FAKE_DNS[host]
    if host.endswith(".example"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return ssrf.system_lookup(host, port)


@pytest.fixture
def strict(runtime: Runtime) -> Iterator[Runtime]:
    """Production rules (no private targets) with simulated DNS."""
    ssrf.set_lookup(_fake_lookup)
    runtime.settings.allow_private_webhooks = False
    try:
        yield runtime
    finally:
        runtime.settings.allow_private_webhooks = True
        ssrf.set_lookup(None)


class Listener:
    """A bare TCP listener counting every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("url", R10_TABLE)
def test_r10_table_refused_at_registration(strict: Runtime, account: TestAccount, url: str) -> None:
    resp = account.client.post("/v4/webhooks", json={"url": url, "events": ["*"]}, headers=account.headers)
    body = assert_error(resp, 422, 300)
    assert "url" in body["status"]["errors"]["error_message_description"][0]


@pytest.mark.parametrize("url", ["https://" + "a" * 64 + ".example.com/hook", "https://a..b.com/x"])
def test_a_host_name_no_resolver_can_encode_does_not_resolve(
    strict: Runtime, account: TestAccount, url: str
) -> None:
    """An empty label or one over 63 characters: the idna codec raises UnicodeError (no DNS query
    is made); it answered 500."""
    resp = account.client.post("/v4/webhooks", json={"url": url, "events": ["*"]}, headers=account.headers)
    body = assert_error(resp, 422, 300)
    assert "does not resolve" in body["status"]["errors"]["error_message_description"][0]


def test_public_targets_are_accepted(strict: Runtime, account: TestAccount) -> None:
    for url in ("https://public.example/hook", f"https://{PUBLIC}:8443/in", "https://[2606:4700::1111]/"):
        resp = account.client.post(
            "/v4/webhooks", json={"url": url, "events": ["*"]}, headers=account.headers
        )
        assert resp.status_code == 201, (url, resp.text)


def test_updating_to_a_private_url_is_refused(strict: Runtime, account: TestAccount) -> None:
    created = account.client.post(
        "/v4/webhooks", json={"url": "https://public.example/", "events": ["*"]}, headers=account.headers
    ).json()
    resp = account.client.patch(
        f"/v4/webhooks/{created['id']}", json={"url": "https://169.254.169.254/"}, headers=account.headers
    )
    assert_error(resp, 422, 300)


def _deliveries(account: TestAccount, endpoint_id: str) -> list[dict[str, object]]:
    return list(account.client.get(f"/v4/webhooks/{endpoint_id}/deliveries", headers=account.headers).json())


def test_dns_rebinding_is_refused_at_connect_time(strict: Runtime, account: TestAccount) -> None:
    listener = Listener()
    try:
        answers = iter([[PUBLIC], ["127.0.0.1"]])
        FAKE_DNS["rebind.example"] = [PUBLIC]
        ssrf.set_lookup(
            lambda host, port: next(answers) if host == "rebind.example" else _fake_lookup(host, port)
        )
        created = account.client.post(
            "/v4/webhooks",
            json={"url": f"https://rebind.example:{listener.port}/hook", "events": ["*"]},
            headers=account.headers,
        )
        assert created.status_code == 201, created.text
        emit(strict, account.id)
        drain(strict)
        log = _deliveries(account, created.json()["id"])
        assert log
        assert log[0]["status_code"] == 0
        assert "refused" in str(log[0]["error"])
        assert listener.accepted == 0
    finally:
        listener.close()


def test_stored_private_targets_are_refused_at_delivery(runtime: Runtime, account: TestAccount) -> None:
    """Endpoints registered while private targets were allowed (or whose DNS changed) get nothing
    once the rule is back on: IP literals are checked before sending, names by the resolver."""
    listener = Listener()
    try:
        urls = [f"https://127.0.0.1:{listener.port}/a", f"https://private.example:{listener.port}/b"]
        ids = []
        for url in urls:
            resp = account.client.post(
                "/v4/webhooks", json={"url": url, "events": ["*"]}, headers=account.headers
            )
            assert resp.status_code == 201
            ids.append(resp.json()["id"])
        ssrf.set_lookup(
            lambda host, port: ["127.0.0.1"] if host == "private.example" else _fake_lookup(host, port)
        )
        runtime.settings.allow_private_webhooks = False
        try:
            emit(runtime, account.id)
            drain(runtime)
        finally:
            runtime.settings.allow_private_webhooks = True
            ssrf.set_lookup(None)
        for endpoint_id in ids:
            log = _deliveries(account, endpoint_id)
            assert log
            assert "refused" in str(log[0]["error"]), log
        assert listener.accepted == 0
    finally:
        listener.close()


@pytest.mark.parametrize("host", UNICODE_LOOPBACK)
def test_a_unicode_spelling_of_loopback_in_the_field_is_refused_at_delivery(
    strict: Runtime, account: TestAccount, subaccount: TestAccount, host: str
) -> None:
    """`https://１２７.０.０.１:port/` was not seen as an IP literal (urlsplit keeps the full-width
    digits), and aiohttp, which maps them to 127.0.0.1, connected without asking the guarded
    resolver. Now the host is checked as the client will use it: refused when the field is set,
    and a value stored before the field was checked is refused at delivery, nothing opened."""
    listener = Listener()
    try:
        url = f"https://{host}:{listener.port}/hook"
        refused = account.call(
            "/v3/subaccount/update", subaccount=f"sub_{subaccount.id}", webhook_endpoint=url
        )
        assert (
            "non-public"
            in assert_error(refused, 422, 300)["status"]["errors"]["error_message_description"][0]
        )
        with strict.db.transaction() as session:  # as saved before the field was checked
            session.execute(update(Account).where(Account.id == subaccount.id).values(webhook_endpoint=url))
        emit(strict, subaccount.id, "coupon_claimed")
        drain(strict)
        field = next(
            e
            for e in subaccount.client.get("/v4/webhooks", headers=subaccount.headers).json()
            if e["source"] == "account_field"
        )
        log = _deliveries(subaccount, str(field["id"]))
        assert log
        assert log[0]["status_code"] == 0
        assert "refused" in str(log[0]["error"]), log
        assert listener.accepted == 0
        resp = account.client.post(
            "/v4/webhooks", json={"url": url, "events": ["*"]}, headers=account.headers
        )
        body = assert_error(resp, 422, 300)
        assert "non-public" in body["status"]["errors"]["error_message_description"][0]
    finally:
        listener.close()


def test_address_rules() -> None:
    import ipaddress

    for text in ("8.8.8.8", "1.1.1.1", PUBLIC, "2606:4700::1111", "2a00:1450:4001::200e"):
        assert ssrf.address_allowed(ipaddress.ip_address(text)), text
    for text in (
        "127.0.0.1",
        "100.100.100.200",
        "64:ff9b::808:808",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
        "fc00::1",
        "::808:808",
        "::ffff:0:808:808",
        "3fff:fff::1",
        "5f00:1::1",
    ):
        assert not ssrf.address_allowed(ipaddress.ip_address(text)), text
