# ruff: noqa: F811  (the `receiver` fixture is imported, then requested by name)
"""Faults found in review of the webhook delivery, each with a real receiver on loopback and the
real database: one poisoned request no longer fails the batch, the account_field endpoint is made
once under concurrent fan-outs, waiting for the pool is not the receiver's time, an endpoint
disabled automatically tells its owner, a field endpoint disabled for its old URL starts afresh at
a new one, and a delivery job that gives up leaves its message failed, not pending."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from helpers import assert_ok
from opencoupon.accounts import service as accounts
from opencoupon.config import Settings
from opencoupon.db.engine import normalize_url
from opencoupon.db.migrate import downgrade, upgrade
from opencoupon.db.session import Database
from opencoupon.models import Event, Job, WebhookEndpoint, WebhookMessage
from opencoupon.runtime import Runtime
from opencoupon.webhooks import outbound, repository, tasks
from opencoupon.worker.queue import encode
from webhooks_fixtures import Receiver, Reply, drain, emit, receiver  # noqa: F401

if TYPE_CHECKING:
    from conftest import TestAccount


def _endpoint(acc: TestAccount, url: str, events: list[str] | None = None) -> dict[str, Any]:
    resp = acc.client.post("/v4/webhooks", json={"url": url, "events": events or ["*"]}, headers=acc.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _log(acc: TestAccount, endpoint_id: str) -> list[dict[str, Any]]:
    resp = acc.client.get(f"/v4/webhooks/{endpoint_id}/deliveries", headers=acc.headers)
    assert resp.status_code == 200, resp.text
    return list(resp.json())


def _listed(acc: TestAccount) -> list[dict[str, Any]]:
    return list(acc.client.get("/v4/webhooks", headers=acc.headers).json())


def _message(runtime: Runtime, event_public_id: str) -> WebhookMessage:
    with runtime.db.read() as session:
        return session.execute(
            select(WebhookMessage)
            .join(Event, Event.id == WebhookMessage.event_id)
            .where(Event.public_id == event_public_id)
        ).scalar_one()


# ---- 1. one bad request fails on its own ---------------------------------------------------------


@pytest.mark.parametrize("poison", ["empty label", "long label", "NUL in the answer"])
def test_one_poisoned_request_does_not_fail_the_others_of_its_batch(
    runtime: Runtime,
    account: TestAccount,
    subaccount: TestAccount,
    other_account: TestAccount,
    receiver: Receiver,
    clock_offset: Callable[[dt.timedelta], None],
    poison: str,
) -> None:
    """Two accounts' deliveries in one batch, one of them poisoned: a field URL whose host the
    resolver cannot encode (UnicodeError), or a receiver answering a NUL byte (which PostgreSQL
    text cannot hold). The other is delivered once and logged; the poisoned one has its own
    logged attempt. Before, the batch failed as a whole: nothing logged, the job retried and sent
    to the other account's receiver again and again."""
    evil = Receiver().start()
    try:
        victim = _endpoint(other_account, receiver.url + "/victim")
        if poison == "NUL in the answer":
            evil.behaviour = lambda *_: Reply(status=200, body="ok\x00done")
            url = evil.url + "/evil"
        elif poison == "empty label":
            url = "http://a..b.example/x"
        else:
            url = "http://" + "a" * 64 + ".example.com/x"
        assert_ok(
            account.call("/v3/subaccount/update", subaccount=f"sub_{subaccount.id}", webhook_endpoint=url)
        )
        poisoned_event = emit(runtime, subaccount.id, "coupon_claimed")
        victim_event = emit(runtime, other_account.id, "coupon_claimed")
        drain(runtime)
        for hours in (1, 3, 6):  # any retry would be due by now
            clock_offset(dt.timedelta(hours=hours))
            drain(runtime)
        time.sleep(0.2)
        assert [r.event_id for r in receiver.requests()] == [victim_event]
        message = _message(runtime, victim_event)
        assert (message.status, message.attempts) == ("succeeded", 1)
        log = _log(other_account, str(victim["id"]))
        assert [(e["event"], e["success"], e["status_code"]) for e in log] == [(victim_event, True, 204)]

        field = next(e for e in _listed(subaccount) if e["source"] == "account_field")
        poisoned_log = _log(subaccount, str(field["id"]))
        assert poisoned_log
        assert poisoned_log[-1]["event"] == poisoned_event
        if poison == "NUL in the answer":
            assert len(evil.requests()) == 1
            assert (poisoned_log[-1]["status_code"], poisoned_log[-1]["success"]) == (200, True)
            assert poisoned_log[-1]["response"] == "okdone"  # NUL stripped, the rest kept
        else:
            assert all(e["status_code"] == 0 and not e["success"] and e["error"] for e in poisoned_log)
            assert _message(runtime, poisoned_event).attempts == len(poisoned_log)
    finally:
        evil.stop()


# ---- 3. one account_field endpoint per account, even under concurrent fan-outs -------------------


def test_concurrent_fan_outs_make_one_field_endpoint(
    runtime: Runtime,
    account: TestAccount,
    subaccount: TestAccount,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two fan-outs of the same subaccount at once both find no field endpoint. On PostgreSQL
    both inserted one: every later event went out twice, with two secrets. Now the second insert
    does nothing and reads the first one's row."""
    assert_ok(
        account.call(
            "/v3/subaccount/update",
            subaccount=f"sub_{subaccount.id}",
            webhook_endpoint=receiver.url + "/field",
        )
    )
    first = [emit(runtime, subaccount.id, "coupon_claimed") for _ in range(2)]
    with runtime.db.read() as session:
        event_ids = [session.scalar(select(Event.id).where(Event.public_id == e)) for e in first]
    looked = threading.Barrier(2, timeout=5)
    original = repository.field_endpoint

    def slow(session: Any, account_id: int) -> WebhookEndpoint | None:
        found = original(session, account_id)
        if found is None:
            try:
                looked.wait()  # both have looked (PostgreSQL); SQLite lets one writer at a time
            except threading.BrokenBarrierError:
                pass
            time.sleep(0.3)
        return found

    monkeypatch.setattr(repository, "field_endpoint", slow)
    errors: list[BaseException] = []

    def fan_out(i: int) -> None:
        try:
            tasks.dispatch(runtime, [(10**9 + i, {"event_id": event_ids[i]})])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fan_out, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    monkeypatch.setattr(repository, "field_endpoint", original)
    assert errors == []
    fields = [e for e in _listed(subaccount) if e["source"] == "account_field"]
    assert len(fields) == 1
    later = emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    time.sleep(0.2)
    got = [r.event_id for r in receiver.requests()]
    assert sorted(got) == sorted([*first, later])  # each once: one endpoint, one message each


@pytest.fixture
def scratch_url(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of the suite's kind."""
    if not settings.database_url.startswith("postgres"):
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    name = f"oc_hooks_{time.time_ns()}"
    admin = create_engine(normalize_url(settings.database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_migration_0013_merges_duplicate_field_endpoints_into_the_oldest(
    scratch_url: str, runtime: Runtime
) -> None:
    """Duplicates made before the index: the oldest endpoint of each account stays; the others'
    messages move to it (with their log) unless it has the same event already; then the index
    holds."""
    # The account is made through today's model (its columns), then the schema goes back to 0012.
    upgrade(scratch_url)
    database = Database(scratch_url)
    try:
        with database.transaction() as session:
            account, _ = accounts.create_account(
                session, runtime.keyring, email="dup@example.com", password=None
            )
            account_id = account.id
        database.dispose()
        downgrade(scratch_url, "0012")
        with database.engine.begin() as conn:

            def one(sql: str, **params: Any) -> int:
                return int(
                    conn.execute(text(sql + " RETURNING id"), {"a": account_id, **params}).scalar_one()
                )

            endpoint = (
                "INSERT INTO webhook_endpoints (account_id, url, description, events, source, enabled, "
                "disabled_reason, secret_encrypted, created_at, updated_at) "
                "VALUES (:a, 'http://x/', '', '*', :source, true, '', 'x', '2030-01-01', '2030-01-01')"
            )
            keep = one(endpoint, source="account_field")
            dup = one(endpoint, source="account_field")
            api = one(endpoint, source="api")
            events = [
                one(
                    "INSERT INTO events (public_id, account_id, type, campaign, session, data, created_at) "
                    "VALUES (:p, :a, 'coupon_claimed', '', '', '{}', '2030-01-01')",
                    p=f"evt_{i:020d}",
                )
                for i in range(3)
            ]
            message = (
                "INSERT INTO webhook_messages (account_id, endpoint_id, event_id, status, attempts, "
                "round_attempts, last_error, created_at, updated_at) "
                "VALUES (:a, :ep, :ev, 'succeeded', 1, 1, '', '2030-01-01', '2030-01-01')"
            )
            attempt = (
                "INSERT INTO webhook_attempts (message_id, endpoint_id, event_id, attempt, status_code, "
                "success, error, duration_ms, response_body, worker, created_at) "
                "VALUES (:m, :ep, :ev, 1, 204, true, '', 1, '', '', '2030-01-01')"
            )
            for endpoint_id, event_id in (
                (keep, events[0]),
                (dup, events[0]),
                (dup, events[1]),
                (api, events[2]),
            ):
                m = one(message, ep=endpoint_id, ev=event_id)
                one(attempt, m=m, ep=endpoint_id, ev=event_id)
        upgrade(scratch_url)
        with database.engine.connect() as conn:
            endpoints = conn.execute(text("SELECT id FROM webhook_endpoints ORDER BY id")).scalars().all()
            messages = conn.execute(
                text("SELECT endpoint_id, event_id FROM webhook_messages ORDER BY event_id")
            ).all()
            attempts = conn.execute(
                text("SELECT endpoint_id, event_id FROM webhook_attempts ORDER BY event_id")
            ).all()
        assert endpoints == [keep, api]
        assert [tuple(m) for m in messages] == [(keep, events[0]), (keep, events[1]), (api, events[2])]
        assert [tuple(a) for a in attempts] == [(keep, events[0]), (keep, events[1]), (api, events[2])]
        with pytest.raises(Exception, match=r"(?i)unique"), database.engine.begin() as conn:
            conn.execute(text(endpoint.replace(":source", "'account_field'")), {"a": account_id})
    finally:
        database.dispose()


# ---- 4. waiting for a connection of the pool is not the receiver's time ---------------------------


@pytest.fixture
def one_connection(runtime: Runtime) -> Iterator[Runtime]:
    """The same database and keys, with a pool of one connection and a 1 s limit."""
    settings = runtime.settings.model_copy(update={"webhook_concurrency": 1, "webhook_timeout_seconds": 1.0})
    narrow = Runtime(settings=settings, db=runtime.db, keyring=runtime.keyring)
    try:
        yield narrow
    finally:
        outbound.close_outbound_for(settings)


def test_waiting_for_a_free_connection_is_no_timeout(
    one_connection: Runtime, account: TestAccount, receiver: Receiver
) -> None:
    """Five deliveries through one connection to a receiver taking 0.4 s each: 2 s in all, twice
    the limit, but each answer came within it. Before, the limit counted the wait for the pool and
    the later ones were logged as timeouts though never sent."""
    receiver.behaviour = lambda *_: Reply(status=204, delay=0.4)
    created = _endpoint(account, receiver.url + "/slowish")
    sent = [emit(one_connection, account.id, "coupon_claimed", n=i) for i in range(5)]
    started = time.monotonic()
    drain(one_connection)
    assert time.monotonic() - started >= 1.9  # one at a time
    log = _log(account, str(created["id"]))
    assert sorted(e["event"] for e in log) == sorted(sent)
    assert all(e["success"] and e["error"] == "" for e in log), log
    assert len(receiver.requests()) == 5
    # A receiver slower than the limit is still a timeout.
    receiver.behaviour = lambda *_: Reply(status=204, delay=1.5)
    emit(one_connection, account.id, "coupon_claimed")
    drain(one_connection)
    last = _log(account, str(created["id"]))[0]
    assert last["status_code"] == 0
    assert "timeout" in last["error"]


# ---- 6. an endpoint disabled automatically tells its owner -----------------------------------------


def test_an_endpoint_disabled_automatically_sends_a_notification_to_the_others(
    runtime: Runtime,
    account: TestAccount,
    receiver: Receiver,
    clock_offset: Callable[[dt.timedelta], None],
) -> None:
    gone = Receiver().start()
    try:
        gone.behaviour = lambda *_: Reply(status=410)
        dying = _endpoint(account, gone.url + "/gone")
        failing = _endpoint(account, gone.url + "/failing", ["coupon_validated"])
        gone.behaviour = lambda path, *_: Reply(status=410 if path == "/gone" else 503)
        watcher = _endpoint(account, receiver.url + "/watch", ["webhook_endpoint_disabled"])
        emit(runtime, account.id, "coupon_claimed")
        drain(runtime)
        notice = receiver.wait_for(1)[0]
        body = json.loads(notice.body)
        assert body["type"] == "webhook_endpoint_disabled"
        assert body["data"]["endpoint"] == dying["id"]
        assert body["data"]["url"] == gone.url + "/gone"
        assert "410" in body["data"]["reason"]
        assert body["data"]["disabled_at"]
        assert [r.path for r in gone.requests()] == ["/gone"]  # the disabled one gets nothing more
        info = account.client.get(f"/v4/webhooks/{dying['id']}", headers=account.headers).json()
        assert info["enabled"] is False
        assert info["disabled_at"] == body["data"]["disabled_at"]

        # Five days of failures: the same notice.
        emit(runtime, account.id, "coupon_validated")
        drain(runtime)
        clock_offset(dt.timedelta(days=5, minutes=1))
        emit(runtime, account.id, "coupon_validated")
        drain(runtime)
        notices = [json.loads(r.body) for r in receiver.wait_for(2)]
        assert notices[1]["data"]["endpoint"] == failing["id"]
        assert "5 days" in notices[1]["data"]["reason"]
        assert (
            assert_ok(account.call("/v3/webhook/verification", webhook=notices[1]["id"]))["result"] == "valid"
        )
        time.sleep(0.2)
        assert len(receiver.requests()) == 2
        assert watcher["enabled"] is True
    finally:
        gone.stop()


# ---- 7. smaller ones ------------------------------------------------------------------------------


def test_a_field_endpoint_disabled_for_its_old_url_starts_afresh_at_a_new_one(
    runtime: Runtime, account: TestAccount, subaccount: TestAccount, receiver: Receiver
) -> None:
    receiver.behaviour = lambda path, *_: Reply(status=410 if path == "/old" else 204)
    sub = f"sub_{subaccount.id}"
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/old"))
    emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    field = next(e for e in _listed(subaccount) if e["source"] == "account_field")
    assert field["enabled"] is False
    assert "410" in field["disabled_reason"]
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/new"))
    event = emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    got = receiver.wait_for(2)
    assert (got[1].path, got[1].event_id) == ("/new", event)
    field = next(e for e in _listed(subaccount) if e["source"] == "account_field")
    assert (field["enabled"], field["disabled_reason"], field["disabled_at"]) == (True, "", "")

    # Disabled by its owner: a new URL does not turn it back on.
    subaccount.client.patch(
        f"/v4/webhooks/{field['id']}", json={"enabled": False}, headers=subaccount.headers
    )
    assert_ok(account.call("/v3/subaccount/update", subaccount=sub, webhook_endpoint=receiver.url + "/third"))
    emit(runtime, subaccount.id, "coupon_claimed")
    drain(runtime)
    time.sleep(0.2)
    assert len(receiver.requests()) == 2
    field = next(e for e in _listed(subaccount) if e["source"] == "account_field")
    assert field["enabled"] is False


def test_a_delivery_job_that_gives_up_leaves_its_message_failed_and_logged(
    runtime: Runtime,
    account: TestAccount,
    receiver: Receiver,
    clock_offset: Callable[[dt.timedelta], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job whose every run failed (here: recording the results fails) ends `dead`; its message
    was left `pending` forever. Now it is `failed`, with the reason in the delivery log."""
    receiver.behaviour = lambda *_: Reply(status=500)
    created = _endpoint(account, receiver.url)
    event = emit(runtime, account.id)
    drain(runtime)
    message = _message(runtime, event)
    assert (message.status, message.attempts) == ("pending", 1)
    with runtime.db.transaction() as session:
        job = session.scalars(
            select(Job).where(
                Job.kind == "webhook.deliver", Job.payload == encode({"message_id": message.id})
            )
        ).one()
        job.attempts = job.max_attempts - 1  # the next run is its last

    def broken(*_: Any) -> None:
        raise RuntimeError("recording failed")

    monkeypatch.setattr(tasks, "_endpoint_health", broken)
    clock_offset(dt.timedelta(minutes=5))
    drain(runtime)
    monkeypatch.undo()
    with runtime.db.read() as session:
        assert session.get(Job, job.id).status == "dead"  # type: ignore[union-attr]
    message = _message(runtime, event)
    assert message.status == "failed"
    assert message.next_attempt_at is None
    assert "gave up" in message.last_error
    log = _log(account, str(created["id"]))
    assert log[0]["success"] is False
    assert log[0]["status_code"] == 0
    assert "gave up" in log[0]["error"]
    assert "recording failed" in log[0]["error"]
    # A replay sends it again.
    receiver.behaviour = lambda *_: Reply(status=204)
    replay = account.client.post(
        f"/v4/webhooks/{created['id']}/replay", json={"event": event}, headers=account.headers
    )
    assert replay.json()["queued"] == 1
    drain(runtime)
    assert _message(runtime, event).status == "succeeded"


def test_a_second_rotation_within_the_grace_period_keeps_one_previous_secret(
    runtime: Runtime, account: TestAccount, receiver: Receiver
) -> None:
    """As documented: one previous secret is kept. Rotating again during a grace period drops the
    oldest secret at once; the one it replaced signs alongside the new one for the new grace."""
    created = _endpoint(account, receiver.url)
    path = f"/v4/webhooks/{created['id']}/rotate"
    first = str(created["secret"])
    second = str(
        account.client.post(path, json={"grace_hours": 24}, headers=account.headers).json()["secret"]
    )
    third = account.client.post(path, json={"grace_hours": 2}, headers=account.headers).json()
    emit(runtime, account.id)
    drain(runtime)
    got = receiver.wait_for(1)[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(str(third["secret"])).verify(got.body, got.headers)
    Webhook(second).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(got.body, got.headers)
    assert third["previous_secret_expires_at"]
