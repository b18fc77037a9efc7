"""Who a per-client limit counts: an address, an IPv6 subscriber's /64, and an IPv4 client of a
dual-stack socket by its own IPv4 address; and the API's token bucket turned off by either
setting at 0; and, against a served process, a client at twice its limit gets its limit while
another tenant is untouched (R13)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx2
import pytest
from starlette.requests import Request

from conftest import TestAccount
from opencoupon.config import Settings
from opencoupon.kit.ratelimit import RateLimiter
from opencoupon.web import client_key
from serve_process import ServeProcess, serve_env


def _from(host: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "client": (host, 40000)})


def test_ipv4_clients_of_a_dual_stack_socket_are_counted_apart() -> None:
    # `opencoupon serve --host ::` (or --workers N) hands IPv4 clients over as ::ffff:a.b.c.d; they
    # all shared one key (the /64 ::ffff:0:0/64), so one client's failed sign-ins locked out every
    # IPv4 user.
    assert client_key(_from("::ffff:127.0.0.2")) == "127.0.0.2"
    assert client_key(_from("::ffff:127.0.0.2")) != client_key(_from("::ffff:10.1.2.3"))
    assert client_key(_from("::ffff:127.0.0.2")) == client_key(_from("127.0.0.2"))


def test_ipv6_clients_are_counted_by_their_64() -> None:
    assert client_key(_from("2001:db8:1:2::5")) == "2001:db8:1:2::/64"
    assert client_key(_from("2001:db8:1:2:ffff::9")) == "2001:db8:1:2::/64"
    assert client_key(_from("2001:db8:1:3::5")) != client_key(_from("2001:db8:1:2::5"))


@pytest.mark.parametrize(("per_second", "burst"), [(0, 1000), (500, 0)])
def test_either_rate_limit_setting_at_zero_turns_it_off(per_second: float, burst: int) -> None:
    # A burst of 0 with a rate set refused every call for ever (the bucket never held a token).
    limiter = RateLimiter(per_second, burst)
    assert [limiter.check("client") for _ in range(2000)] == [0.0] * 2000


def test_the_bucket_refuses_past_its_burst_and_says_how_long_to_wait() -> None:
    limiter = RateLimiter(10, 3)
    assert [limiter.check("client") for _ in range(3)] == [0.0] * 3
    wait = limiter.check("client")
    assert 0 < wait <= 0.1
    assert limiter.check("another client") == 0.0


# --- R13 end to end: a real `opencoupon serve` with the limit set through its environment --------

LIMIT = 20  # requests a second, and the burst (R13's ±10 % holds only when the burst is <= L)
SECONDS = 4.0


def _send_at(
    base: str, headers: dict[str, str], rate: float, answers: list[tuple[float, httpx2.Response]]
) -> None:
    """GET /v4/campaigns at `rate` a second for SECONDS, one keep-alive connection, paced from
    the start (a slow answer is caught up on, as a steady client would)."""
    with httpx2.Client(base_url=base, headers=headers, timeout=30) as client:
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - start < SECONDS:
            answers.append((now, client.get("/v4/campaigns")))
            sent += 1
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))


def test_a_client_sending_twice_its_limit_gets_its_limit_and_another_tenant_is_untouched(
    settings: Settings, account: TestAccount, other_account: TestAccount, tmp_path: Path
) -> None:
    server = ServeProcess(
        serve_env(
            settings.database_url,
            tmp_path,
            OPENCOUPON_RATE_LIMIT_PER_SECOND=str(LIMIT),
            OPENCOUPON_RATE_LIMIT_BURST=str(LIMIT),
        )
    )
    base = server.start()
    greedy: list[tuple[float, httpx2.Response]] = []
    modest: list[tuple[float, httpx2.Response]] = []
    try:
        threads = [
            threading.Thread(target=_send_at, args=(base, account.headers, 2 * LIMIT, greedy)),
            threading.Thread(target=_send_at, args=(base, other_account.headers, LIMIT / 2, modest)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        server.stop()
    # The first client: the burst, then the limit for the time it kept sending (±10 %).
    window = greedy[-1][0] - greedy[0][0]
    accepted = [r for _, r in greedy if r.status_code != 429]
    refused = [r for _, r in greedy if r.status_code == 429]
    assert len(greedy) >= 2 * LIMIT * SECONDS * 0.9, len(greedy)  # it really sent about 2L
    assert all(r.status_code == 200 for r in accepted), {r.status_code for r in accepted}
    assert abs(len(accepted) - LIMIT - LIMIT * window) <= 0.1 * LIMIT * window, (len(accepted), window)
    for r in refused:
        assert r.json()["status"]["errors"]["error_code"] == [429], r.text
        assert int(r.headers["Retry-After"]) >= 1
    # The second tenant, at half the limit meanwhile, is never refused.
    assert len(modest) >= LIMIT / 2 * SECONDS * 0.9, len(modest)
    assert [r.status_code for _, r in modest] == [200] * len(modest)
