"""Who a per-client limit counts: an address, an IPv6 subscriber's /64, and an IPv4 client of a
dual-stack socket by its own IPv4 address; and the API's token bucket turned off by either
setting at 0."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from opencoupon.kit.ratelimit import RateLimiter
from opencoupon.web import client_key


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
