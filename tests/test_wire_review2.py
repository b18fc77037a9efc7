"""The second wire review: what PHP, Java and .NET clients send reaches the calls as sent (keyed
`name[key]=` parameters), and the protocol edges answer as HTTP says (Allow on 405, HEAD)."""

from __future__ import annotations

import json

import httpx2
import pytest

from conftest import TestAccount
from helpers import assert_error
from loyalty_fixtures import CARDS, create_card

CAMPAIGNS = "/v4/campaigns"
FORM = "application/x-www-form-urlencoded"


# --- keyed parameters: `filter[email]=x` ---------------------------------------------------------


def test_php_keyed_parameters_filter_and_page_the_users_of_a_card(account: TestAccount) -> None:
    """PHP's http_build_query(['filter' => ['email' => ...], 'pagination' => ['page' => 2]]) and
    Guzzle send `filter[email]=…&pagination[page]=2`: both were refused with 300 (read as lists)."""
    card = create_card(account, type="points")
    base = f"{CARDS}/{card['id']}/stats"
    users = [{"first_name": f"U{i:03}", "email": f"u{i:03}@example.com"} for i in range(101)]
    bulk = account.client.post(base + "/bulk", json={"users": users}, headers=account.headers)
    assert bulk.status_code == 201, bulk.text

    filtered = account.client.get(base + "?filter[email]=u042%40example.com", headers=account.headers)
    assert filtered.status_code == 200, filtered.text
    assert [u["first_name"] for u in filtered.json()] == ["U042"]
    page2 = account.client.get(base + "?pagination[page]=2", headers=account.headers)
    assert page2.status_code == 200, page2.text
    assert [u["first_name"] for u in page2.json()] == ["U100"]
    both = account.client.get(
        base, params={"filter[first_name]": "U100", "pagination[page]": "1"}, headers=account.headers
    )
    assert [u["first_name"] for u in both.json()] == ["U100"]
    # A key no filter has is refused as before, and JSON text is still read.
    assert_error(account.client.get(base + "?filter[age]=3", headers=account.headers), 422, 302)
    as_text = account.client.get(
        base, params={"filter": json.dumps({"email": "u007@example.com"})}, headers=account.headers
    )
    assert [u["first_name"] for u in as_text.json()] == ["U007"]


def test_numbered_bracket_parameters_still_make_a_list(account: TestAccount) -> None:
    created = account.client.post(
        CARDS,
        content=b"name=Listed&type=stamp&join_fields[0]=email&join_fields[1]=phone&join_fields[]=first_name",
        headers={**account.headers, "Content-Type": FORM},
    )
    assert created.status_code == 201, created.text
    assert sorted(created.json()["join_fields"]) == ["email", "first_name", "phone"]


def test_the_openapi_document_sends_object_parameters_in_brackets(http: httpx2.Client) -> None:
    """OpenAPI's default style for an object query parameter (form, exploded) sends `?email=x`,
    which no call reads: the list came back unfiltered."""
    spec = http.get("/openapi.json").json()
    parameters = spec["paths"][CARDS + "/{id}/stats"]["get"]["parameters"]
    by_name = {p["name"]: p for p in parameters}
    for name in ("filter", "pagination"):
        assert by_name[name]["style"] == "deepObject"
        assert by_name[name]["explode"] is True
        assert by_name[name]["schema"]["type"] == "object"
    assert "style" not in by_name["include_voided"]


# --- 405 and HEAD ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (CAMPAIGNS, "GET, HEAD, POST"),
        (CAMPAIGNS + "/", "GET, HEAD, POST"),
        ("/v3/coupon/list", "GET, HEAD, POST"),
        ("/v4/campaigns/cam_1", "DELETE, GET, HEAD, PATCH"),
    ],
)
def test_a_405_names_every_method_of_the_path(http: httpx2.Client, path: str, allowed: str) -> None:
    response = http.put(path)
    assert_error(response, 405, 405)
    assert response.headers["allow"] == allowed


def test_a_405_page_names_the_methods_too(http: httpx2.Client) -> None:
    response = http.put("/dashboard/login", headers={"Accept": "text/html"})
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["allow"] == "GET, POST"


def test_head_answers_an_api_get_without_a_body(account: TestAccount) -> None:
    for path in (CAMPAIGNS, "/v3/coupon/list", "/v3/coupon/list/"):
        got = account.client.get(path, headers=account.headers)
        head = account.client.head(path, headers=account.headers)
        assert head.status_code == got.status_code == 200, (path, head.status_code)
        assert head.content == b""
        assert head.headers["content-type"] == "application/json"
        assert head.headers["content-length"] == got.headers["content-length"]
    assert account.client.head(CAMPAIGNS).status_code == 401
