"""SSRF guard for webhook and push targets (reference: reliability-performance.md §4.6).

A target URL must be https (http only when private targets are allowed), carry no userinfo, and
every address its host resolves to must be public. The check runs at registration and again when
connecting: `GuardedResolver` is the resolver of the outbound HTTP client, so the addresses it
checked are the ones the connection uses (no second lookup for DNS rebinding to win), and IP
literals are checked before any request. Redirects are never followed (see webhooks.outbound).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Everything `is_global` misses or that embeds another address (reference §4.6).
_BLOCKED_NETWORKS = [
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        # IETF reserved: loopback and unspecified, IPv4-compatible (::127.0.0.1, ::a9fe:a9fe),
        # IPv4-mapped (::ffff:0:0/96) and IPv4-translated (::ffff:0:0:0/96) addresses.
        "::/8",
        "::ffff:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs (RFC 9602), not routed on the internet
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
]


class UnsafeTarget(ValueError):
    """The URL may not be used as a webhook or push target; the message says why."""


Lookup = Callable[[str, int], list[str]]


def system_lookup(host: str, port: int) -> list[str]:
    """The addresses of `host` in the resolver's order (RFC 6724: those this machine can reach
    come first, IPv4 on a host without IPv6), each once. Connections try them in this order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_lookup: Lookup = system_lookup


def set_lookup(lookup: Lookup | None) -> None:
    """Replace name resolution (tests simulate DNS answers; None restores the system resolver)."""
    global _lookup
    _lookup = lookup or system_lookup


def lookup(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to. A name the resolver cannot even encode (an empty label,
    a label over 63 characters: the idna codec raises UnicodeError) does not resolve: OSError,
    like any other unresolvable name."""
    try:
        return _lookup(host, port)
    except UnicodeError as exc:
        raise socket.gaierror(socket.EAI_NONAME, f"invalid host name ({exc})") from exc


def address_allowed(address: IPAddress) -> bool:
    if not address.is_global:
        return False
    return not any(address in net for net in _BLOCKED_NETWORKS if net.version == address.version)


def ascii_host(host: str) -> str:
    """`host` as the HTTP client (yarl) and resolvers use it: a non-ASCII name mapped and encoded
    as IDNA/UTS #46 does it, so full-width digits, ideographic full stops and circled digits
    (`１２７.０.０.１`, `127。0。0。1`, `①②⑦.0.0.1`) become the IP literal they spell. A host that
    cannot be encoded is returned as it is (it resolves nowhere)."""
    if host.isascii():
        return host
    try:
        return yarl.URL.build(scheme="http", host=host.strip("[]")).raw_host or host
    except ValueError:
        return host


def literal_address(host: str) -> IPAddress | None:
    """The address an IP literal host stands for, including the legacy forms (2130706433,
    0x7f.1, 017700000001) that resolvers accept and the Unicode spellings (see `ascii_host`)."""
    host = ascii_host(host)
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class Target:
    scheme: str
    # The host as the HTTP client connects to it (yarl's normalised ASCII form; IPv6 without
    # brackets): the one every rule is checked on.
    host: str
    port: int


def split(url: str, *, allow_private: bool) -> Target:
    """Syntax and scheme rules, no DNS: the parts of an acceptable URL."""
    if len(url) > 2000:
        raise UnsafeTarget("URL is too long")
    try:
        parts = urlsplit(url)
        port = parts.port
        # What aiohttp will use: its host is NFKC/UTS #46-mapped, so `１２７.０.０.１` connects to
        # 127.0.0.1 without any lookup. The rules apply to that host, not to urlsplit's.
        parsed = yarl.URL(url)
    except ValueError as exc:
        raise UnsafeTarget("URL is malformed") from exc
    allowed_schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed_schemes or parsed.scheme != parts.scheme:
        raise UnsafeTarget("URL must use https")
    host = parsed.raw_host or ""
    if not parts.hostname or not host:
        raise UnsafeTarget("URL has no host")
    if (
        parts.username is not None
        or parts.password is not None
        or parsed.user is not None
        or parsed.password is not None
    ):
        raise UnsafeTarget("URL may not contain credentials")
    if port == 0 or parsed.explicit_port == 0:
        raise UnsafeTarget("URL port is not allowed")
    if not allow_private:
        literal = literal_address(host)
        if literal is not None and not address_allowed(literal):
            raise UnsafeTarget("URL points to a non-public address")
        if is_local_name(host):
            raise UnsafeTarget("URL points to a non-public address")
    return Target(parts.scheme, host, parsed.port or (443 if parts.scheme == "https" else 80))


def check_addresses(addresses: list[str]) -> None:
    if not addresses:
        raise UnsafeTarget("URL host does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not address_allowed(address):
            raise UnsafeTarget("URL resolves to a non-public address")


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL unless it is acceptable and (unless private targets are allowed) every address
    it resolves to now is public. Raises UnsafeTarget."""
    target = split(url, allow_private=allow_private)
    if allow_private:
        return
    if literal_address(target.host) is not None:
        return
    try:
        addresses = lookup(target.host, target.port)
    except OSError as exc:
        raise UnsafeTarget("URL host does not resolve") from exc
    check_addresses(addresses)


def is_local_name(host: str) -> bool:
    name = ascii_host(host).rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def addresses_of(host: str, port: int) -> list[str]:
    """The addresses to connect to for `host` (a name or an IP literal, IPv6 bare or in brackets),
    in the resolver's order, unchecked. Raises OSError when the name does not resolve."""
    bare = ascii_host(host.strip("[]"))
    literal = literal_address(bare)
    return [str(literal)] if literal is not None else lookup(bare, port)


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses to connect to for `host`, in the resolver's order, once every address it
    resolves to has been checked public: a connection tries each in turn until one answers, as
    socket.create_connection does. Connecting only to these leaves no second lookup for DNS
    rebinding to answer differently. Raises UnsafeTarget, or OSError when the name does not
    resolve."""
    if is_local_name(ascii_host(host.strip("[]"))):
        raise UnsafeTarget("URL points to a non-public address")
    addresses = addresses_of(host, port)
    check_addresses(addresses)
    return list(dict.fromkeys(text.split("%", 1)[0] for text in addresses))


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that answers only checked public addresses: the connection is pinned to
    what was checked. `allow_private` is read on every lookup (a callable, so settings changes
    apply at once)."""

    def __init__(self, allow_private: Callable[[], bool]) -> None:
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            addresses = await loop.run_in_executor(None, lookup, host, port)
        except OSError as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from exc
        if not self._allow_private():
            try:
                check_addresses(addresses)
            except UnsafeTarget as exc:
                # An OSError is what aiohttp turns into a connection error: nothing is opened.
                raise OSError(f"refused: {exc}") from None
        results: list[ResolveResult] = []
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            fam = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            entry: dict[str, Any] = {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": fam,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            results.append(entry)  # type: ignore[arg-type]
        return results

    async def close(self) -> None:
        return None
