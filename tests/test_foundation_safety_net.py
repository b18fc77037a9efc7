"""The safety net every capability extends by adding routes and tenancy cases:
- every operation of the OpenAPI spec that declares `security` refuses missing and wrong
  credentials exactly as the vendor does (HTTP 401, code 1000);
- another account's ID answers exactly like a missing ID (tests/tenancy.py);
- the spec itself: security schemes, unique operation IDs, both body encodings, Swagger UI."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx2
import pytest

from conftest import TestAccount
from opencoupon.errors import AUTH_FAILED_BODY
from opencoupon.runtime import Runtime
from tenancy import TenancyCase, all_cases

METHODS = ("get", "post", "put", "patch", "delete")


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


@pytest.fixture(scope="module")
def spec(app: Any) -> dict[str, Any]:
    result: dict[str, Any] = app.openapi()
    return result


def _fill(path: str) -> str:
    return re.sub(r"{[^}]+}", "1", path)


def test_every_secured_route_refuses_missing_and_wrong_credentials(
    spec: dict[str, Any], http: httpx2.Client, account: TestAccount
) -> None:
    secured = [(p, m) for p, m, op in _operations(spec) if op.get("security")]
    assert len(secured) >= 12
    attempts = {
        "none": {},
        "unknown client": {"X-Client-Id": "123456789", "X-Client-Secret": "not-a-secret"},
        "wrong secret": {
            "X-Client-Id": account.client_id,
            "X-Client-Secret": account.client_secret[:-1] + "#",
        },
        "id only": {"X-Client-Id": account.client_id},
        "v4 wrong secret": {"x-api-key": account.client_id, "x-api-secret": "nope"},
    }
    failures = []
    for path, method in secured:
        for label, headers in attempts.items():
            response = http.request(method.upper(), _fill(path), headers=headers)
            if response.status_code != 401 or response.json() != AUTH_FAILED_BODY:
                failures.append(
                    f"{method.upper()} {path} [{label}] -> {response.status_code} {response.text[:200]}"
                )
        # Credentials in the body are checked the same way.
        if method != "get":
            response = http.request(
                method.upper(), _fill(path), json={"client_id": account.client_id, "client_secret": "wrong"}
            )
            if response.status_code != 401 or response.json() != AUTH_FAILED_BODY:
                failures.append(
                    f"{method.upper()} {path} [body] -> {response.status_code} {response.text[:200]}"
                )
    assert not failures, "\n".join(failures)


def test_every_api_route_declares_security(spec: dict[str, Any]) -> None:
    unsecured = [
        f"{m.upper()} {p}"
        for p, m, op in _operations(spec)
        if p.startswith(("/v3/", "/v4/")) and not op.get("security")
    ]
    assert not unsecured


def _send(caller: httpx2.Client, method: str, path: str, params: dict[str, Any], headers: Any) -> Any:
    if method in ("GET", "DELETE"):
        return caller.request(method, path, params=params, headers=headers)
    return caller.request(method, path, json=params, headers=headers)


def _query_names(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.name)
def test_another_accounts_id_answers_like_a_missing_one(
    case: TenancyCase,
    spec: dict[str, Any],
    runtime: Runtime,
    account: TestAccount,
    other_account: TestAccount,
    subaccount: TestAccount,
) -> None:
    """Another master account, and the owner's own subaccount (a subaccount reaches only its own
    objects), get exactly the answer a missing ID gets; without credentials, or with the owner's
    revoked secret, the call answers 401 like any other; the owner does reach the object."""
    ids = case.make(runtime, account)
    real_id = ids["id"]
    missing_id = case.missing_for(real_id)
    assert missing_id != real_id
    # A v3 call answers GET (query) as POST (JSON): ask both ways, when the parameters fit a query.
    methods = [case.method]
    if (
        case.method == "POST"
        and "{" not in case.path
        and case.param in _query_names(spec["paths"].get(case.path, {}).get("get", {}))
        and all(isinstance(v, str | int) for v in case.request(ids, real_id)[2].values())
    ):
        methods.append("GET")
    for caller in (other_account, subaccount):
        for method in methods:
            _, foreign_path, foreign_params = case.request(ids, real_id)
            _, missing_path, missing_params = case.request(ids, missing_id)
            foreign = _send(caller.client, method, foreign_path, foreign_params, caller.headers)
            missing = _send(caller.client, method, missing_path, missing_params, caller.headers)
            who = "subaccount" if caller is subaccount else "other account"
            assert foreign.status_code == missing.status_code, (who, method, foreign.text, missing.text)
            if case.refusal_status is None:
                assert foreign.status_code >= 400, (who, method, foreign.text)
            else:
                assert foreign.status_code == case.refusal_status, (who, method, foreign.text)
            # An answer may echo the ID it was given (one error per item); nothing else may differ.
            echoed = foreign.content.replace(f'"{real_id}"'.encode(), b'"<id>"')
            assert echoed == missing.content.replace(f'"{missing_id}"'.encode(), b'"<id>"'), (who, method)
    method, path, params = case.request(ids, real_id)
    anonymous = _send(account.client, method, path, params, {})
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json() == AUTH_FAILED_BODY
    # The owner does reach it (the case really names an object).
    owner = _send(account.client, method, path, params, account.headers)
    assert owner.status_code < 300, owner.text
    # A secret rotated out with no grace (a leaked key) reaches nothing, not even its own objects.
    with runtime.db.transaction() as session:
        from opencoupon.accounts import service as accounts
        from opencoupon.models import Account

        owner_row = session.get(Account, account.id)
        assert owner_row is not None
        accounts.rotate_secret(session, runtime.keyring, owner_row, dt.timedelta(0))
    revoked = _send(account.client, method, path, params, account.headers)
    assert revoked.status_code == 401, revoked.text
    assert revoked.json() == AUTH_FAILED_BODY


def test_security_schemes_are_declared(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ClientId"] == {
        **schemes["ClientId"],
        "type": "apiKey",
        "in": "header",
        "name": "X-Client-Id",
    }
    assert schemes["ClientSecret"] == {
        **schemes["ClientSecret"],
        "type": "apiKey",
        "in": "header",
        "name": "X-Client-Secret",
    }
    for path, method, op in _operations(spec):
        for requirement in op.get("security", []):
            assert set(requirement) <= set(schemes), (method, path)


def test_every_reference_in_the_spec_resolves(spec: dict[str, Any]) -> None:
    """A `$ref` that points nowhere (e.g. pydantic's `#/$defs/...`) stops Swagger UI rendering."""

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for item in node for r in refs(item)]
        return []

    for ref in refs(spec):
        assert ref.startswith("#/components/"), ref
        target: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict), ref
            assert part in target, ref
            target = target[part]


def test_operation_ids_are_unique(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(spec)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_v3_call_documents_json_and_form_bodies(spec: dict[str, Any]) -> None:
    v3_paths = [p for p in spec["paths"] if p.startswith("/v3/")]
    assert v3_paths
    for path in v3_paths:
        post = spec["paths"][path].get("post")
        assert post is not None, path
        content = post["requestBody"]["content"]
        assert {"application/json", "application/x-www-form-urlencoded"} <= set(content), path
    # Every operation with a body, v3 or v4, documents both encodings.
    for path, method, op in _operations(spec):
        if "requestBody" in op:
            assert {"application/json", "application/x-www-form-urlencoded"} <= set(
                op["requestBody"]["content"]
            ), (
                method,
                path,
            )


def test_openapi_json_is_served(http: httpx2.Client, spec: dict[str, Any]) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    assert response.json()["paths"].keys() == spec["paths"].keys()
    assert "securitySchemes" in response.json()["components"]


def test_swagger_ui_is_self_hosted(http: httpx2.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert "/static/swagger/swagger-ui-bundle.js" in page.text
    assert "/static/swagger/swagger-ui.css" in page.text
    assert "/openapi.json" in page.text
    external = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", page.text)
    assert external == []
    js = http.get("/static/swagger/swagger-ui-bundle.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert len(js.content) > 500_000
    css = http.get("/static/swagger/swagger-ui.css")
    assert css.status_code == 200
    assert "text/css" in css.headers["content-type"]
