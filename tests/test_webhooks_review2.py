# ruff: noqa: F811  (the `receiver` fixture is imported, then requested by name)
"""Faults found in the second review of webhooks, with a real receiver on loopback and the real
database: deliveries follow a subaccount's `webhook_endpoint` field when it changes or is cleared,
one tenant's slow receivers hold up no other tenant's webhooks (nor make their signatures stale),
and a replay of everything since a time runs in the background in chunks."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from helpers import assert_error, assert_ok
from opencoupon.models import Event, WebhookMessage
from opencoupon.runtime import Runtime
from webhooks_fixtures import Receiver, Reply, drain, emit, receiver  # noqa: F401

if TYPE_CHECKING:
    from conftest import TestAccount


def _field(acc: TestAccount) -> dict[str, Any]:
    listed = acc.client.get("/v4/webhooks", headers=acc.headers).json()
    return dict(next(e for e in listed if e["source"] == "account_field"))


def _message(runtime: Runtime, event_public_id: str) -> WebhookMessage:
    with runtime.db.read() as session:
        return session.execute(
            select(WebhookMessage)
            .join(Event, Event.id == WebhookMessage.event_id)
            .where(Event.public_id == event_public_id)
        ).scalar_one()


# ---- 1. the field endpoint follows the field, for retries and replays too -------------------------


def test_a_cleared_field_gets_no_more_retries(
    runtime: Runtime,
    account: TestAccount,
    subaccount: TestAccount,
    receiver: Receiver,
    clock_offset: Callable[[dt.timedelta], None],
) -> None:
    """Before, clearing the field stopped new events only: the failing message's retries went on
    to the old URL for a day, and GET /v4/webhooks still listed it, enabled."""
    receiver.behaviour = lambda *_: Reply(status=500)
    sub = f"sub_{subaccount.id}"
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/old"))
    event = emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    assert len(receiver.requests()) == 1
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=""))
    field = _field(subaccount)
    assert (field["url"], field["enabled"]) == ("", False)
    assert "field was cleared" in field["disabled_reason"]
    for hours in (1, 3, 8, 20, 30):
        clock_offset(dt.timedelta(hours=hours))
        drain(runtime)
    time.sleep(0.2)
    assert [r.path for r in receiver.requests()] == ["/old"]
    message = _message(runtime, event)
    assert message.status == "failed"
    assert "field was cleared" in message.last_error
    replay = subaccount.client.post(
        f"/v4/webhooks/{field['id']}/replay", json={"event": event}, headers=subaccount.headers
    )
    assert_error(replay, 409, 308)  # disabled: nothing to send to

    # Set again: the endpoint starts afresh at the new URL.
    receiver.behaviour = lambda *_: Reply(status=204)
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/again"))
    field = _field(subaccount)
    assert (field["url"], field["enabled"], field["disabled_reason"]) == (receiver.url + "/again", True, "")
    later = emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    got = receiver.wait_for(2)
    assert (got[1].path, got[1].event_id) == ("/again", later)


def test_after_the_field_changes_the_retry_goes_to_the_new_url(
    runtime: Runtime,
    account: TestAccount,
    subaccount: TestAccount,
    receiver: Receiver,
    clock_offset: Callable[[dt.timedelta], None],
) -> None:
    receiver.behaviour = lambda path, *_: Reply(status=500 if path == "/old" else 204)
    sub = f"sub_{subaccount.id}"
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/old"))
    event = emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/new"))
    field = _field(subaccount)
    assert (field["url"], field["enabled"]) == (receiver.url + "/new", True)
    clock_offset(dt.timedelta(minutes=1))
    drain(runtime)
    time.sleep(0.2)
    got = receiver.requests()
    assert [(r.path, r.event_id) for r in got] == [("/old", event), ("/new", event)]
    assert _message(runtime, event).status == "succeeded"
    log = subaccount.client.get(f"/v4/webhooks/{field['id']}/deliveries", headers=subaccount.headers).json()
    assert [e["status_code"] for e in log] == [204, 500]
