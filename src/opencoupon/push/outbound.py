"""The push pool: outbound HTTP for push deliveries, apart from the webhooks' pool.

Anyone can subscribe a browser, so anyone can point subscriptions at a server that accepts and
never answers. Push deliveries therefore never use the webhooks' connections (another account's
webhooks keep theirs), wait `OPENCOUPON_PUSH_TIMEOUT_SECONDS` (5: push services answer well within
it) rather than the webhooks' 15 s, and within one batch (a fan-out's chunk) at most
`OPENCOUPON_PUSH_ORIGIN_CONCURRENCY` requests go to one push service origin at a time: the other
subscribers of the chunk keep the other connections. Once a request to an origin has timed out,
the chunk's requests to that origin still waiting are not sent (status 0, "deferred"): the fan-out
tries them again later, so a chunk never waits much longer than one timeout for a dead origin.

Same loop-in-a-thread, SSRF-guarded aiohttp client as webhooks (`webhooks.outbound.Outbound`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiohttp

from opencoupon.config import Settings
from opencoupon.webhooks import ssrf
from opencoupon.webhooks.outbound import TIMED_OUT, Outbound, Request, Response, SendersBySettings, storable

DEFERRED = "deferred: the push service stopped answering other requests of this batch"


def origin_of(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}".lower()
    except ValueError:
        return url


class PushOutbound(Outbound):
    """`Outbound` with the push pool's size and timeout, and per-origin limits within a batch."""

    async def _client(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        async with self._session_lock:
            if self._session is None or self._slots is None:
                limit = max(1, self.settings.push_concurrency)
                # As webhooks.outbound: a request takes a slot before its timeout starts, and the
                # connector (same limit) then always has a connection for it.
                self._slots = asyncio.Semaphore(limit)
                connector = aiohttp.TCPConnector(
                    limit=limit,
                    resolver=ssrf.GuardedResolver(lambda: self.settings.allow_private_webhooks),
                    use_dns_cache=False,
                    keepalive_timeout=15,
                )
                self._session = aiohttp.ClientSession(
                    connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
                )
            return self._session, self._slots

    async def _timed(
        self, client: aiohttp.ClientSession, slots: asyncio.Semaphore, request: Request
    ) -> Response:
        """One request, given at most the push timeout from when it has a connection."""
        timeout = self.settings.push_timeout_seconds
        async with slots:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    response = await self._post(client, request, started)
            except TimeoutError:
                response = Response(
                    0, "", f"{TIMED_OUT} {timeout:g} s", int((time.perf_counter() - started) * 1000)
                )
            except Exception as exc:  # any failure of this request is its own
                response = Response(
                    0, "", f"{type(exc).__name__}: {exc}"[:500], int((time.perf_counter() - started) * 1000)
                )
        response.body = storable(response.body)
        response.error = storable(response.error)
        return response

    async def _send_all(self, requests: Sequence[Request]) -> list[Response]:
        client, slots = await self._client()
        per_origin = max(1, self.settings.push_origin_concurrency)
        gates: dict[str, asyncio.Semaphore] = {}
        stalled: set[str] = set()

        async def one(request: Request) -> Response:
            origin = origin_of(request.url)
            gate = gates.setdefault(origin, asyncio.Semaphore(per_origin))
            async with gate:
                if origin in stalled:
                    return Response(0, "", DEFERRED, 0, deferred=True)
                response = await self._timed(client, slots, request)
                if response.status == 0 and response.error.startswith(TIMED_OUT):
                    stalled.add(origin)
                return response

        return list(await asyncio.gather(*(one(r) for r in requests)))


_senders = SendersBySettings(PushOutbound)


def push_outbound_for(settings: Settings) -> PushOutbound:
    """The process's push sender for these settings (created on first use)."""
    return _senders.get(settings)


def close_push_outbound_for(settings: Settings) -> None:
    _senders.close(settings)
