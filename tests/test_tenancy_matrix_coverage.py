"""The tenancy matrix covers the API: every operation of the OpenAPI document that takes an
object's ID (in its path, or as one of the ID parameters below) has a case in tests/tenancy.py or a
tests/tenancy_<domain>.py module, so a new route cannot skip the check that another account's ID
answers like a missing one (test_foundation_safety_net.py walks the cases)."""

from __future__ import annotations

import re
from typing import Any

from tenancy import TenancyCase, all_cases

METHODS = ("get", "post", "put", "patch", "delete")

# Parameters that name an object of an account (body parameters, or query parameters of a GET).
ID_PARAMETERS = {
    "campaign",
    "campaigns",
    "category",
    "couponsession",
    "couponsessions",
    "directory",
    "loyalty_cards",
    "loyaltycard",
    "parent",
    "single_use_code",
    "subaccount",
    "template",
    "user",
    "webhook",
}

# Operations the matrix does not apply to, as (method, path shape, parameter or "path<n>" for the
# n-th ID in the path) -> the reason. Empty today: every operation taking an ID has a case. The
# GET twin of a v3 call needs none of its own (one handler answers GET and POST; the walk asks each
# POST case both ways), and routes taking no tenant object (lists, create, integrations, privacy by
# e-mail) have no ID to check.
NOT_APPLICABLE: dict[tuple[str, str, str], str] = {}


def _shape(path: str) -> str:
    return re.sub(r"{\w+}", "{}", path)


def _key(case: TenancyCase) -> tuple[str, str, str]:
    if case.param:
        return case.method, _shape(case.path), case.param
    placeholders = re.findall(r"{(\w+)}", case.path)
    return case.method, _shape(case.path), f"path{placeholders.index('id')}"


def _parameters(spec: dict[str, Any], method: str, operation: dict[str, Any]) -> set[str]:
    names = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
    for content in operation.get("requestBody", {}).get("content", {}).values():
        schema = content.get("schema", {})
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        names |= set(schema.get("properties", {}))
    return names


def required_keys(spec: dict[str, Any]) -> set[tuple[str, str, str]]:
    required = set()
    for path, item in spec["paths"].items():
        if not path.startswith(("/v3/", "/v4/")):
            continue
        for method, operation in item.items():
            if method not in METHODS:
                continue
            if method == "get" and "post" in item and "{" not in path:
                continue  # the GET twin of a v3 call: asked by its POST case
            for index, _name in enumerate(re.findall(r"{(\w+)}", path)):
                required.add((method.upper(), _shape(path), f"path{index}"))
            for name in _parameters(spec, method, operation) & ID_PARAMETERS:
                required.add((method.upper(), _shape(path), name))
    return required


def test_every_operation_taking_an_id_has_a_tenancy_case(app: Any) -> None:
    required = required_keys(app.openapi())
    covered = {_key(case) for case in all_cases()}
    missing = sorted(required - covered - set(NOT_APPLICABLE))
    assert not missing, "operations taking an ID with no tenancy case (tests/tenancy.py):\n" + "\n".join(
        f"{m} {p} [{what}]" for m, p, what in missing
    )
    stale = sorted(set(NOT_APPLICABLE) - required)
    assert not stale, f"allow-listed operations the API no longer has: {stale}"
