"""How every API call runs: parse the body once, authenticate, rate-limit, validate, apply the
Idempotency-Key, run the handler in one transaction, and answer in the right envelope.

`v3_endpoint` registers Coupontools action calls (POST and GET, the status envelope);
`v4_endpoint` registers REST calls (bare JSON). Handlers are plain functions
`handler(ctx, req) -> dict | list` that never commit.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session
from starlette.requests import Request

from opencoupon.accounts import service as accounts
from opencoupon.accounts.service import Credentials
from opencoupon.db import raw
from opencoupon.db.group import WriteGroup
from opencoupon.errors import ApiError, AuthFailed, auth_failed_response, error_response, ok
from opencoupon.kit import idempotency
from opencoupon.kit.body import read_payload
from opencoupon.kit.clock import utcnow
from opencoupon.kit.fastlane import DIRECT_ENDPOINTS
from opencoupon.kit.params import V3Request, validate
from opencoupon.kit.ratelimit import retry_after_header
from opencoupon.models import Account
from opencoupon.runtime import Runtime

log = logging.getLogger("opencoupon.api")

M = TypeVar("M", bound=V3Request)
Result = dict[str, Any] | list[Any]

CREDENTIAL_FIELDS = ("client_id", "client_secret")
# Apart from every other value the keyring digests (secrets, tokens).
IDEMPOTENCY_FINGERPRINT = "idempotency-request:"


@dataclass
class ApiContext:
    """The authenticated caller of one API call."""

    session: Session
    account: Account
    runtime: Runtime
    now: dt.datetime
    path_params: dict[str, str] = field(default_factory=dict)
    # What the endpoint's `prefetch` read before the write transaction (None without one).
    prefetched: Any = None

    def url(self, path: str) -> str:
        return self.runtime.url(path)

    def scope(self, account_column: Any) -> ColumnElement[bool]:
        """Rows this caller may reach: its own, and for a master its subaccounts' too."""
        me = self.account.id
        if self.account.parent_id is not None:
            return account_column == me  # type: ignore[no-any-return]
        return account_column.in_(  # type: ignore[no-any-return]
            select(Account.id).where(or_(Account.id == me, Account.parent_id == me))
        )

    def may_reach(self, account_id: int) -> bool:
        if account_id == self.account.id:
            return True
        if self.account.parent_id is not None:
            return False
        owner = self.session.get(Account, account_id)
        return owner is not None and owner.parent_id == self.account.id


Handler = Callable[[ApiContext, M], Result]
# Reads (and slow work on what it read) done in a read transaction before the handler's write
# transaction: on SQLite the write lock is not held meanwhile. Its result is `ctx.prefetched`.
Prefetch = Callable[[ApiContext, M], Any]


def extract_credentials(request: Request, payload: dict[str, Any]) -> Credentials | None:
    """Headers win over body fields; v4 `x-api-key`/`x-api-secret` are accepted too."""
    headers = request.headers
    client_id = headers.get("x-client-id") or headers.get("x-api-key")
    client_secret = headers.get("x-client-secret") or headers.get("x-api-secret")
    if not client_id or not client_secret:
        body_id, body_secret = payload.get("client_id"), payload.get("client_secret")
        if client_id is None and isinstance(body_id, str | int):
            client_id = str(body_id)
        if client_secret is None and isinstance(body_secret, str | int):
            client_secret = str(body_secret)
    for name in CREDENTIAL_FIELDS:
        payload.pop(name, None)
    if not client_id or not client_secret:
        return None
    return Credentials(client_id.strip(), client_secret.strip())


def _limit_key(credentials: Credentials) -> str:
    """The rate-limit bucket: the client ID together with a short hash of the secret presented, so
    requests that merely claim someone's client ID (wrong secret) cannot use up that client's bucket.
    Checked before authentication, so refused requests cost no database work."""
    tag = hashlib.blake2b(credentials.client_secret.encode(), digest_size=8).hexdigest()
    return f"{credentials.client_id}:{tag}"


def _request_fingerprint(call: _Call[Any], handler: Handler[Any]) -> str:
    """What makes two requests the same for an Idempotency-Key: the call (whichever alias,
    trailing slash or, for v3, GET or POST reached it), its path parameters and its parameters as
    validated (a form's "2" and JSON's 2 alike). Keyed (HMAC under the server key): the parameters
    may hold a password in clear, which a plain hash kept for a day would let a copy of the
    database guess at hash speed."""
    canonical = json.dumps(
        [
            f"{handler.__module__}.{handler.__qualname__}",
            call.request.path_params,
            call.req.model_dump(mode="json", exclude_unset=True),
        ],
        sort_keys=True,
        default=str,
    )
    return call.runtime.keyring.digest(IDEMPOTENCY_FINGERPRINT + canonical)


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a call answers, turned into JSON only once its transaction is over: on SQLite the
    write lock is then not held while the body is encoded."""

    body: Any
    status_code: int
    headers: dict[str, str] | None = None

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status_code, headers=self.headers)


# Entered with a call's parameters before it runs and left once its answer is made (e.g. one
# large batch at a time); an ApiError raised on entering refuses the call.
Admission = Callable[[dict[str, Any]], AbstractAsyncContextManager[None]]


async def run_call(
    request: Request,
    model: type[M],
    handler: Handler[M],
    *,
    envelope: bool,
    status_code: int = 200,
    read_only: bool = False,
    quick: bool = False,
    prefetch: Prefetch[M] | None = None,
    admission: Admission | None = None,
) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        payload = await read_payload(request, runtime.settings.max_body_bytes)
    except ApiError as err:
        return error_response(err)
    if admission is not None:
        # Authenticated first: a caller without credentials never takes (or waits for) a turn.
        call = await run_in_threadpool(_authorize, request, runtime, payload, model, read_only)
        if isinstance(call, Response):
            return call
        async with AsyncExitStack() as admitted:
            try:
                await admitted.enter_async_context(admission(payload))
            except ApiError as err:
                return error_response(err)
            return await run_in_threadpool(
                _run_authorized, call, handler, envelope, status_code, read_only, prefetch
            )
    group: WriteGroup | None = getattr(request.app.state, "read_group" if read_only else "write_group", None)
    if quick and group is not None:
        # Quick calls on SQLite run on the event loop itself: handing them to a worker thread
        # (and the GIL hand-offs between 16 busy threads) cost more CPU than the call. Calls
        # waiting together share one transaction (db/group.py): writes share the commit.
        call = _authorize(request, runtime, payload, model, read_only)
        if isinstance(call, Response):
            return call
        try:
            answer: _Answer = await group.submit(
                functools.partial(_execute, call, handler, envelope=envelope, status_code=status_code)
            )
        except AuthFailed:
            return auth_failed_response()
        except ApiError as err:
            return error_response(err)
        except UNSTORABLE as exc:
            return error_response(refused_value(exc))
        return answer.response()
    return await run_in_threadpool(
        _run_sync, request, runtime, payload, model, handler, envelope, status_code, read_only, prefetch
    )


@dataclass
class _Call(Generic[M]):
    """An authenticated, validated call, ready to run in a transaction."""

    request: Request
    runtime: Runtime
    payload: dict[str, Any]
    account: Account  # a detached snapshot (accounts/authcache.py)
    req: M
    idempotency_key: str | None


def _authorize(
    request: Request, runtime: Runtime, payload: dict[str, Any], model: type[M], read_only: bool
) -> _Call[M] | Response:
    """Credentials, rate limit, authentication and parameters, before any write transaction: on
    SQLite that transaction holds the write lock, and checking credentials under it would
    serialise every call. A Response when the call stops here."""
    credentials = extract_credentials(request, payload)
    if credentials is None:
        return auth_failed_response()
    wait = runtime.limiter.check(_limit_key(credentials))
    if wait > 0:
        return error_response(
            ApiError(429, "Too many requests.", headers={"Retry-After": retry_after_header(wait)})
        )
    # A read-only call needs no Idempotency-Key record: repeating it is harmless. Any other call
    # honours it, a v3 write sent as GET too.
    key = None if read_only else request.headers.get("idempotency-key") or None
    try:
        known = accounts.authenticate_cached(runtime.keyring, credentials)
        if known is None:
            with runtime.db.read() as reader:
                known = accounts.authenticate(reader, runtime.keyring, credentials)
        req = validate(model, payload)
        req.prepare()
    except AuthFailed:
        return auth_failed_response()
    except ApiError as err:
        return error_response(err)
    return _Call(request, runtime, payload, known, req, key)


def _context(call: _Call[M], session: Session) -> ApiContext:
    # Attach the already loaded account to this transaction without reading it again.
    return ApiContext(
        session=session,
        account=raw.adopt(session, call.account),
        runtime=call.runtime,
        now=utcnow(),
        path_params=dict(call.request.path_params),
    )


def _execute(
    call: _Call[M],
    handler: Handler[M],
    session: Session,
    *,
    envelope: bool,
    status_code: int,
    prefetched: Any = None,
) -> _Answer:
    """Run the handler in the caller's transaction; raises ApiError for the caller to roll back."""
    ctx = _context(call, session)
    ctx.prefetched = prefetched
    runtime, account = call.runtime, ctx.account
    if call.idempotency_key:
        replay = idempotency.claim(
            session,
            account.id,
            call.idempotency_key,
            _request_fingerprint(call, handler),
            ttl=dt.timedelta(hours=runtime.settings.idempotency_ttl_hours),
        )
        if replay is not None:
            return _Answer(
                json.loads(idempotency.kept_answer(runtime.keyring, replay)),
                replay.response_status,
                {"Idempotent-Replayed": "true"},
            )
    result = handler(ctx, call.req)
    body: Any = ok(**result) if envelope and isinstance(result, dict) else result
    if call.idempotency_key:
        idempotency.store(
            session, runtime.keyring, account.id, call.idempotency_key, status_code, json.dumps(body)
        )
    return _Answer(body, status_code)


def _run_sync(
    request: Request,
    runtime: Runtime,
    payload: dict[str, Any],
    model: type[M],
    handler: Handler[M],
    envelope: bool,
    status_code: int,
    read_only: bool = False,
    prefetch: Prefetch[M] | None = None,
) -> Response:
    call = _authorize(request, runtime, payload, model, read_only)
    if isinstance(call, Response):
        return call
    return _run_authorized(call, handler, envelope, status_code, read_only, prefetch)


def _run_authorized(
    call: _Call[M],
    handler: Handler[M],
    envelope: bool,
    status_code: int,
    read_only: bool,
    prefetch: Prefetch[M] | None,
) -> Response:
    runtime = call.runtime
    try:
        prefetched = None
        if prefetch is not None:
            with runtime.db.read() as reader:
                prefetched = prefetch(_context(call, reader), call.req)
        # Read-only calls run in a read transaction: on SQLite they then skip the write lock.
        with runtime.db.read() if read_only else runtime.db.transaction() as session:
            answer = _execute(
                call, handler, session, envelope=envelope, status_code=status_code, prefetched=prefetched
            )
    except AuthFailed:
        return auth_failed_response()
    except ApiError as err:
        return error_response(err)
    except UNSTORABLE as exc:
        return error_response(refused_value(exc))
    return answer.response()


# A value the database cannot store: a text longer than its column, a number beyond its range
# (SQLite's driver raises OverflowError, PostgreSQL a DataError), text with NUL (PostgreSQL). The
# request models bound what they know; this is the net under them: the call's transaction is
# rolled back and it answers as any invalid value does, never a 500. Any other error of these
# classes (date arithmetic on stored data, a bad cast in a query) is a bug: `unstorable` gives
# None, and it stays a 500 with its traceback in the log.
UNSTORABLE = (DataError, OverflowError)
# PostgreSQL: string_data_right_truncation, numeric_value_out_of_range, character_not_in_repertoire,
# untranslatable_character.
_VALUE_STATES = {"22001", "22003", "22021", "22P05"}


def unstorable(exc: Exception) -> ApiError | None:
    """The answer to a value the database refused to store, or None for any other error."""
    orig = getattr(exc, "orig", None)
    if "NUL" in str(orig):
        return ApiError(301, "Invalid character in a value.")
    too_large_for_sqlite = isinstance(exc, OverflowError) and "SQLite INTEGER" in str(exc)
    if too_large_for_sqlite or getattr(orig, "sqlstate", None) in _VALUE_STATES:
        log.warning("value not storable: %s", exc)
        return ApiError(300, "Invalid value: a value is too long or too large.")
    return None


def refused_value(exc: Exception) -> ApiError:
    """`unstorable`'s answer; any other error goes on (a 500)."""
    answer = unstorable(exc)
    if answer is None:
        raise exc
    return answer


_PATH_PARAM = re.compile(r"{([^}]+)}")


def _request_schema(model: type[V3Request]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    # Nested models come as `$defs` with `#/$defs/...` references, which mean nothing inside an
    # OpenAPI document (Swagger UI stops rendering at the first one): inline them.
    defs = schema.pop("$defs", {})
    return _as_accepted(_inline_refs(schema, defs))  # type: ignore[no-any-return]


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# What the request models take besides the strict JSON types pydantic's schema names, as the
# vendor's PHP clients send them (kit/params.py: lax mode, coerce_numbers_to_str, _blank_is_none,
# _split_list). The document says so, so that a client (and schemathesis) knows these are valid.
# What Python's str.strip() takes away (\x1c-\x1f and \x85 too), besides ECMA's \s.
_SPACE = r"[\s\x1c-\x1f\x85]"
_TRUTH_WORDS = ("true", "false", "yes", "no", "on", "off", "t", "f", "y", "n")
_BOOLEAN_TEXT = {
    "type": "string",
    "pattern": f"^{_SPACE}*([01]|" + "|".join(_any_case(word) for word in _TRUTH_WORDS) + f"){_SPACE}*$",
}
_WHOLE_NUMBER_TEXT = {"type": "string", "pattern": f"^{_SPACE}*[+-]?[0-9][0-9_]*(\\.0*)?{_SPACE}*$"}
_BLANK = {"type": "string", "pattern": f"^{_SPACE}*$"}


def _as_accepted(node: Any) -> Any:
    """`node` (a JSON schema) widened to what the request models accept: a number where a string
    is asked (taken as its text), 0/1 and yes/no/on/off/true/false (any case) where a boolean is,
    a whole number written as text where an integer is, a comma-separated or JSON-array text where
    a list is, a number as a list item (taken as its text), and a blank value for an optional
    boolean, choice or number (not given)."""
    if isinstance(node, list):
        return [_as_accepted(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_accepted(value) for key, value in node.items()}
    kind = node.get("type")
    if kind == "string" and "enum" not in node and "const" not in node:
        node["type"] = ["string", "number"]
    elif kind == "boolean":
        node = {"anyOf": [{"type": "boolean"}, {"enum": [0, 1]}, _BOOLEAN_TEXT]}
    elif kind == "integer":
        node = {"anyOf": [node, _WHOLE_NUMBER_TEXT]}
    elif kind == "array" and node.get("items", {}).get("type") in (["string", "number"], "string"):
        node = {
            "anyOf": [
                {**node, "items": {"type": ["string", "number"]}},
                {"type": "string"},
            ]
        }
    forms = node.get("anyOf")
    if isinstance(forms, list) and {"type": "null"} in forms and _BLANK not in forms:
        taken_as_text = any(
            form.get("type") in ("string", ["string", "number"]) and "enum" not in form for form in forms
        )
        if not taken_as_text:
            node["anyOf"] = [*forms, _BLANK]
    return node


def _inline_refs(node: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and depth < 8:
            target = dict(defs.get(ref.removeprefix("#/$defs/"), {}))
            target.pop("title", None)
            return _inline_refs(target, defs, depth + 1)
        return {key: _inline_refs(value, defs, depth) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, defs, depth) for item in node]
    return node


def _body_doc(model: type[V3Request]) -> dict[str, Any]:
    schema = _request_schema(model)
    return {
        "requestBody": {
            "required": False,
            "content": {
                # `[]`: PHP's json_encode of an empty parameter array (no parameters).
                "application/json": {"schema": {"anyOf": [schema, {"type": "array", "maxItems": 0}]}},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }


def _object_schema(prop: dict[str, Any]) -> dict[str, Any] | None:
    """The object a parameter takes (itself, or one of its `anyOf` forms), or None."""
    forms: list[dict[str, Any]] = [prop, *prop.get("anyOf", [])]
    return next((form for form in forms if form.get("type") == "object"), None)


def _query_doc(model: type[V3Request]) -> list[dict[str, Any]]:
    schema = _request_schema(model)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        param = {"name": name, "in": "query", "required": name in required, "schema": prop}
        as_object = _object_schema(prop)
        if as_object is not None:
            # `filter[email]=x` (PHP's http_build_query): OpenAPI's default form style would send
            # the object's keys as parameters of their own (`?email=x`), which no call reads.
            param.update(schema=as_object, style="deepObject", explode=True)
            if any("string" in str(form.get("type")) for form in prop.get("anyOf", [])):
                param["description"] = f"Also accepted as JSON text: `{name}={{...}}`."
        params.append(param)
    return params


def _path_doc(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]


SECURITY: list[dict[str, list[str]]] = [{"ClientId": [], "ClientSecret": []}]

# The Coupontools error envelope (errors.error_body): one code and description, or several.
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {
            "type": "object",
            "required": ["status", "errors"],
            "properties": {
                "status": {"const": "failed"},
                "errors": {
                    "type": "object",
                    "required": ["error_message", "error_code"],
                    "properties": {
                        "error_message": {"type": "string"},
                        "error_message_description": {"type": "array", "items": {"type": "string"}},
                        "error_code": {
                            "anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]
                        },
                    },
                },
            },
        }
    },
}
# What any API call may answer besides its success (errors.CODE_STATUS, kit/body.py, app.py).
_ERROR_STATUSES = {
    "400": "The body was not sent in full (code 400).",
    "401": "Client ID or secret missing or not correct (code 1000).",
    "403": "Not allowed for this account (codes 101, 102).",
    "404": "The object asked for does not exist or is not this account's (codes 5xx).",
    "409": "Not allowed in the object's current state (codes 307, 308).",
    "413": "The body is larger than the server takes (code 413).",
    "415": "The body is neither JSON nor a form (code 415).",
    "422": "A parameter is missing, invalid or not allowed (codes 103, 104, 200, 300-306, 309).",
    "429": "Too many requests: try again after Retry-After seconds (code 429).",
}


def _error_responses() -> dict[str, Any]:
    answers: dict[str, Any] = {
        status: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
        for status, text in _ERROR_STATUSES.items()
    }
    answers["429"]["headers"] = {"Retry-After": {"required": True, "schema": {"type": "string"}}}
    return answers


# The v3 success envelope (errors.ok); v4 answers bare JSON of each call's own shape.
_V3_OK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "object", "required": ["status"], "properties": {"status": {"const": "OK"}}}
    },
}


def _responses_doc(status_code: int, *, envelope: bool) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "Success."}
    if envelope:
        success["content"] = {"application/json": {"schema": _V3_OK_SCHEMA}}
    return {"responses": {str(status_code): success, **_error_responses()}}


def v3_endpoint(
    router: APIRouter,
    paths: list[str],
    model: type[M],
    *,
    summary: str,
    description: str = "",
    read_only: bool = False,
    quick: bool = False,
    admission: Admission | None = None,
) -> Callable[[Handler[M]], Handler[M]]:
    """Register a Coupontools action call on every path (aliases answer the same), POST and GET.

    `read_only` calls (handlers that never write) run in a read transaction. `quick` calls (a
    few indexed statements, bounded work) may run on the event loop on SQLite. `admission`: see
    Admission."""

    def register(handler: Handler[M]) -> Handler[M]:
        async def endpoint(request: Request) -> Response:
            return await run_call(
                request, model, handler, envelope=True, read_only=read_only, quick=quick, admission=admission
            )

        DIRECT_ENDPOINTS.add(endpoint)
        doc = description or (handler.__doc__ or "").strip()
        for path in paths:
            name = handler.__name__ + path.replace("/", "_")
            router.add_api_route(
                path,
                endpoint,
                methods=["POST"],
                name=name,
                summary=summary,
                description=doc,
                openapi_extra={
                    **_body_doc(model),
                    **_responses_doc(200, envelope=True),
                    "security": SECURITY,
                },
                response_model=None,
            )
            router.add_api_route(
                path,
                endpoint,
                methods=["GET"],
                name=name + "_get",
                summary=summary + " (GET)",
                description=doc,
                openapi_extra={
                    "parameters": _query_doc(model),
                    **_responses_doc(200, envelope=True),
                    "security": SECURITY,
                },
                response_model=None,
            )
            if read_only:
                # HEAD is for reading: a link checker or a proxy probing a write call's address
                # must not validate, void or create anything (405 with Allow: GET, POST).
                add_head_route(router, path, endpoint, name)
        return handler

    return register


def v4_endpoint(
    router: APIRouter,
    method: str,
    path: str,
    model: type[M],
    *,
    summary: str,
    status_code: int = 200,
    description: str = "",
    read_only: bool = False,
    prefetch: Prefetch[M] | None = None,
) -> Callable[[Handler[M]], Handler[M]]:
    """Register a REST call answering bare JSON (v4 style); see `Prefetch` for `prefetch`."""

    def register(handler: Handler[M]) -> Handler[M]:
        async def endpoint(request: Request) -> Response:
            return await run_call(
                request,
                model,
                handler,
                envelope=False,
                status_code=status_code,
                read_only=read_only,
                prefetch=prefetch,
            )

        extra: dict[str, Any] = {"security": SECURITY, **_responses_doc(status_code, envelope=False)}
        params = _path_doc(path)
        if method in ("GET", "DELETE"):
            params += _query_doc(model)
        else:
            extra.update(_body_doc(model))
        if params:
            extra["parameters"] = params
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            name=f"{handler.__name__}_{method.lower()}",
            summary=summary,
            description=description or (handler.__doc__ or "").strip(),
            status_code=status_code,
            openapi_extra=extra,
            response_model=None,
        )
        if method == "GET":
            add_head_route(router, path, endpoint, handler.__name__)
        return handler

    return register


def add_head_route(router: APIRouter, path: str, endpoint: Callable[[Request], Any], name: str) -> None:
    """HEAD beside a GET: the GET's status and headers (the server sends no body). Its own route,
    left out of the OpenAPI document, which would list the call twice under one operation ID."""
    router.add_api_route(
        path, endpoint, methods=["HEAD"], name=name + "_head", include_in_schema=False, response_model=None
    )
