"""Outbound HTTP for webhooks and push: one asyncio loop in a thread per process, with one aiohttp
session (keep-alive pool, SSRF-guarded resolver). Worker threads hand it a whole batch of requests
and wait for all answers.

aiohttp, because the client choice decides throughput here (reference §5.6: aiohttp 12k/s vs
httpx 0.6-1k/s on this machine; bench/bench_webhooks.py measures it again).
"""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp

from opencoupon.config import Settings
from opencoupon.kit import ids
from opencoupon.webhooks import ssrf

T = TypeVar("T")

RESPONSE_KEEP_BYTES = 2048


@dataclass
class Request:
    url: str
    body: bytes
    headers: dict[str, str]
    # time.monotonic() before which it is not sent: a throttled delivery's slot (webhooks.throttle).
    not_before: float | None = None
    # time.monotonic() after which it is not sent at all (Response.late): a throttled delivery's
    # slot has passed, it takes a new one rather than go out bunched with the next ones.
    not_after: float | None = None
    # Headers made once the request has its connection (a webhook's timestamp and signature: never
    # as old as its wait for the pool); an exception there is this request's failed attempt.
    sign: Callable[[], dict[str, str]] | None = None
    # Requests with the same gate (one webhook endpoint) share at most
    # OPENCOUPON_WEBHOOK_ENDPOINT_CONCURRENCY connections in the process: one slow receiver never
    # holds the whole pool. None: no such limit.
    gate: str | None = None
    # Requests with the same tenant (one account and its subaccounts) share at most
    # OPENCOUPON_WEBHOOK_ACCOUNT_CONCURRENCY connections in the process, all their gates together:
    # an account with many endpoints on one slow host never holds the whole pool. None: no limit.
    tenant: str | None = None


@dataclass
class Response:
    status: int  # 0: no HTTP answer
    body: str
    error: str
    duration_ms: int
    retry_after: float | None = None
    # Not sent: its connection was free only after Request.not_after (no attempt was made).
    late: bool = False
    # Not sent: while it waited for its gate, the endpoint stopped answering (_Gate.stalled). No
    # attempt was made; it is tried later rather than wait out one timeout after another.
    deferred: bool = False

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300


TIMED_OUT = "timeout after"
DEFERRED = "deferred: the endpoint stopped answering while this request waited for it"


@dataclass
class _Gate:
    """A gate's connections (Request.gate); how many of its requests timed out so far, and how
    many in a row (none answered since)."""

    slots: asyncio.Semaphore
    limit: int
    users: int = 0
    timeouts: int = 0
    timeouts_in_a_row: int = 0

    @property
    def stalled(self) -> bool:
        """As many requests in a row timed out as it may have connections: the receiver stopped
        answering (a few timeouts among answers are no reason to defer anything)."""
        return self.timeouts_in_a_row >= self.limit


@dataclass
class _Share:
    """A tenant's connections (Request.tenant) and how many requests use them."""

    slots: asyncio.Semaphore
    users: int = 0


def storable(text: str) -> str:
    """`text` as every database can keep it: PostgreSQL text holds no NUL character (and no
    lone surrogates, which UTF-8 cannot encode)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if ids.is_number(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Outbound:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="opencoupon-outbound", daemon=True
        )
        self._thread.start()
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._session_lock = asyncio.Lock()
        # Used on the loop's thread only; a gate or share is dropped once no request uses it.
        self._gates: dict[str, _Gate] = {}
        self._tenants: dict[str, _Share] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _client(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        async with self._session_lock:
            if self._session is None or self._slots is None:
                limit = max(1, self.settings.webhook_concurrency)
                # A request waits here for its turn, before its timeout starts: the connector
                # (same limit) then always has a connection free, so waiting for the pool is never
                # counted against the receiver.
                self._slots = asyncio.Semaphore(limit)
                connector = aiohttp.TCPConnector(
                    limit=limit,
                    resolver=ssrf.GuardedResolver(lambda: self.settings.allow_private_webhooks),
                    use_dns_cache=False,
                    keepalive_timeout=15,
                )
                self._session = aiohttp.ClientSession(
                    connector=connector,
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent",),
                )
            return self._session, self._slots

    async def _send(
        self, client: aiohttp.ClientSession, slots: asyncio.Semaphore, request: Request
    ) -> Response:
        """One request's answer. Whatever goes wrong with it is its own failed attempt (status 0
        and the error), never an exception that would take the other requests of the batch with
        it."""
        if request.not_before is not None:
            # Waits before taking a connection: a throttled request holds none while it waits.
            await asyncio.sleep(max(0.0, request.not_before - time.monotonic()))
        if request.gate is None:
            return await self._send_shared(client, slots, request)
        gate = self._gates.get(request.gate)
        if gate is None:
            limit = max(1, self.settings.webhook_endpoint_concurrency)
            gate = self._gates[request.gate] = _Gate(asyncio.Semaphore(limit), limit)
        gate.users += 1
        timeouts_before = gate.timeouts
        try:
            # Waiting here holds no connection of the pool: other endpoints' requests take them.
            async with gate.slots:
                if gate.stalled and gate.timeouts != timeouts_before:
                    # It stopped answering while this one waited: tried later, rather than
                    # after one timeout after another.
                    return Response(0, "", DEFERRED, 0, deferred=True)
                response = await self._send_shared(client, slots, request)
                if response.status == 0 and response.error.startswith(TIMED_OUT):
                    gate.timeouts += 1
                    gate.timeouts_in_a_row += 1
                else:
                    gate.timeouts_in_a_row = 0
                return response
        finally:
            gate.users -= 1
            if gate.users == 0:
                self._gates.pop(request.gate, None)

    async def _send_shared(
        self, client: aiohttp.ClientSession, slots: asyncio.Semaphore, request: Request
    ) -> Response:
        """`_send_now` within the request's tenant share (Request.tenant)."""
        if request.tenant is None:
            return await self._send_now(client, slots, request)
        share = self._tenants.get(request.tenant)
        if share is None:
            limit = max(1, self.settings.webhook_account_concurrency)
            share = self._tenants[request.tenant] = _Share(asyncio.Semaphore(limit))
        share.users += 1
        try:
            # Waiting here holds no connection of the pool: other accounts' requests take them.
            async with share.slots:
                return await self._send_now(client, slots, request)
        finally:
            share.users -= 1
            if share.users == 0:
                self._tenants.pop(request.tenant, None)

    async def _send_now(
        self, client: aiohttp.ClientSession, slots: asyncio.Semaphore, request: Request
    ) -> Response:
        async with slots:
            if request.not_after is not None and time.monotonic() > request.not_after:
                return Response(0, "", "not sent: its sending slot passed", 0, late=True)
            started = time.perf_counter()
            try:
                response = await self._post(client, request, started)
            except Exception as exc:  # any failure of this request is its attempt's error
                response = Response(
                    0, "", f"{type(exc).__name__}: {exc}"[:500], int((time.perf_counter() - started) * 1000)
                )
        response.body = storable(response.body)
        response.error = storable(response.error)
        return response

    async def _post(self, client: aiohttp.ClientSession, request: Request, started: float) -> Response:
        def done(status: int, body: str, error: str, retry_after: float | None = None) -> Response:
            return Response(status, body, error, int((time.perf_counter() - started) * 1000), retry_after)

        try:
            # IP literals never reach the resolver: check them (and the scheme) here.
            ssrf.split(request.url, allow_private=self.settings.allow_private_webhooks)
        except ssrf.UnsafeTarget as exc:
            return done(0, "", f"refused: {exc}")
        if request.sign is not None:
            request.headers = {**request.headers, **request.sign()}
        # Counted from here, with a connection sure to be free (see _client): the documented
        # limit is the receiver's time (name lookup, connecting, answering), never the wait for
        # this worker's own pool.
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_seconds)
        try:
            async with client.post(
                request.url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
                timeout=timeout,
            ) as resp:
                kept = bytearray()
                while len(kept) < RESPONSE_KEEP_BYTES:
                    chunk = await resp.content.read(RESPONSE_KEEP_BYTES - len(kept))
                    if not chunk:
                        break
                    kept.extend(chunk)
                text = kept.decode("utf-8", errors="replace")
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                return done(resp.status, text, "", retry_after)
        except TimeoutError:
            return done(0, "", f"{TIMED_OUT} {self.settings.webhook_timeout_seconds:g} s")
        except aiohttp.ClientConnectorError as exc:
            return done(0, "", f"connection failed: {exc.os_error}")
        except (aiohttp.ClientError, OSError) as exc:
            return done(0, "", f"{type(exc).__name__}: {exc}"[:500])

    async def _send_all(self, requests: Sequence[Request]) -> list[Response]:
        client, slots = await self._client()
        return list(await asyncio.gather(*(self._send(client, slots, r) for r in requests)))

    def send_all(self, requests: Sequence[Request]) -> list[Response]:
        """POST every request concurrently (bounded by the pool size); answers in order."""
        if not requests:
            return []
        return self.run(self._send_all(requests))

    def close(self) -> None:
        async def _close() -> None:
            if self._session is not None:
                await self._session.close()
                self._session = None

        self.run(_close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()  # its self-pipe sockets with it


S = TypeVar("S", bound=Outbound)


class SendersBySettings(Generic[S]):
    """One sender per settings object in the process, made on first use (webhooks and push each
    keep their own)."""

    def __init__(self, make: Callable[[Settings], S]) -> None:
        self._make = make
        self._senders: dict[int, S] = {}
        self._lock = threading.Lock()

    def get(self, settings: Settings) -> S:
        with self._lock:
            sender = self._senders.get(id(settings))
            if sender is None:
                sender = self._senders[id(settings)] = self._make(settings)
            return sender

    def close(self, settings: Settings) -> None:
        """Close the sender for these settings, if one was made (its connections, its loop): a
        worker ending without it logs 'Unclosed client session'."""
        with self._lock:
            sender = self._senders.pop(id(settings), None)
        if sender is not None:
            sender.close()


_senders = SendersBySettings(Outbound)


def outbound_for(settings: Settings) -> Outbound:
    """The process's sender for these settings (created on first use)."""
    return _senders.get(settings)


def close_outbound_for(settings: Settings) -> None:
    _senders.close(settings)
