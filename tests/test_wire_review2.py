"""The second wire review: the protocol edges answer as HTTP says (Allow on 405, HEAD)."""

from __future__ import annotations

import httpx2
import pytest

from conftest import TestAccount
from helpers import assert_error

CAMPAIGNS = "/v4/campaigns"


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
