"""The Coupontools error catalogue and the one envelope helper for every answer."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

HTTP_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
}

# Error code -> HTTP status (CONTRACT §1).
CODE_STATUS = {
    101: 403,
    102: 403,
    103: 422,
    104: 422,
    200: 422,
    300: 422,
    301: 422,
    302: 422,
    303: 422,
    304: 422,
    305: 422,
    # Idempotency-Key reused with another request / still in flight (OpenCoupon's own codes).
    306: 422,
    307: 409,
    # Not allowed in the object's current state (already validated, voided, limit reached...).
    308: 409,
    # Exceeds a limit (batch size, code space too small).
    309: 422,
    429: 429,
}


def status_for_code(code: int) -> int:
    if code in CODE_STATUS:
        return CODE_STATUS[code]
    if 500 <= code <= 599:
        return 404
    return 422


class ApiError(Exception):
    """An error answered in the Coupontools envelope.

    `code` is the vendor error code; the HTTP status follows from it unless given.
    """

    def __init__(
        self,
        code: int,
        description: str,
        http_status: int | None = None,
        headers: dict[str, str] | None = None,
        more: list[tuple[int, str]] | None = None,
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.http_status = http_status or status_for_code(code)
        self.headers = headers or {}
        # Further (code, description) pairs when one request has several faults.
        self.more = more or []


def missing(name: str) -> ApiError:
    return ApiError(200, f"Missing parameter: {name}")


def invalid_character(name: str) -> ApiError:
    return ApiError(301, f"Invalid character in parameter: {name}.")


def bad_value(name: str, detail: str = "") -> ApiError:
    return ApiError(300, f"Invalid value in parameter: {name}." + (f" {detail}" if detail else ""))


def not_allowed(name: str, allowed: list[str]) -> ApiError:
    return ApiError(302, f"Value not allowed in parameter: {name}. Allowed values: {', '.join(allowed)}")


def bad_date(name: str, fmt: str) -> ApiError:
    return ApiError(303, f"Invalid format in parameter: {name}. Required format: {fmt}")


def not_found(code: int, what: str) -> ApiError:
    return ApiError(code, what)


def status_line(http_status: int) -> str:
    return f"HTTP/1.0 {http_status} {HTTP_REASONS.get(http_status, 'Error')}."


def error_body(http_status: int, codes: list[int], descriptions: list[str]) -> dict[str, Any]:
    return {
        "status": {
            "status": "failed",
            "errors": {
                "error_message": status_line(http_status),
                "error_message_description": descriptions,
                "error_code": codes,
            },
        }
    }


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(
            err.http_status,
            [err.code, *(c for c, _ in err.more)],
            [err.description, *(d for _, d in err.more)],
        ),
        status_code=err.http_status,
        headers=err.headers,
    )


AUTH_FAILED_BODY: dict[str, Any] = {
    "status": {
        "status": "failed",
        "errors": {
            "error_code": 1000,
            "error_message": "HTTP/1.0 401 Unauthorized. Client ID or Secret not correct.",
        },
    }
}


class AuthFailed(Exception):
    """Missing or wrong credentials: answered exactly as the vendor's sample (HTTP 401, code 1000)."""


def auth_failed_response() -> JSONResponse:
    return JSONResponse(AUTH_FAILED_BODY, status_code=401)


def ok(**fields: Any) -> dict[str, Any]:
    """The success envelope: {"status": {"status": "OK"}, ...fields}."""
    return {"status": {"status": "OK"}, **fields}
