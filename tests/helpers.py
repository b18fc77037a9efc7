"""Assertions shared by the tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx2


def assert_error(response: httpx2.Response, http_status: int, code: int) -> dict[str, Any]:
    """The Coupontools error envelope with this HTTP status and first error code."""
    assert response.status_code == http_status, response.text
    body = response.json()
    assert body["status"]["status"] == "failed"
    errors = body["status"]["errors"]
    codes = errors["error_code"]
    assert (codes[0] if isinstance(codes, list) else codes) == code, body
    return body


def assert_ok(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == {"status": "OK"}, body
    return body


def race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads released together; their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:  # a failed thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results
