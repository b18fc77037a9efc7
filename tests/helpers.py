"""Assertions shared by the tests."""

from __future__ import annotations

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
