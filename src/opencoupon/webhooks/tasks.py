"""Webhook jobs: fan an event out to its endpoints, and deliver messages with retries.

`event.dispatch` (one job per event, queued by events.emit in the change's transaction) writes the
body once and one message plus one `webhook.deliver` job per matching endpoint, in one
transaction. `webhook.deliver` jobs are handled a batch at a time: one read, every POST at once
through the shared aiohttp session, one write of the results. A message's state only moves by a
conditional update on its attempt count, so a delivery recorded by one worker is never recorded
(or retried) again by another. `webhook.replay` queues a replay of everything since a time, one
chunk of events per transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session

from opencoupon.config import Settings
from opencoupon.db.session import upsert_insert
from opencoupon.events import service as events
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import Keyring
from opencoupon.kit.dates import fmt
from opencoupon.models import (
    Account,
    Event,
    Job,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    WebhookPayload,
)
from opencoupon.runtime import Runtime
from opencoupon.webhooks import repository, service, signing, throttle
from opencoupon.webhooks.outbound import Request, Response, outbound_for, storable
from opencoupon.worker.queue import encode, enqueue_many
from opencoupon.worker.registry import (
    BatchItems,
    BatchOutcomes,
    Retry,
    batch_task,
    holding,
    on_dead,
    worker_name,
)
from opencoupon.worker.runner import finish_first_attempts

log = logging.getLogger("opencoupon.webhooks")

DISABLE_AFTER = dt.timedelta(days=5)
MAX_RETRY_AFTER = dt.timedelta(hours=24)
# A message due within this is sent now (a job's run_at and its message's next attempt differ a little).
NOT_YET_SLACK = dt.timedelta(seconds=1)
_EPOCH = dt.datetime(1970, 1, 1)
AUTO_DISABLED = service.AUTO_DISABLED
ENDPOINT_DISABLED = "webhook_endpoint_disabled"
# The partial unique index of migration 0013: one account_field endpoint per account.
FIELD_SOURCE = text("source = 'account_field'")


def unix(now: dt.datetime) -> int:
    return int((now - _EPOCH).total_seconds())


# ---- fan-out ----------------------------------------------------------------------------------------


def _field_endpoint(session: Any, keyring: Keyring, account: Account, now: dt.datetime) -> WebhookEndpoint:
    """The endpoint mirroring the vendor's `webhook_endpoint` field of an account.

    One per account, by a partial unique index (migration 0013): two fan-outs of the same account
    at the same moment both find none and both insert; the second insert does nothing (on
    PostgreSQL it waits for the first to commit) and reads the row the first made."""
    found = repository.field_endpoint(session, account.id)
    if found is None:
        table = cast(Table, WebhookEndpoint.__table__)
        session.execute(
            upsert_insert(session, table)
            .values(
                account_id=account.id,
                url=account.webhook_endpoint,
                description="webhook_endpoint field",
                events="*",
                source="account_field",
                enabled=True,
                disabled_reason="",
                secret_encrypted=keyring.encrypt(signing.new_secret()),
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["account_id"], index_where=FIELD_SOURCE)
        )
        found = repository.field_endpoint(session, account.id)
        assert found is not None
    else:
        service.follow_field(found, account.webhook_endpoint, now)
    return found


@batch_task("event.dispatch")
def dispatch(runtime: Runtime, items: BatchItems) -> BatchOutcomes:
    event_ids = [int(payload["event_id"]) for _, payload in items]
    now = utcnow()
    runner = ""
    job_ids: list[int] = []
    payloads: list[dict[str, Any]] = []
    with runtime.db.transaction() as session:
        events = session.scalars(select(Event).where(Event.id.in_(event_ids)).order_by(Event.id)).all()
        account_ids = sorted({e.account_id for e in events})
        accounts = session.scalars(select(Account).where(Account.id.in_(account_ids))).all()
        for account in accounts:
            if account.webhook_endpoint:
                _field_endpoint(session, runtime.keyring, account, now)
        field_urls = {a.id: a.webhook_endpoint for a in accounts}
        by_account: dict[int, list[WebhookEndpoint]] = defaultdict(list)
        for endpoint in repository.endpoints_of(session, account_ids):
            # A cleared field: its endpoint is disabled, no longer listed with the old URL.
            service.follow_field(endpoint, field_urls.get(endpoint.account_id, ""), now)
            if endpoint.enabled and endpoint.url:
                by_account[endpoint.account_id].append(endpoint)
        existing = set(
            session.execute(
                select(WebhookMessage.endpoint_id, WebhookMessage.event_id).where(
                    WebhookMessage.event_id.in_(event_ids)
                )
            ).all()
        )
        have_body = set(
            session.scalars(select(WebhookPayload.event_id).where(WebhookPayload.event_id.in_(event_ids)))
        )
        bodies: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        for event in events:
            targets = [
                ep
                for ep in by_account.get(event.account_id, [])
                if service.wants(ep, event.type)
                and (ep.source != "account_field" or ep.url == field_urls.get(event.account_id))
            ]
            if not targets:
                continue
            if event.id not in have_body:
                bodies.append({"event_id": event.id, "body": signing.build_body(event)})
            for ep in targets:
                if (ep.id, event.id) in existing:
                    continue
                messages.append(
                    {
                        "account_id": ep.account_id,
                        "endpoint_id": ep.id,
                        "event_id": event.id,
                        "status": "pending",
                        "attempts": 0,
                        "round_attempts": 0,
                        "last_error": "",
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        if bodies:
            session.execute(insert(WebhookPayload), bodies)
        if messages:
            table = cast(Table, WebhookMessage.__table__)
            new_ids = session.execute(insert(table).returning(table.c.id), messages).scalars().all()
            payloads = [{"message_id": i} for i in new_ids]
            # Inside a runner, the first attempt follows at once (the jobs start out claimed by
            # this runner); otherwise the deliveries wait for the next claim.
            runner = worker_name()
            lease = dt.timedelta(seconds=runtime.settings.worker_lease_seconds)
            job_ids = enqueue_many(
                session,
                service.DELIVER,
                payloads,
                run_at=now,
                claimed_by=runner,
                lease=lease,
                max_attempts=service.DELIVER_MAX_ATTEMPTS,
            )
    if messages and runner:
        first = list(zip(job_ids, payloads, strict=True))
        try:
            # Held by the runner meanwhile: their leases are renewed, and no claim (its own or
            # another worker's) sends them a second time while this one waits on a slow receiver.
            with holding(list(job_ids)):
                outcomes = deliver(runtime, first)
                finish_first_attempts(
                    runtime,
                    runner,
                    service.DELIVER,
                    [(job_id, outcomes.get(job_id)) for job_id, _ in first],
                    max_attempts=service.DELIVER_MAX_ATTEMPTS,
                )
        except Exception:
            # The fan-out is committed; these jobs are claimed again when their lease runs out.
            log.exception("first delivery attempt of %d messages failed", len(first))
    return {job_id: None for job_id, _ in items}


# ---- replay since a time ------------------------------------------------------------------------------


@batch_task(service.REPLAY)
def replay(runtime: Runtime, items: BatchItems) -> BatchOutcomes:
    """One chunk of each replay: its events queued and its cursor moved on in one transaction
    (a worker that dies redoes one chunk at most, and a message already on its way is not queued
    twice); then the job runs again for the next chunk, and other writers get their turn between."""
    outcomes: BatchOutcomes = {}
    for job_id, payload in items:
        outcomes[job_id] = _replay_chunk(runtime, job_id, payload)
    return outcomes


def _replay_chunk(runtime: Runtime, job_id: int, payload: dict[str, Any]) -> BaseException | None:
    now = utcnow()
    through = int(payload["through"])
    with runtime.db.transaction() as session:
        endpoint = session.get(WebhookEndpoint, int(payload["endpoint_id"]))
        if endpoint is None:
            return None  # deleted meanwhile: nothing left to replay to
        service.follow_field(endpoint, service.field_of(session, endpoint), now)
        if not endpoint.enabled or not endpoint.url:
            return None  # disabled meanwhile: its messages would end failed at once
        since = dt.datetime.fromisoformat(payload["since"])
        chunk = repository.events_after(
            session, endpoint.account_id, since, int(payload["after"]), through, service.REPLAY_CHUNK
        )
        service.queue_deliveries(
            session, endpoint, [e for e in chunk if service.wants(endpoint, e.type)], now
        )
        if len(chunk) < service.REPLAY_CHUNK:
            return None
        cursor = service.replay_cursor(endpoint.id, since, chunk[-1].id, through)
        session.execute(update(Job).where(Job.id == job_id).values(payload=encode(cursor)))
    return Retry(dt.timedelta(0), f"replaying: {service.REPLAY_CHUNK} events queued, more to go")


# ---- delivery ---------------------------------------------------------------------------------------


@dataclass
class _Planned:
    job_id: int
    message_id: int
    attempts: int
    round_attempts: int
    endpoint_id: int
    event_id: int


_secret_cache: dict[str, str] = {}


def _secrets(keyring: Keyring, endpoint: WebhookEndpoint, now: dt.datetime) -> list[str]:
    # Decrypting costs more than signing: keep plaintexts by their ciphertext (a rotation changes it).
    key = f"{endpoint.secret_encrypted}|{endpoint.old_secret_encrypted}|{endpoint.old_secret_expires_at}"
    cached = _secret_cache.get(key)
    if cached is None:
        if len(_secret_cache) > 10_000:
            _secret_cache.clear()
        cached = _secret_cache[key] = "\n".join(service.signing_secrets(keyring, endpoint, now))
    if endpoint.old_secret_expires_at is not None and endpoint.old_secret_expires_at <= now:
        return cached.split("\n")[:1]
    return cached.split("\n")


def _failure_reason(response: Response) -> str:
    if response.status == 0:
        return response.error
    if 300 <= response.status < 400:
        return f"HTTP {response.status}: redirects are not followed"
    return f"HTTP {response.status}"


def _deferred_delay(settings: Settings, round_attempts: int) -> float:
    """Seconds until a deferred message is tried: the delay a failed attempt would get, the
    schedule's last one on its last attempt."""
    delay = signing.next_delay(settings, round_attempts + 1)
    if delay is None:
        delay = signing.next_delay(settings, len(signing.retry_delays(settings)))
    return delay or 0.0


@batch_task("webhook.deliver")
def deliver(runtime: Runtime, items: BatchItems) -> BatchOutcomes:
    try:
        return _deliver(runtime, items)
    except Exception as exc:
        # The runner retries these jobs on its own backoff, and marks those out of attempts
        # `dead`: their messages would stay `pending` forever. Say so on them first.
        _give_up_last_attempts(runtime, items, exc)
        raise


def _give_up_last_attempts(runtime: Runtime, items: BatchItems, exc: Exception) -> None:
    """Mark failed (with a line in the delivery log) the messages of the jobs of this batch that
    were on their last attempt, which the runner is about to mark dead."""
    job_ids = [job_id for job_id, _ in items]
    try:
        with runtime.db.transaction() as session:
            last = {
                job_id
                for job_id, attempts, max_attempts in session.execute(
                    select(Job.id, Job.attempts, Job.max_attempts).where(Job.id.in_(job_ids))
                )
                if attempts >= max_attempts
            }
            message_ids = [int(payload["message_id"]) for job_id, payload in items if job_id in last]
            if not message_ids:
                return
            reason = f"delivery gave up: its job failed {service.DELIVER_MAX_ATTEMPTS} times, last: {exc!r}"
            _fail_messages(session, message_ids, reason)
    except Exception:
        log.exception("could not mark the messages of %d dead delivery jobs failed", len(job_ids))


@on_dead("webhook.deliver")
def delivery_died(runtime: Runtime, payload: dict[str, Any]) -> None:
    """A delivery job whose worker stopped during its last attempt: its message failed."""
    with runtime.db.transaction() as session:
        _fail_messages(
            session, [int(payload["message_id"])], "delivery gave up: its worker stopped during every attempt"
        )


def _fail_messages(session: Session, message_ids: list[int], why: str) -> None:
    """Mark the still pending `message_ids` failed, with a line in their delivery log."""
    messages = cast(Table, WebhookMessage.__table__)
    now = utcnow()
    reason = storable(why)[:2000]
    rows = session.execute(
        select(messages.c.id, messages.c.attempts, messages.c.endpoint_id, messages.c.event_id).where(
            messages.c.id.in_(message_ids), messages.c.status == "pending"
        )
    ).all()
    connection = session.connection()
    for message_id, attempts, endpoint_id, event_id in rows:
        changed = connection.execute(
            update(messages)
            .where(messages.c.id == message_id, messages.c.attempts == attempts)
            .values(
                status="failed",
                attempts=attempts + 1,
                last_status_code=None,
                last_error=reason,
                next_attempt_at=None,
                throttled_until=None,
                updated_at=now,
            )
        ).rowcount
        if changed:
            connection.execute(
                insert(WebhookAttempt).values(
                    message_id=message_id,
                    endpoint_id=endpoint_id,
                    event_id=event_id,
                    attempt=attempts + 1,
                    status_code=0,
                    success=False,
                    error=reason,
                    duration_ms=0,
                    response_body="",
                    worker=worker_name(),
                    created_at=now,
                )
            )


def _deliver(runtime: Runtime, items: BatchItems) -> BatchOutcomes:
    settings = runtime.settings
    outcomes: BatchOutcomes = {job_id: None for job_id, _ in items}
    message_ids = {int(payload["message_id"]): job_id for job_id, payload in items}
    now = utcnow()
    rows = _planned_rows(runtime, list(message_ids), now)
    planned: list[_Planned] = []
    requests: list[Request | Response] = []
    abandoned: list[tuple[int, int, str]] = []  # (message_id, attempts, reason)
    throttled: list[Any] = []  # rows of endpoints with a rate limit

    def prepare(
        message: WebhookMessage,
        endpoint: WebhookEndpoint,
        body: str,
        public_id: str,
        tenant: int,
        send_at: float | None,
        send_by: float | None = None,
    ) -> None:
        planned.append(
            _Planned(
                message_ids[message.id],
                message.id,
                message.attempts,
                message.round_attempts,
                endpoint.id,
                message.event_id,
            )
        )
        try:
            secrets_ = _secrets(runtime.keyring, endpoint, now)

            def sign() -> dict[str, str]:
                # Timestamped when it has its connection: a wait for the pool never makes it stale.
                return signing.headers(secrets_, public_id, unix(utcnow()), body)

            requests.append(
                Request(
                    endpoint.url,
                    body.encode(),
                    {},
                    not_before=send_at,
                    not_after=send_by,
                    sign=sign,
                    gate=f"{service.PREFIX}{endpoint.id}",
                    tenant=f"account:{tenant}",
                )
            )
        except Exception as exc:
            # This message alone cannot be sent (say, a secret that no longer decrypts): its attempt
            # fails, the batch goes on.
            log.exception("webhook message %s could not be prepared", message.id)
            requests.append(Response(0, "", storable(f"not sent: {type(exc).__name__}: {exc}")[:500], 0))

    for row in rows:
        message, endpoint, body, public_id, tenant = row
        job_id = message_ids[message.id]
        if message.status != "pending":
            continue
        if message.next_attempt_at is not None and message.next_attempt_at > now + NOT_YET_SLACK:
            # Another run of this job (a worker presumed dead, still running) recorded an attempt
            # and set the next one: keep to its schedule.
            outcomes[job_id] = Retry(message.next_attempt_at - now, "waiting for the next attempt")
            continue
        if not endpoint.enabled:
            abandoned.append((message.id, message.attempts, f"endpoint disabled: {endpoint.disabled_reason}"))
            continue
        if not endpoint.url:
            abandoned.append((message.id, message.attempts, "endpoint has no URL: its field is empty"))
            continue
        if endpoint.rate_limit is not None:
            throttled.append(row)
            continue
        prepare(message, endpoint, body, public_id, tenant, None)
    # Throttled messages: wait for their slot in the queue, or in the send when it is near.
    come_back_at: dict[int, dt.datetime] = {}
    if throttled:
        hold_until = utcnow() + throttle.HOLD
        slots = _slots(runtime, [(row[0], row[1]) for row in throttled], hold_until)
        wall, clock = utcnow(), time.monotonic()
        for message, endpoint, body, public_id, tenant in throttled:
            if message.id not in slots:
                continue  # finished meanwhile: this job is done
            slot = slots[message.id]
            if slot is not None and slot > hold_until:
                come_back_at[message_ids[message.id]] = throttle.come_back_at(slot)
                continue
            if slot is None or endpoint.rate_limit is None:
                prepare(message, endpoint, body, public_id, tenant, None)
                continue
            # Sent in [slot, slot + late_after]: a slot passed by more (this worker was held up
            # after reserving it, or its job was claimed late) is not sent now with the next
            # ones but given up for a new one (Response.late).
            send_at = clock + (slot - wall).total_seconds()
            send_by = send_at + throttle.late_after(endpoint.rate_limit).total_seconds()
            prepare(message, endpoint, body, public_id, tenant, send_at, send_by)
    sent = iter(outbound_for(settings).send_all([r for r in requests if isinstance(r, Request)]))
    responses = [next(sent) if isinstance(r, Request) else r for r in requests]
    done_at = utcnow()
    worker = worker_name()
    successes: set[int] = set()
    failures: set[int] = set()
    gone: set[int] = set()
    messages = cast(Table, WebhookMessage.__table__)
    with runtime.db.transaction() as session:
        # Core statements: the ORM's per-statement bookkeeping costs more than the UPDATE here.
        connection = session.connection()
        for message_id, attempts, reason in abandoned:
            connection.execute(
                update(messages)
                .where(messages.c.id == message_id, messages.c.attempts == attempts)
                .values(
                    status="failed",
                    last_error=reason[:2000],
                    next_attempt_at=None,
                    throttled_until=None,
                    updated_at=done_at,
                )
            )
        attempt_rows: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        # Which planned messages are still as we read them (the write lock on SQLite, row locks
        # on PostgreSQL, keep them so until commit): an attempt another worker already recorded
        # is not recorded, nor retried, again.
        current_query = select(messages.c.id, messages.c.attempts, messages.c.next_attempt_at).where(
            messages.c.id.in_([plan.message_id for plan in planned]), messages.c.status == "pending"
        )
        if not runtime.db.is_sqlite:
            current_query = current_query.with_for_update()
        current = {row[0]: (row[1], row[2]) for row in connection.execute(current_query)} if planned else {}
        sent_bodies = {row[0].id: row[2] for row in rows}
        erased = _erased_meanwhile(
            runtime,
            connection,
            {
                plan.event_id: sent_bodies[plan.message_id]
                for plan, response in zip(planned, responses, strict=True)
                if response.body
            },
        )
        for plan, response in zip(planned, responses, strict=True):
            if response.late:
                # Not sent, its slot passed: its job runs again at once and reserves a new slot
                # (the passed one is no longer usable). No attempt: nothing was sent.
                outcomes[plan.job_id] = Retry(dt.timedelta(0), "throttled: its sending slot passed")
                continue
            if response.deferred:
                # Not sent: its endpoint stopped answering meanwhile. Tried again when a timeout
                # would have been, without using up an attempt (nothing was sent).
                later = dt.timedelta(seconds=_deferred_delay(settings, plan.round_attempts))
                outcomes[plan.job_id] = Retry(later, response.error)
                continue
            found = current.get(plan.message_id)
            if found is None:
                continue  # finished meanwhile (succeeded, failed): this job is done
            if found[0] != plan.attempts:
                # Another run recorded an attempt meanwhile and the message is still pending:
                # this job follows its schedule (finishing it `done` left the message pending
                # with no job behind it, never retried).
                wait = (found[1] or done_at) - done_at
                outcomes[plan.job_id] = Retry(max(wait, dt.timedelta(0)), "another run recorded this attempt")
                continue
            attempt = plan.attempts + 1
            round_attempts = plan.round_attempts + 1
            reason = "" if response.success else _failure_reason(response)[:2000]
            retry_in: float | None = None
            if response.success:
                status = "succeeded"
            elif response.status == 410:
                status = "failed"
            else:
                retry_in = signing.next_delay(settings, round_attempts)
                if retry_in is not None and response.status == 429 and response.retry_after is not None:
                    retry_in = min(response.retry_after, MAX_RETRY_AFTER.total_seconds())
                status = "failed" if retry_in is None else "pending"
            updates.append(
                {
                    "message_id": plan.message_id,
                    "new_status": status,
                    "new_attempts": attempt,
                    "new_round": round_attempts,
                    "new_code": response.status or None,
                    "new_error": reason,
                    "new_next": None if retry_in is None else done_at + dt.timedelta(seconds=retry_in),
                    "new_delivered": done_at if response.success else None,
                }
            )
            attempt_rows.append(
                {
                    "message_id": plan.message_id,
                    "endpoint_id": plan.endpoint_id,
                    "event_id": plan.event_id,
                    "attempt": attempt,
                    "status_code": response.status,
                    "success": response.success,
                    "error": reason,
                    "duration_ms": response.duration_ms,
                    # A receiver's answer may echo the body: not kept when the person it was
                    # about was erased while it was on its way.
                    "response_body": "" if plan.event_id in erased else response.body,
                    "worker": worker,
                    "created_at": done_at,
                }
            )
            if response.success:
                successes.add(plan.endpoint_id)
            else:
                failures.add(plan.endpoint_id)
                if response.status == 410:
                    gone.add(plan.endpoint_id)
            if retry_in is not None:
                outcomes[plan.job_id] = Retry(dt.timedelta(seconds=retry_in), reason)
        if updates:
            connection.execute(
                update(messages)
                .where(messages.c.id == bindparam("message_id"))
                .values(
                    status=bindparam("new_status"),
                    attempts=bindparam("new_attempts"),
                    round_attempts=bindparam("new_round"),
                    last_status_code=bindparam("new_code"),
                    last_error=bindparam("new_error"),
                    next_attempt_at=bindparam("new_next"),
                    throttled_until=None,
                    delivered_at=func.coalesce(bindparam("new_delivered"), messages.c.delivered_at),
                    updated_at=done_at,
                ),
                updates,
            )
        if attempt_rows:
            session.execute(insert(WebhookAttempt), attempt_rows)
        _endpoint_health(session, successes, failures, gone, done_at)
    if come_back_at:
        come_back_at = _still_reserved(runtime, come_back_at, message_ids)
    # Relative to now, as the runner adds them to its clock when it records them right after:
    # the time the batch spent sending does not push the messages past their slots.
    finished = utcnow()
    for job_id, at in come_back_at.items():
        outcomes[job_id] = Retry(
            max(at - finished, dt.timedelta(0)), "throttled: waiting for its sending slot"
        )
    return outcomes


def _erased_meanwhile(runtime: Runtime, connection: Any, sent: dict[int, str]) -> set[int]:
    """The events of `sent` (event ID: the body sent) whose stored body is no longer the one sent:
    a person's erasure (privacy.service) rewrote it while the delivery was on its way. On
    PostgreSQL the bodies stay locked (shared) until the attempts are recorded, so an erasure
    either changed them before (seen here) or clears the recorded answers after."""
    if not sent:
        return set()
    payloads = cast(Table, WebhookPayload.__table__)
    query = select(payloads.c.event_id, payloads.c.body).where(payloads.c.event_id.in_(sorted(sent)))
    if not runtime.db.is_sqlite:
        query = query.with_for_update(read=True)
    return {event_id for event_id, body in connection.execute(query) if body != sent[event_id]}


def _planned_rows(runtime: Runtime, message_ids: list[int], now: dt.datetime) -> list[Any]:
    """(message, endpoint, body, event public ID, tenant: the endpoint's master account) of each
    message. An `account_field` endpoint follows its account's field first (written as a fan-out
    does): a retry or replay after the field changed goes to the new URL, and after it was cleared
    goes nowhere (the endpoint is disabled, the message ends failed)."""
    query = (
        select(
            WebhookMessage,
            WebhookEndpoint,
            WebhookPayload.body,
            Event.public_id,
            Account.webhook_endpoint,
            func.coalesce(Account.parent_id, Account.id),
        )
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
        .join(Account, Account.id == WebhookEndpoint.account_id)
        .join(Event, Event.id == WebhookMessage.event_id)
        .join(WebhookPayload, WebhookPayload.event_id == WebhookMessage.event_id)
        .where(WebhookMessage.id.in_(message_ids))
    )
    with runtime.db.read() as session:
        rows = session.execute(query).all()
    behind = sorted({row[1].id for row in rows if service.field_state(row[1], row[4], now)})
    if behind:
        with runtime.db.transaction() as session:
            # In ID order: two workers doing this at once lock the rows in the same order.
            for endpoint_id in behind:
                endpoint = session.get(WebhookEndpoint, endpoint_id)
                if endpoint is not None:
                    service.follow_field(endpoint, service.field_of(session, endpoint), now)
        with runtime.db.read() as session:
            rows = session.execute(query).all()
    return [(*row[:4], row[5]) for row in rows]


def _still_reserved(
    runtime: Runtime, come_back_at: dict[int, dt.datetime], message_ids: dict[int, int]
) -> dict[int, dt.datetime]:
    """`come_back_at` less the jobs whose message gave its slot up while this batch was sending
    (the limit changed, the endpoint was disabled: service._restart_throttle): those run again
    now, to reserve a slot at the new rate or to end."""
    job_messages = {
        job_id: message_id for message_id, job_id in message_ids.items() if job_id in come_back_at
    }
    with runtime.db.read() as session:
        holding_slots = set(
            session.scalars(
                select(WebhookMessage.id).where(
                    WebhookMessage.id.in_(list(job_messages.values())),
                    WebhookMessage.throttled_until.is_not(None),
                )
            )
        )
    now = utcnow()
    return {
        job_id: at if job_messages[job_id] in holding_slots else now for job_id, at in come_back_at.items()
    }


def _slots(
    runtime: Runtime, throttled: list[tuple[WebhookMessage, WebhookEndpoint]], hold_until: dt.datetime
) -> dict[int, dt.datetime | None]:
    """The sending slot of each still pending message of `throttled`: the one it reserved before
    (read with it: no write), else a new reservation (one write transaction for the batch)."""
    now = utcnow()
    slots: dict[int, dt.datetime | None] = {}
    wanting: list[int] = []
    for message, endpoint in throttled:
        if throttle.usable(message.throttled_until, now, endpoint.rate_limit):
            slots[message.id] = message.throttled_until
        else:
            wanting.append(message.id)
    if wanting:
        held = [slot for slot in slots.values() if slot is not None and slot <= hold_until]
        with runtime.db.transaction() as session:
            slots.update(
                throttle.reserve(
                    session,
                    wanting,
                    lock_rows=not runtime.db.is_sqlite,
                    hold_until=hold_until,
                    held_end=max(held, default=None),
                )
            )
    return slots


def _endpoint_health(
    session: Any, successes: set[int], failures: set[int], gone: set[int], now: dt.datetime
) -> None:
    """Success clears the failure clock; failures start it; five days of failures, or a 410,
    disable the endpoint with the reason stated, and tell its owner with a
    `webhook_endpoint_disabled` event in the same transaction (delivered to the account's other
    enabled endpoints: the disabled one gets nothing more)."""
    endpoints = cast(Table, WebhookEndpoint.__table__)
    if successes:
        session.execute(
            update(endpoints)
            .where(endpoints.c.id.in_(successes))
            .values(failing_since=None, last_success_at=now)
        )
    disabled: list[Any] = []
    returned = (endpoints.c.id, endpoints.c.account_id, endpoints.c.url, endpoints.c.disabled_reason)
    failing_only = failures - successes
    if failing_only:
        session.execute(
            update(endpoints)
            .where(endpoints.c.id.in_(failing_only), endpoints.c.failing_since.is_(None))
            .values(failing_since=now)
        )
        disabled += session.execute(
            update(endpoints)
            .where(
                endpoints.c.id.in_(failing_only),
                endpoints.c.enabled.is_(True),
                endpoints.c.failing_since <= now - DISABLE_AFTER,
            )
            .values(
                enabled=False,
                disabled_at=now,
                updated_at=now,
                disabled_reason=(
                    f"{AUTO_DISABLED}: every delivery failed for 5 days. Fix the receiver, "
                    "then enable the endpoint and replay what it missed."
                ),
            )
            .returning(*returned)
        ).all()
    if gone:
        disabled += session.execute(
            update(endpoints)
            .where(endpoints.c.id.in_(gone), endpoints.c.enabled.is_(True))
            .values(
                enabled=False,
                disabled_at=now,
                updated_at=now,
                disabled_reason=f"{AUTO_DISABLED}: the endpoint answered 410 Gone.",
            )
            .returning(*returned)
        ).all()
    for endpoint_id, account_id, url, reason in sorted(disabled):
        events.emit(
            session,
            account_id,
            ENDPOINT_DISABLED,
            {
                "endpoint": f"{service.PREFIX}{endpoint_id}",
                "url": url,
                "reason": reason,
                "disabled_at": fmt(now),
            },
        )
