"""A real HTTP receiver on loopback for webhook tests (aiohttp server in its own thread), and
helpers to emit events and run the job runner."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from conftest import free_port
from opencoupon.events import service as events
from opencoupon.runtime import Runtime
from opencoupon.worker.runner import Runner


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str
    answered: int  # 0: connection dropped or timed out on purpose
    raw: bytes = b""

    @property
    def event_id(self) -> str:
        return str(json.loads(self.body)["id"])


@dataclass
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    delay: float = 0.0
    drop: bool = False


Behaviour = Callable[[str, dict[str, str], str], Reply]


class Receiver:
    """Records every request; `behaviour(path, headers, body)` decides the answer."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.behaviour: Behaviour = lambda _p, _h, _b: Reply()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in request.headers.items()}
        reply = self.behaviour(request.path, headers, body)
        answered = 0 if reply.drop or reply.delay else reply.status
        if reply.drop:
            with self.lock:
                self.received.append(Received(request.path, headers, body, 0, raw))
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if reply.delay:
            await asyncio.sleep(reply.delay)
        with self.lock:
            self.received.append(Received(request.path, headers, body, answered, raw))
        return web.Response(status=reply.status, headers=reply.headers, text=reply.body)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        self._loop.run_until_complete(site.start())
        self._started.set()
        self._loop.run_forever()

    def start(self) -> Receiver:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests()
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"receiver got {len(self.requests())} requests, expected {count}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def emit(runtime: Runtime, account_id: int, type_: str = "coupon_validated", **data: Any) -> str:
    with runtime.db.transaction() as session:
        event: str = events.emit(
            session,
            account_id,
            type_,
            data or {"n": 1},
            campaign="cam_1",
            coupon_session="abcdefghijklmnopqrstu",
        )
        return event


def drain(runtime: Runtime) -> int:
    """Run every due job in this process (the real runner, claims and all)."""
    runner = Runner(runtime)
    try:
        return runner.run_until_idle()
    finally:
        runner.close()
