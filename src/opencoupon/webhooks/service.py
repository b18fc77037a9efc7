"""Webhook endpoints (per account and subaccount), rotation, delivery log, replay, verification."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from opencoupon.accounts import repository as accounts_repo
from opencoupon.errors import ApiError, bad_value, not_allowed
from opencoupon.events.service import EVENT_TYPES
from opencoupon.kit import ids
from opencoupon.kit.crypto import Keyring
from opencoupon.kit.dates import fmt
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import Account, Event, Job, WebhookEndpoint, WebhookMessage, WebhookPayload
from opencoupon.subaccounts.service import require_master
from opencoupon.webhooks import repository, signing, ssrf, throttle
from opencoupon.webhooks.schemas import DeliveryQuery, EndpointCreate, EndpointUpdate, Replay, Rotate
from opencoupon.worker.queue import encode, enqueue, enqueue_many, pending

PREFIX = "whe_"
ENDPOINT_NOT_FOUND = ApiError(509, "Webhook not found.")
EVENT_NOT_FOUND = ApiError(509, "Webhook not found.")
EVENT_ID = re.compile(r"^evt_[A-Za-z0-9]{20}$")
DELIVER = "webhook.deliver"
DELIVER_MAX_ATTEMPTS = 10  # of the job; a message's own retry schedule is kept on the message
REPLAY = "webhook.replay"
REPLAY_CHUNK = 500  # events a replay job queues per transaction
DEFAULT_GRACE_HOURS = 24
MAX_GRACE_HOURS = 24 * 7
FIELD = "account_field"
AUTO_DISABLED = "Disabled automatically"
FIELD_CLEARED = f"{AUTO_DISABLED}: the subaccount's webhook_endpoint field was cleared."


# ---- shared with the delivery tasks -------------------------------------------------------------


def wants(endpoint: WebhookEndpoint, event_type: str) -> bool:
    types = endpoint.events.split(",")
    return "*" in types or event_type in types


def signing_secrets(keyring: Keyring, endpoint: WebhookEndpoint, now: dt.datetime) -> list[str]:
    """The current secret, plus the previous one while its rotation grace period lasts."""
    found = [keyring.decrypt(endpoint.secret_encrypted)]
    if (
        endpoint.old_secret_encrypted
        and endpoint.old_secret_expires_at is not None
        and endpoint.old_secret_expires_at > now
    ):
        found.append(keyring.decrypt(endpoint.old_secret_encrypted))
    return [s for s in found if s]


def field_state(endpoint: WebhookEndpoint, field_url: str, now: dt.datetime) -> dict[str, Any]:
    """The columns an `account_field` endpoint changes to follow its account's `webhook_endpoint`
    field (`field_url`); empty when it already does (or is not such an endpoint).

    Cleared: no URL, disabled (nothing more is sent to the old one). Changed: the new URL; one
    disabled automatically (410 Gone, 5 days of failures, a cleared field) starts afresh there,
    one disabled by its owner through the API stays disabled."""
    if endpoint.source != FIELD or endpoint.url == field_url:
        return {}
    state: dict[str, Any] = {"url": field_url, "updated_at": now}
    if not field_url:
        if endpoint.enabled:
            state.update(enabled=False, disabled_reason=FIELD_CLEARED, disabled_at=now)
    elif not endpoint.enabled and endpoint.disabled_reason.startswith(AUTO_DISABLED):
        state.update(enabled=True, disabled_reason="", disabled_at=None, failing_since=None)
    return state


def follow_field(endpoint: WebhookEndpoint, field_url: str, now: dt.datetime) -> bool:
    """Bring an `account_field` endpoint in line with its account's field (see `field_state`), in
    the caller's transaction; whether it changed."""
    state = field_state(endpoint, field_url, now)
    for column, value in state.items():
        setattr(endpoint, column, value)
    return bool(state)


def field_of(session: Session, endpoint: WebhookEndpoint) -> str:
    account = session.get(Account, endpoint.account_id)
    return account.webhook_endpoint if account is not None else ""


def queue_delivery(session: Session, endpoint: WebhookEndpoint, event: Event, now: dt.datetime) -> bool:
    """Queue `event` for `endpoint` (a new message, or a replay of an existing one that keeps its
    webhook-id). False when a delivery of it is already pending."""
    return queue_deliveries(session, endpoint, [event], now) == 1


def queue_deliveries(
    session: Session, endpoint: WebhookEndpoint, events: Sequence[Event], now: dt.datetime
) -> int:
    """`queue_delivery` for several events (a replay's chunk), with a few queries for them all;
    how many were queued."""
    if not events:
        return 0
    event_ids = [event.id for event in events]
    have_body = set(
        session.scalars(sa.select(WebhookPayload.event_id).where(WebhookPayload.event_id.in_(event_ids)))
    )
    # An event that had no endpoint when it happened: its body is written now, once.
    session.add_all(
        WebhookPayload(event_id=event.id, body=signing.build_body(event))
        for event in events
        if event.id not in have_body
    )
    found = repository.messages_for(session, endpoint.id, event_ids)
    on_its_way = pending(
        session, DELIVER, [{"message_id": m.id} for m in found.values() if m.status == "pending"]
    )
    queued: list[WebhookMessage] = []
    for event in events:
        message = found.get(event.id)
        if message is None:
            message = WebhookMessage(
                account_id=endpoint.account_id,
                endpoint_id=endpoint.id,
                event_id=event.id,
                status="pending",
                attempts=0,
                round_attempts=0,
                last_error="",
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            session.add(message)
        elif message.status == "pending" and encode({"message_id": message.id}) in on_its_way:
            continue
        else:
            # Delivered or failed, or pending with no job left to deliver it (a job that died after
            # its attempts, e.g. a worker killed during each one): queue it again.
            message.status = "pending"
            message.round_attempts = 0
            message.next_attempt_at = now
            message.throttled_until = None  # a slot reserved for an earlier round is not this one's
            message.updated_at = now
        queued.append(message)
    session.flush()
    enqueue_many(
        session,
        DELIVER,
        [{"message_id": message.id} for message in queued],
        run_at=now,
        max_attempts=DELIVER_MAX_ATTEMPTS,
    )
    return len(queued)


# ---- API ------------------------------------------------------------------------------------------


def to_public(endpoint: WebhookEndpoint, ctx: ApiContext) -> dict[str, Any]:
    now = ctx.now
    rotating = endpoint.old_secret_expires_at if endpoint.old_secret_encrypted else None
    # An account_field endpoint as it follows the field now, even before a delivery or a fan-out
    # has written that down (this may be a read-only transaction).
    shown: dict[str, Any] = {
        "url": endpoint.url,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": endpoint.disabled_at,
        "failing_since": endpoint.failing_since,
        "updated_at": endpoint.updated_at,
    }
    if endpoint.source == FIELD:
        shown.update(field_state(endpoint, field_of(ctx.session, endpoint), now))
    return {
        "id": f"{PREFIX}{endpoint.id}",
        "subaccount": "" if endpoint.account_id == ctx.account.id else f"sub_{endpoint.account_id}",
        "url": shown["url"],
        "events": endpoint.events.split(","),
        "description": endpoint.description,
        "source": endpoint.source,
        "enabled": shown["enabled"],
        "disabled_reason": shown["disabled_reason"],
        "disabled_at": fmt(shown["disabled_at"]),
        "failing_since": fmt(shown["failing_since"]),
        "last_success_at": fmt(endpoint.last_success_at),
        "rate_limit": endpoint.rate_limit,
        "previous_secret_expires_at": fmt(rotating) if rotating and rotating > now else "",
        "created_at": fmt(endpoint.created_at),
        "updated_at": fmt(shown["updated_at"]),
    }


def _check_url(ctx: ApiContext, url: str) -> str:
    try:
        ssrf.check_url(url, allow_private=ctx.runtime.settings.allow_private_webhooks)
    except ssrf.UnsafeTarget as exc:
        raise bad_value("url", f"{exc}.") from None
    return url


def _check_events(events: list[str]) -> str:
    if not events:
        raise ApiError(200, "Missing parameter: events")
    allowed = [*EVENT_TYPES, "*"]
    for name in events:
        if name not in allowed:
            raise not_allowed("events", allowed)
    return ",".join(dict.fromkeys(events))


def _check_rate_limit(rate_limit: int | None) -> int | None:
    if rate_limit is not None and not 1 <= rate_limit <= throttle.MAX_RATE:
        raise bad_value(
            "rate_limit",
            f"Messages per second: a whole number from 1 to {throttle.MAX_RATE}, or empty for no limit.",
        )
    return rate_limit


def _restart_throttle(session: Session, endpoint: WebhookEndpoint, now: dt.datetime) -> None:
    """After the limit changed, or the endpoint was enabled or disabled: the messages waiting for
    a slot give it up and their jobs run now, to reserve one at the new rate (or, disabled, to end
    `failed` at once; unlimited, to be sent). Messages first, then the endpoint row: the order the
    deliveries lock them in."""
    messages = cast(sa.Table, WebhookMessage.__table__)
    jobs = cast(sa.Table, Job.__table__)
    with session.no_autoflush:
        waiting = session.scalars(
            sa.select(messages.c.id).where(
                messages.c.endpoint_id == endpoint.id,
                messages.c.status == "pending",
                messages.c.throttled_until.is_not(None),
            )
        ).all()
        for start in range(0, len(waiting), 500):
            chunk = list(waiting[start : start + 500])
            session.execute(sa.update(messages).where(messages.c.id.in_(chunk)).values(throttled_until=None))
            session.execute(
                sa.update(jobs)
                .where(
                    jobs.c.kind == DELIVER,
                    jobs.c.status == "queued",
                    jobs.c.payload.in_([encode({"message_id": i}) for i in chunk]),
                )
                .values(run_at=now)
            )
    # A delivery already waiting in a runner for its old slot sends within HOLD: new slots start
    # after that.
    if endpoint.throttle_next_at is not None:
        endpoint.throttle_next_at = min(endpoint.throttle_next_at, now + throttle.HOLD)


def _owner(ctx: ApiContext, subaccount: str | None) -> Account:
    if not subaccount:
        return ctx.account
    # Naming a subaccount is managing it: subaccount credentials get 102 (CONTRACT), whatever the
    # ID, their own too (it answered 510 "not correct", as if the ID were wrong).
    require_master(ctx)
    not_found = ApiError(510, "Subaccount ID not correct.")
    sub_id = ids.parse_public_id(subaccount, "sub_", "subaccount", not_found)
    sub = accounts_repo.subaccount(ctx.session, ctx.account.id, sub_id)
    if sub is None:
        raise not_found
    return sub


def get(ctx: ApiContext, raw_id: str) -> WebhookEndpoint:
    endpoint_id = ids.parse_public_id(raw_id, PREFIX, "id", ENDPOINT_NOT_FOUND)
    found = repository.endpoint(ctx.session, ctx.scope(WebhookEndpoint.account_id), endpoint_id)
    if found is None:
        raise ENDPOINT_NOT_FOUND
    return found


def create(ctx: ApiContext, req: EndpointCreate) -> dict[str, Any]:
    owner = _owner(ctx, req.subaccount)
    url = _check_url(ctx, req.url)
    events = _check_events(req.events)
    rate_limit = _check_rate_limit(req.rate_limit)
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        account_id=owner.id,
        url=url,
        description=(req.description or "")[:200],
        events=events,
        source="api",
        enabled=req.enabled is not False,
        rate_limit=rate_limit,
        disabled_reason="",
        secret_encrypted=ctx.runtime.keyring.encrypt(secret),
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    ctx.session.add(endpoint)
    ctx.session.flush()
    # The secret is shown here and on rotation only; at rest it is encrypted.
    return {**to_public(endpoint, ctx), "secret": secret}


def update(ctx: ApiContext, req: EndpointUpdate) -> dict[str, Any]:
    endpoint = get(ctx, ctx.path_params["id"])
    if endpoint.source == FIELD:
        follow_field(endpoint, field_of(ctx.session, endpoint), ctx.now)
    if req.url is not None:
        if endpoint.source == FIELD:
            raise bad_value("url", "This endpoint follows the subaccount's webhook_endpoint field.")
        endpoint.url = _check_url(ctx, req.url)
    if req.events is not None:
        endpoint.events = _check_events(req.events)
    if req.description is not None:
        endpoint.description = req.description[:200]
    restart = False
    if "rate_limit" in req.model_fields_set:
        rate_limit = _check_rate_limit(req.rate_limit)
        restart = rate_limit != endpoint.rate_limit
        endpoint.rate_limit = rate_limit
    if req.enabled is not None and req.enabled != endpoint.enabled:
        restart = True
    if restart:
        _restart_throttle(ctx.session, endpoint, ctx.now)
    if req.enabled is not None:
        endpoint.enabled = req.enabled
        if req.enabled:
            endpoint.disabled_reason = ""
            endpoint.disabled_at = None
            endpoint.failing_since = None
        else:
            endpoint.disabled_reason = "Disabled through the API."
            endpoint.disabled_at = ctx.now
    endpoint.updated_at = ctx.now
    return to_public(endpoint, ctx)


def delete(ctx: ApiContext) -> dict[str, Any]:
    endpoint = get(ctx, ctx.path_params["id"])
    if endpoint.source == FIELD:
        raise ApiError(
            308, "This endpoint follows the subaccount's webhook_endpoint field: clear that field."
        )
    ctx.session.delete(endpoint)
    return {"id": f"{PREFIX}{endpoint.id}", "deleted": True}


def rotate(ctx: ApiContext, req: Rotate) -> dict[str, Any]:
    endpoint = get(ctx, ctx.path_params["id"])
    hours = DEFAULT_GRACE_HOURS if req.grace_hours is None else req.grace_hours
    if not 0 <= hours <= MAX_GRACE_HOURS:
        raise bad_value("grace_hours", f"Between 0 and {MAX_GRACE_HOURS}.")
    secret = signing.new_secret()
    endpoint.old_secret_encrypted = endpoint.secret_encrypted
    endpoint.old_secret_expires_at = ctx.now + dt.timedelta(hours=hours)
    endpoint.secret_encrypted = ctx.runtime.keyring.encrypt(secret)
    endpoint.updated_at = ctx.now
    return {**to_public(endpoint, ctx), "secret": secret}


def deliveries(ctx: ApiContext, req: DeliveryQuery) -> list[dict[str, Any]]:
    endpoint = get(ctx, ctx.path_params["id"])
    limit = 50 if req.limit is None else req.limit
    if not 1 <= limit <= 500:
        raise bad_value("limit", "Between 1 and 500.")
    event_id = None
    if req.event:
        event = _event(ctx, req.event)
        event_id = event.id
    before = None
    if req.before:
        before = ids.parse_public_id(req.before, "att_", "before", bad_value("before"))
    rows = repository.attempts(ctx.session, endpoint.id, event_id=event_id, before=before, limit=limit)
    return [
        {
            "id": f"att_{attempt.id}",
            "event": public_id,
            "type": type_,
            "attempt": attempt.attempt,
            "status_code": attempt.status_code,
            "success": attempt.success,
            "error": attempt.error,
            "duration_ms": attempt.duration_ms,
            "response": attempt.response_body,
            "date": fmt(attempt.created_at),
        }
        for attempt, public_id, type_ in rows
    ]


def _event(ctx: ApiContext, raw: str, param: str = "event") -> Event:
    if not raw.startswith("evt_"):
        raise ApiError(301, f"Invalid character in parameter: {param}.")
    if not EVENT_ID.match(raw):
        raise EVENT_NOT_FOUND
    found = repository.event_by_public_id(ctx.session, ctx.scope(Event.account_id), raw)
    if found is None:
        raise EVENT_NOT_FOUND
    return found


def parse_since(raw: str) -> dt.datetime:
    text = raw.strip().replace("T", " ").removesuffix("Z")
    for f in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, f)
        except ValueError:
            continue
    raise ApiError(303, "Invalid format in parameter: since. Required format: yyyy-MM-dd HH:mm:ss")


def replay(ctx: ApiContext, req: Replay) -> dict[str, Any]:
    """Send one event again, or every event since a time, to this endpoint: the same webhook-id
    and body as the first time."""
    endpoint = get(ctx, ctx.path_params["id"])
    if endpoint.source == FIELD:
        follow_field(endpoint, field_of(ctx.session, endpoint), ctx.now)
    if not endpoint.enabled or not endpoint.url:
        raise ApiError(308, "The endpoint is disabled; enable it first.")
    if req.event:
        event = _event(ctx, req.event)
        if event.account_id != endpoint.account_id:
            raise EVENT_NOT_FOUND
        queued = 1 if queue_delivery(ctx.session, endpoint, event, ctx.now) else 0
        return {"endpoint": f"{PREFIX}{endpoint.id}", "queued": queued}
    if not req.since:
        raise ApiError(200, "Missing parameter: event or since")
    since = parse_since(req.since)
    # The events that exist now; a background job walks them in chunks (webhooks.tasks.replay),
    # so the call answers at once and no transaction holds the database for the whole walk.
    through = ctx.session.scalar(sa.select(sa.func.max(Event.id))) or 0
    types = endpoint.events.split(",")
    matched = repository.count_events_since(
        ctx.session, endpoint.account_id, since, through, None if "*" in types else types
    )
    if matched:
        enqueue(ctx.session, REPLAY, replay_cursor(endpoint.id, since, 0, through))
    return {"endpoint": f"{PREFIX}{endpoint.id}", "since": fmt(since), "queued": matched}


def replay_cursor(endpoint_id: int, since: dt.datetime, after: int, through: int) -> dict[str, Any]:
    """A replay job's payload: its endpoint and time, the last event ID done (0 at the start) and
    the last one it covers (the newest when it was asked for)."""
    return {"endpoint_id": endpoint_id, "since": since.isoformat(), "after": after, "through": through}


def verify(ctx: ApiContext, webhook: str, session_code: str | None) -> dict[str, Any]:
    """The vendor's authenticity check: is this event one of the caller's?"""
    event = _event(ctx, webhook, "webhook")
    if session_code and session_code != event.session:
        raise EVENT_NOT_FOUND
    return {
        "result": "valid",
        "webhook": event.public_id,
        "date": fmt(event.created_at),
        "campaign": event.campaign,
        "session": event.session,
        "type": event.type,
    }
