"""CONTRACT §1: every credential style and body encoding reaches the same call, and every
failure answers in the Coupontools envelope."""

from __future__ import annotations

import json

import httpx2
import pytest

from conftest import TestAccount
from helpers import assert_error, assert_ok

PATH = "/v4/subaccount/list"


def _styles(acc: object) -> dict[str, dict[str, object]]:
    cid, secret = acc.client_id, acc.client_secret  # type: ignore[attr-defined]
    return {
        "headers": {"headers": {"X-Client-Id": cid, "X-Client-Secret": secret}, "fields": {}},
        "headers-lowercase": {"headers": {"x-client-id": cid, "x-client-secret": secret}, "fields": {}},
        "headers-v4": {"headers": {"x-api-key": cid, "x-api-secret": secret}, "fields": {}},
        "body": {"headers": {}, "fields": {"client_id": cid, "client_secret": secret}},
    }


@pytest.mark.parametrize("style", ["headers", "headers-lowercase", "headers-v4", "body"])
@pytest.mark.parametrize("encoding", ["json", "form", "multipart", "query", "json-no-content-type"])
def test_every_credential_style_and_encoding_gets_the_same_answer(
    http: httpx2.Client, account: object, subaccount: object, style: str, encoding: str
) -> None:
    spec = _styles(account)[style]
    headers = dict(spec["headers"])  # type: ignore[arg-type]
    fields = dict(spec["fields"])  # type: ignore[arg-type]
    if encoding == "json":
        response = http.post(PATH, json=fields, headers=headers)
    elif encoding == "form":
        response = http.post(PATH, data=fields, headers=headers)
    elif encoding == "multipart":
        response = http.post(
            PATH, files={k: (None, str(v)) for k, v in fields.items()} or {"x": (None, "")}, headers=headers
        )
    elif encoding == "query":
        response = http.get(PATH, params=fields, headers=headers)
    else:
        response = http.post(PATH, content=json.dumps(fields).encode(), headers=headers)
    body = assert_ok(response)
    assert body["amount_of_subaccounts"] == "1"
    assert [s["ID"] for s in body["subaccounts"]] == [f"sub_{subaccount.id}"]  # type: ignore[attr-defined]


def test_headers_win_over_body_credentials(
    http: httpx2.Client, account: object, other_account: object
) -> None:
    response = http.post(
        PATH,
        headers={"X-Client-Id": account.client_id, "X-Client-Secret": account.client_secret},  # type: ignore[attr-defined]
        json={"client_id": other_account.client_id, "client_secret": "wrong"},  # type: ignore[attr-defined]
    )
    assert_ok(response)


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Client-Id": "123"}, {"X-Client-Id": "123", "X-Client-Secret": "nope"}],
    ids=["none", "id-only", "unknown"],
)
def test_missing_or_wrong_credentials_answer_exactly_like_the_vendor(
    http: httpx2.Client, headers: dict[str, str]
) -> None:
    response = http.post(PATH, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "status": {
            "status": "failed",
            "errors": {
                "error_code": 1000,
                "error_message": "HTTP/1.0 401 Unauthorized. Client ID or Secret not correct.",
            },
        }
    }


def test_wrong_secret_of_a_real_client_is_refused(http: httpx2.Client, account: object) -> None:
    response = http.post(
        PATH, headers={"X-Client-Id": account.client_id, "X-Client-Secret": account.client_secret + "x"}
    )  # type: ignore[attr-defined]
    assert response.status_code == 401


def test_malformed_json_is_code_300(http: httpx2.Client, account: object) -> None:
    response = http.post(
        PATH,
        content=b"{not json",
        headers={**account.headers, "Content-Type": "application/json"},  # type: ignore[attr-defined]
    )
    assert_error(response, 422, 300)


def test_empty_json_body_means_no_parameters(http: httpx2.Client, account: object) -> None:
    response = http.post(PATH, content=b"", headers={**account.headers, "Content-Type": "application/json"})  # type: ignore[attr-defined]
    assert_ok(response)


def test_empty_json_array_body_means_no_parameters(http: httpx2.Client, account: object) -> None:
    # The vendor's PHP sample for this call sends json_encode([]) of an empty $data array: "[]".
    response = http.post(PATH, content=b"[]", headers={**account.headers, "Content-Type": "application/json"})  # type: ignore[attr-defined]
    assert_ok(response)
    assert_error(
        http.post(PATH, content=b"[1]", headers={**account.headers, "Content-Type": "application/json"}),  # type: ignore[attr-defined]
        422,
        300,
    )


def test_oversized_body_is_413_in_the_envelope(http: httpx2.Client, account: object) -> None:
    response = http.post(PATH, content=b"a=" + b"x" * (1024 * 1024 + 10), headers=account.headers)  # type: ignore[attr-defined]
    assert_error(response, 413, 413)


def test_a_trailing_slash_is_answered_not_redirected(http: httpx2.Client, account: object) -> None:
    # PHP's curl does not follow a redirect of a POST: the call itself must answer.
    response = http.post(PATH + "/", json={}, headers=account.headers)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    assert response.json() == assert_ok(http.post(PATH, json={}, headers=account.headers))  # type: ignore[attr-defined]
    assert_error(http.post("/v3/no/such/call/"), 404, 404)


def test_a_trailing_slash_on_a_rest_path_with_parameters_is_answered_not_redirected(
    http: httpx2.Client, account: object
) -> None:
    # Starlette answered `/v4/campaigns/cam_1/` with an empty 307 the client had to follow.
    headers = account.headers  # type: ignore[attr-defined]
    created = http.post("/v4/campaigns/", json={"name": "Slash"}, headers=headers)
    assert created.status_code == 201, created.text
    campaign = created.json()["id"]
    got = http.get(f"/v4/campaigns/{campaign}/", headers=headers)
    assert got.status_code == 200, got.text
    assert got.json() == http.get(f"/v4/campaigns/{campaign}", headers=headers).json()
    patched = http.patch(f"/v4/campaigns/{campaign}//", json={"name": "Renamed"}, headers=headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Renamed"
    assert_error(http.get("/v4/campaigns/cam_99999999/", headers=headers), 404, 502)
    assert_error(http.get("/v4/no/such/thing/", headers=headers), 404, 404)


def test_unknown_route_is_404_in_the_envelope(http: httpx2.Client) -> None:
    assert_error(http.post("/v3/no/such/call"), 404, 404)


def test_wrong_method_is_405_in_the_envelope(http: httpx2.Client) -> None:
    assert_error(http.delete(PATH), 405, 405)


def test_unknown_parameters_are_ignored(http: httpx2.Client, account: object) -> None:
    assert_ok(http.post(PATH, json={"whatever": [1, 2], "nested": {"a": 1}}, headers=account.headers))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("raw", "blocked"), [("1", "1"), ("true", "1"), ("0", "0"), ("false", "0")])
def test_form_strings_are_booleans(
    http: httpx2.Client, account: object, subaccount: object, raw: str, blocked: str
) -> None:
    ref = f"sub_{subaccount.id}"  # type: ignore[attr-defined]
    response = http.post(
        "/v4/subaccount/update", data={"subaccount": ref, "block": raw}, headers=account.headers
    )  # type: ignore[attr-defined]
    assert assert_ok(response)["subaccount"]["blocked"] == blocked


def test_json_null_means_not_given(http: httpx2.Client, account: object, subaccount: object) -> None:
    ref = f"sub_{subaccount.id}"  # type: ignore[attr-defined]
    headers = account.headers  # type: ignore[attr-defined]
    assert_ok(
        http.post("/v4/subaccount/update", json={"subaccount": ref, "first_name": "Ann"}, headers=headers)
    )
    body = assert_ok(
        http.post("/v4/subaccount/update", json={"subaccount": ref, "first_name": None}, headers=headers)
    )
    assert body["subaccount"]["first_name"] == "Ann"
    missing = http.post("/v4/subaccount/update", json={"subaccount": None}, headers=headers)
    assert_error(missing, 422, 200)


def test_repeated_key_last_value_wins(http: httpx2.Client, account: object, subaccount: object) -> None:
    ref = f"sub_{subaccount.id}"  # type: ignore[attr-defined]
    response = http.post(
        "/v4/subaccount/update",
        content=f"subaccount={ref}&first_name=A&first_name=B".encode(),
        headers={**account.headers, "Content-Type": "application/x-www-form-urlencoded"},  # type: ignore[attr-defined]
    )
    assert assert_ok(response)["subaccount"]["first_name"] == "B"


def test_get_with_query_string_is_accepted(http: httpx2.Client, account: object, subaccount: object) -> None:
    response = http.get(
        "/v3/subaccount/info", params={"subaccount": f"sub_{subaccount.id}"}, headers=account.headers
    )  # type: ignore[attr-defined]
    assert assert_ok(response)["subaccount"]["ID"] == f"sub_{subaccount.id}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("day", ["0001-01-01", "0999-01-01", "0099-12-31"])
def test_a_date_of_an_early_year_is_shown_with_four_digits(account: TestAccount, day: str) -> None:
    """`yyyy-MM-dd` always: 0999-01-01 was shown as 999-01-01 (strftime does not pad the year),
    which the same call refused when it was sent back (303)."""
    created = assert_ok(
        account.call(
            "/v4/subaccount/create",
            email=f"early-{day}-{account.id}@example.com",
            password="password123",
            expiry_date=day,
        )
    )["subaccount"]
    assert created["expiry_date"] == day
    sent_back = account.call(
        "/v4/subaccount/update", subaccount=created["ID"], expiry_date=created["expiry_date"]
    )
    assert assert_ok(sent_back)["subaccount"]["expiry_date"] == day
    shown = assert_ok(account.call("/v4/subaccount", subaccount=created["ID"]))["subaccount"]
    assert shown["expiry_date"] == day
