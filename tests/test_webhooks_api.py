# ruff: noqa: F811  (the `receiver` fixture is imported, then requested by name)
"""`/v4/webhooks` management and `/v3/webhook/verification`, over real HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text

from helpers import assert_error, assert_ok
from opencoupon.runtime import Runtime
from webhooks_fixtures import Receiver, emit, receiver  # noqa: F401

if TYPE_CHECKING:
    from conftest import TestAccount


def _create(acc: TestAccount, url: str, events: list[str] | None = None, **more: object) -> dict[str, object]:
    resp = acc.client.post(
        "/v4/webhooks",
        json={"url": url, "events": events or ["coupon_validated"], **more},
        headers=acc.headers,
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_create_shows_the_secret_once_and_stores_it_encrypted(
    account: TestAccount, receiver: Receiver, runtime: Runtime
) -> None:
    created = _create(account, receiver.url + "/hook", ["coupon_validated", "coupon_claimed"])
    assert str(created["id"]).startswith("whe_")
    secret = str(created["secret"])
    assert secret.startswith("whsec_")
    assert len(secret) > 40
    assert created["events"] == ["coupon_validated", "coupon_claimed"]
    assert created["enabled"] is True

    one = account.client.get(f"/v4/webhooks/{created['id']}", headers=account.headers)
    assert one.status_code == 200
    assert "secret" not in one.json()
    listed = account.client.get("/v4/webhooks", headers=account.headers).json()
    assert [e["id"] for e in listed] == [created["id"]]
    assert all("secret" not in e for e in listed)

    with runtime.db.read() as session:
        stored = session.execute(text("SELECT secret_encrypted FROM webhook_endpoints")).scalars().all()
    assert stored
    assert all(secret not in value for value in stored)
    assert not any(secret.removeprefix("whsec_") in value for value in stored)


def test_form_encoded_create_and_event_list_rules(account: TestAccount, receiver: Receiver) -> None:
    resp = account.client.post(
        "/v4/webhooks",
        data={"url": receiver.url, "events": "coupon_claimed,coupon_voided"},
        headers=account.headers,
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["events"] == ["coupon_claimed", "coupon_voided"]
    bad = account.client.post(
        "/v4/webhooks", json={"url": receiver.url, "events": ["nope"]}, headers=account.headers
    )
    assert_error(bad, 422, 302)
    missing = account.client.post("/v4/webhooks", json={"events": ["*"]}, headers=account.headers)
    assert_error(missing, 422, 200)
    star = account.client.post(
        "/v4/webhooks", json={"url": receiver.url, "events": "*"}, headers=account.headers
    )
    assert star.status_code == 201
    assert star.json()["events"] == ["*"]


def test_patch_and_delete(account: TestAccount, receiver: Receiver) -> None:
    created = _create(account, receiver.url)
    path = f"/v4/webhooks/{created['id']}"
    patched = account.client.patch(
        path,
        json={"events": ["coupon_opened"], "enabled": False, "url": receiver.url + "/v2"},
        headers=account.headers,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["events"] == ["coupon_opened"]
    assert body["enabled"] is False
    assert body["url"].endswith("/v2")
    assert body["disabled_reason"]
    enabled = account.client.patch(path, json={"enabled": True}, headers=account.headers).json()
    assert enabled["enabled"] is True
    assert enabled["disabled_reason"] == ""
    gone = account.client.delete(path, headers=account.headers)
    assert gone.status_code == 200
    assert gone.json()["deleted"] is True
    assert_error(account.client.get(path, headers=account.headers), 404, 509)


def test_another_account_cannot_see_or_touch_an_endpoint(
    account: TestAccount, other_account: TestAccount, receiver: Receiver
) -> None:
    created = _create(account, receiver.url)
    path = f"/v4/webhooks/{created['id']}"
    missing = other_account.client.get("/v4/webhooks/whe_999999999", headers=other_account.headers)
    foreign = other_account.client.get(path, headers=other_account.headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    for call in (
        other_account.client.patch(path, json={"enabled": False}, headers=other_account.headers),
        other_account.client.delete(path, headers=other_account.headers),
        other_account.client.post(path + "/rotate", headers=other_account.headers),
        other_account.client.get(path + "/deliveries", headers=other_account.headers),
        other_account.client.post(
            path + "/replay", json={"since": "2020-01-01"}, headers=other_account.headers
        ),
    ):
        assert_error(call, 404, 509)
    assert other_account.client.get("/v4/webhooks", headers=other_account.headers).json() == []
    assert account.client.get(path, headers=account.headers).json()["enabled"] is True


def test_a_malformed_event_names_the_parameter_it_came_in(account: TestAccount, receiver: Receiver) -> None:
    path = f"/v4/webhooks/{_create(account, receiver.url)['id']}"
    for answer in (
        account.client.get(path + "/deliveries", params={"event": "x"}, headers=account.headers),
        account.client.post(path + "/replay", json={"event": "x"}, headers=account.headers),
    ):
        body = assert_error(answer, 422, 301)
        assert body["status"]["errors"]["error_message_description"] == [
            "Invalid character in parameter: event."
        ]
    verified = assert_error(account.call("/v3/webhook/verification", webhook="x"), 422, 301)
    assert verified["status"]["errors"]["error_message_description"] == [
        "Invalid character in parameter: webhook."
    ]


def test_master_sees_and_creates_subaccount_endpoints(
    account: TestAccount, subaccount: TestAccount, receiver: Receiver
) -> None:
    own = _create(subaccount, receiver.url)
    for_sub = _create(account, receiver.url, subaccount=f"sub_{subaccount.id}")
    assert for_sub["subaccount"] == f"sub_{subaccount.id}"
    master_view = {e["id"] for e in account.client.get("/v4/webhooks", headers=account.headers).json()}
    assert {own["id"], for_sub["id"]} <= master_view
    sub_view = {e["id"] for e in subaccount.client.get("/v4/webhooks", headers=subaccount.headers).json()}
    assert sub_view == {own["id"], for_sub["id"]}
    # Subaccount credentials naming a subaccount manage subaccounts: 102 (HTTP 403), whatever the ID.
    for named in (f"sub_{subaccount.id}", f"sub_{account.id}", "sub_2147483000", "x!"):
        refused = subaccount.client.post(
            "/v4/webhooks",
            json={"url": receiver.url, "events": ["*"], "subaccount": named},
            headers=subaccount.headers,
        )
        body = assert_error(refused, 403, 102)
        assert body["status"]["errors"]["error_message_description"] == [
            "You are trying to use subaccount credentials to manage subaccounts."
        ]
    listed = subaccount.client.get("/v4/webhooks", headers=subaccount.headers).json()
    assert {e["id"] for e in listed} == sub_view  # nothing was made


def test_verification_answers_own_events_only(
    account: TestAccount, other_account: TestAccount, runtime: Runtime
) -> None:
    event_id = emit(runtime, account.id, "coupon_validated")
    body = assert_ok(account.call("/v3/webhook/verification", webhook=event_id))
    assert body["result"] == "valid"
    assert body["webhook"] == event_id
    assert body["type"] == "coupon_validated"
    assert body["campaign"] == "cam_1"
    assert body["session"] == "abcdefghijklmnopqrstu"
    assert len(body["date"]) == 19
    with_session = account.call("/v3/webhook/verification", webhook=event_id, session="abcdefghijklmnopqrstu")
    assert assert_ok(with_session)["result"] == "valid"
    assert_error(account.call("/v3/webhook/verification", webhook=event_id, session="x" * 21), 404, 509)
    foreign = other_account.call("/v3/webhook/verification", webhook=event_id)
    unknown = other_account.call("/v3/webhook/verification", webhook="evt_" + "A" * 20)
    assert_error(foreign, 404, 509)
    assert foreign.json() == unknown.json()
    assert_error(account.call("/v3/webhook/verification"), 422, 200)
    # Form-encoded, as the vendor's PHP sample sends it.
    form = account.client.post(
        "/v3/webhook/verification", data={"webhook": event_id}, headers=account.headers
    )
    assert assert_ok(form)["webhook"] == event_id
