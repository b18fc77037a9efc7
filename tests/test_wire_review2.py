"""The second wire review: what PHP, Java and .NET clients send reaches the calls as sent (keyed
`name[key]=` parameters, a declared form charset, a byte order mark), and the protocol edges answer
as HTTP says (Allow on 405, HEAD, Content-Encoding, a client that hangs up)."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import time
from typing import Any

import httpx2
import pytest

from conftest import LiveServer, TestAccount
from helpers import assert_error
from loyalty_fixtures import CARDS, create_card, reward_campaign
from opencoupon.runtime import Runtime

CAMPAIGNS = "/v4/campaigns"
FORM = "application/x-www-form-urlencoded"
BOM = b"\xef\xbb\xbf"


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


def test_php_nested_form_arrays_reach_the_call_as_lists_of_objects(
    account: TestAccount, runtime: Runtime
) -> None:
    """PHP's http_build_query(['rewards' => [['threshold' => 8, 'campaign' => 'cam_2']]]) sends
    `rewards[0][threshold]=8&rewards[0][campaign]=cam_2`: only one bracket level was read, so the
    card was created (201) and patched (200) without its rewards, and a bulk of users sent as
    `users[0][first_name]=A` answered "Missing parameter: users"."""
    cookie = reward_campaign(runtime, account.id, "Free cookie")
    coffee = reward_campaign(runtime, account.id, "Free coffee")
    form = {**account.headers, "Content-Type": FORM}
    created = account.client.post(
        CARDS,
        content=(
            f"name=F&type=stamp&stamps_per_reward=8&rewards%5B0%5D%5Bthreshold%5D=4"
            f"&rewards%5B0%5D%5Bcampaign%5D={cookie}&rewards[1][threshold]=8&rewards[1][campaign]={coffee}"
            f"&rewards[1][name]=Big+coffee"
        ).encode(),
        headers=form,
    )
    assert created.status_code == 201, created.text
    card = created.json()
    assert card["rewards"] == [
        {"threshold": 4, "campaign": cookie, "name": "Free cookie"},
        {"threshold": 8, "campaign": coffee, "name": "Big coffee"},
    ]
    patched = account.client.patch(
        f"{CARDS}/{card['id']}",
        content=f"rewards[0][threshold]=6&rewards[0][campaign]={coffee}".encode(),
        headers=form,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["rewards"] == [{"threshold": 6, "campaign": coffee, "name": "Free coffee"}]
    in_body = account.client.post(
        f"{CARDS}/{card['id']}/stats/bulk",
        content=b"users[0][first_name]=A&users[0][email]=a%40example.com&users[1][first_name]=B",
        headers=form,
    )
    assert in_body.status_code == 201, in_body.text
    # The query string of a call is read the same way.
    in_query = account.client.post(
        f"{CARDS}/{card['id']}/stats/bulk?users[0][first_name]=C&users[0][phone]=%2B1555",
        headers=account.headers,
    )
    assert in_query.status_code == 201, in_query.text
    listed = account.client.get(f"{CARDS}/{card['id']}/stats", headers=account.headers).json()
    assert [(u["first_name"], u["email"] or "", u["phone"] or "") for u in listed] == [
        ("A", "a@example.com", ""),
        ("B", "", ""),
        ("C", "", "+1555"),
    ]
    # Indexes out of the 0, 1, 2... run make an object, as PHP's json_encode shows them:
    # not a list of rewards (300), never rewards silently dropped.
    assert_error(
        account.client.patch(
            f"{CARDS}/{card['id']}",
            content=f"rewards[1][threshold]=6&rewards[1][campaign]={coffee}".encode(),
            headers=form,
        ),
        422,
        300,
    )


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


# --- charsets and byte order marks -----------------------------------------------------------------


def _campaign_name(account: TestAccount, body: bytes, content_type: str | None) -> httpx2.Response:
    headers = dict(account.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return account.client.post(CAMPAIGNS, content=body, headers=headers)


@pytest.mark.parametrize(
    ("body", "charset"),
    [
        (b"name=Caf%E9", "iso-8859-1"),
        (b"name=Caf\xe9", "ISO-8859-1"),
        (b"name=Caf%E9", "windows-1252"),
        (b"name=Caf%C3%A9", "utf-8"),
    ],
)
def test_a_form_is_read_in_its_declared_charset(account: TestAccount, body: bytes, charset: str) -> None:
    """Apache HttpClient's default form charset is ISO-8859-1: "Caf\\ufffd" was stored."""
    created = _campaign_name(account, body, f"{FORM}; charset={charset}")
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Café"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"name=Caf%E9", FORM),
        (b"name=Caf\xe9", FORM),
        (b"name=Caf%E9", f"{FORM}; charset=utf-16"),
        (b"name=Caf%E9", f"{FORM}; charset=no-such-charset"),
        (b"name=Caf%E9", None),
    ],
)
def test_a_form_not_in_its_charset_is_refused_not_stored_mangled(
    account: TestAccount, body: bytes, content_type: str | None
) -> None:
    assert_error(_campaign_name(account, body, content_type), 422, 301)
    assert_error(account.client.get("/v3/coupon/list?folder=Caf%E9", headers=account.headers), 422, 301)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_json_after_a_byte_order_mark_parses_whatever_its_content_type(
    account: TestAccount, content_type: str | None
) -> None:
    created = _campaign_name(account, BOM + json.dumps({"name": "Bommed"}).encode(), content_type)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Bommed"


def test_a_form_after_a_byte_order_mark_keeps_its_first_key(account: TestAccount) -> None:
    created = _campaign_name(account, BOM + b"name=Marked&description=x", FORM)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Marked"


# --- Content-Encoding --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_compressed_body_is_refused_with_415(account: TestAccount, encoding: str) -> None:
    body = gzip.compress(json.dumps({"name": "Zipped"}).encode())
    response = account.client.post(
        CAMPAIGNS,
        content=body,
        headers={**account.headers, "Content-Type": "application/json", "Content-Encoding": encoding},
    )
    answer = assert_error(response, 415, 415)
    assert "not supported" in answer["status"]["errors"]["error_message_description"][0]
    plain = account.client.post(
        CAMPAIGNS,
        json={"name": "Plain"},
        headers={**account.headers, "Content-Encoding": "identity"},
    )
    assert plain.status_code == 201, plain.text


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


def test_head_of_a_v3_call_that_writes_changes_nothing(account: TestAccount) -> None:
    """A v3 write answers its GET as its POST (the vendor's calls take both); HEAD, which link
    checkers and proxies send freely, is refused there (405, Allow naming GET and POST) and
    creates nothing."""
    made = account.client.post(CAMPAIGNS, json={"name": "Probed"}, headers=account.headers)
    assert made.status_code == 201, made.text
    campaign = made.json()["id"]
    path = f"/v3/singleuse/create?campaign={campaign}&email=probe@example.com"
    head = account.client.head(path, headers=account.headers)
    assert head.status_code == 405
    assert {m.strip() for m in head.headers["allow"].split(",")} >= {"GET", "POST"}
    assert "HEAD" not in head.headers["allow"]
    listed = account.call("/v3/campaign/data", campaign=campaign)
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == []


# --- a client that hangs up ----------------------------------------------------------------------


def _hang_up_mid_body(live_server: LiveServer, method: str, path: str) -> None:
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=15) as sock:
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: t",
            "Content-Type: application/json",
            "Content-Length: 1000",
        ]
        # 11 bytes of the 1,000 declared, then the connection closes.
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b'{"name": "x')


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v3/coupon/list"), ("POST", CAMPAIGNS), ("PATCH", "/v4/campaigns/cam_1")]
)
def test_a_client_hanging_up_mid_body_logs_no_error(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    """Two tracebacks were logged ("unhandled error … ClientDisconnect" and uvicorn's
    "Exception in ASGI application") for a client that went away."""
    uvicorn_log = logging.getLogger("uvicorn.error")  # does not reach the root logger
    uvicorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG, logger="opencoupon"):
            _hang_up_mid_body(live_server, method, path)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not _ended(caplog.records):
                time.sleep(0.02)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == []
    assert any("client disconnected" in r.getMessage() for r in caplog.records)


def _ended(records: list[Any]) -> bool:
    return any("client disconnected" in r.getMessage() or r.levelno >= logging.ERROR for r in records)
