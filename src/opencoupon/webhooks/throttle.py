"""Per-endpoint delivery throttle: at most `rate_limit` messages a second to an endpoint, across
every job runner on the database.

A slot scheduler kept in the database (GCRA with no burst): `webhook_endpoints.throttle_next_at`
is the endpoint's first free sending slot. A delivery reserves slots by moving it on, one
interval (1 / rate_limit seconds) per message, under the endpoint's row lock (FOR UPDATE on
PostgreSQL; the write lock of BEGIN IMMEDIATE on SQLite), and writes each message's slot on the
message (`throttled_until`) in the same transaction. A message whose slot is further away than
`HOLD` goes back to the queue until about `LEAD` before it (a `Retry`: no attempt is counted) and, when
its job runs again, sends at its slot without reserving another one; one whose slot is near
waits for it in the send itself (outbound.Request.not_before). So deliveries leave at their slots,
one interval apart, whatever runner sends them, and a queue of a thousand messages keeps its
order instead of pushing itself back.

A send never starts before its slot, nor more than `late_after(rate_limit)` after it
(outbound.Request.not_after): a worker that was held up (a busy machine, a slow commit, a job
claimed late) does not send the slots it missed together, but gives each such slot up and reserves
a new one from the endpoint's first free slot (no attempt counted). Every runner reserves from the
same row, so in any one second at most rate_limit + max(1, ceil(rate_limit / 100)) sends start to
an endpoint, whatever the number of runners and however late they are.

Unlimited endpoints (rate_limit NULL) never reach this module: no extra read or write.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from opencoupon.kit.clock import utcnow
from opencoupon.models import WebhookEndpoint, WebhookMessage

MAX_RATE = 10_000
# A job comes back at least this long before its slot and waits for it while sending: the
# runner's claim latency (its poll, its gathering of a batch, a busy machine) then does not make
# a message late, which would bunch it with the next ones at the receiver.
LEAD = dt.timedelta(seconds=2)
# Come-back times are rounded down to this grid: the jobs of a throttled endpoint come due in
# groups, one runner unit waiting for a group's slots, not one unit per claim.
GRID = dt.timedelta(seconds=0.5)
# A job run holds (sends, waiting for them) the slots up to this far ahead.
HOLD = LEAD + GRID
# A send may start this long after its slot at most, or one interval when that is longer (see
# late_after): the time an event loop needs to wake a request up and hand it a connection. Any
# later (the runner was stopped, held up, or behind) and the slot is given up for a new one: the
# slots a late worker missed must not go out together.
LATE_LIMIT = dt.timedelta(milliseconds=10)
_EPOCH = dt.datetime(1970, 1, 1)


def interval(rate_limit: int) -> dt.timedelta:
    """Time between two slots, rounded up to the microsecond (never faster than the limit)."""
    return dt.timedelta(microseconds=math.ceil(1_000_000 / rate_limit))


def come_back_at(slot: dt.datetime) -> dt.datetime:
    """When the job of a message whose slot is further than HOLD runs again (see GRID)."""
    early = (slot - LEAD - _EPOCH).total_seconds()
    return _EPOCH + dt.timedelta(seconds=math.floor(early / GRID.total_seconds()) * GRID.total_seconds())


def late_after(rate_limit: int) -> dt.timedelta:
    """How long after its slot a send may still start: one interval, at least LATE_LIMIT. Sends
    start in [slot, slot + late_after], slots are one interval apart, so any one second holds at
    most rate_limit + max(1, ceil(rate_limit / 100)) starts (rate_limit + 1 up to 100 a second)."""
    return max(interval(rate_limit), LATE_LIMIT)


def usable(slot: dt.datetime | None, now: dt.datetime, rate_limit: int | None) -> bool:
    """Whether a reserved slot is still the one to send at (not given up as too late)."""
    if slot is None or rate_limit is None:
        return False
    return slot >= now - late_after(rate_limit)


def reserve(
    session: Session,
    message_ids: list[int],
    *,
    lock_rows: bool,
    hold_until: dt.datetime,
    held_end: dt.datetime | None,
) -> dict[int, dt.datetime | None]:
    """Reserve a sending slot for each of `message_ids` still pending, earliest for the oldest
    message; their slots, or None for a message whose endpoint has no limit any more. A message
    another run gave a usable slot meanwhile keeps it.

    The run reserving sends the slots up to `hold_until` itself, waiting for them, and records
    when the others come back only once it is done: so these start no sooner than LEAD after its
    last held slot (this reservation's, or `held_end`, one it held already), to be claimed again
    before they are due. A burst to an idle endpoint thus pauses once, for LEAD, after its first
    HOLD of messages.

    Locks the messages, then the endpoints: the order the recording of results takes them in
    (tasks._deliver), so the two never wait on each other in a cycle on PostgreSQL."""
    messages = cast(Table, WebhookMessage.__table__)
    endpoints = cast(Table, WebhookEndpoint.__table__)
    query = (
        select(messages.c.id, messages.c.endpoint_id, messages.c.throttled_until)
        .where(messages.c.id.in_(message_ids), messages.c.status == "pending")
        .order_by(messages.c.id)
    )
    if lock_rows:
        query = query.with_for_update()
    connection = session.connection()
    rows = connection.execute(query).all()
    # The limits, to tell a usable slot from a passed one (read without a lock: the endpoints
    # that reserve are locked and read again below).
    rates = dict(
        connection.execute(
            select(endpoints.c.id, endpoints.c.rate_limit).where(
                endpoints.c.id.in_({row.endpoint_id for row in rows})
            )
        ).all()
    )
    now = utcnow()
    slots: dict[int, dt.datetime | None] = {}
    wanting: dict[int, list[int]] = defaultdict(list)
    for message_id, endpoint_id, throttled_until in rows:
        if usable(throttled_until, now, rates.get(endpoint_id)):
            slots[message_id] = throttled_until
        else:
            wanting[endpoint_id].append(message_id)
    # Slots one interval apart from each endpoint's first free one; then those not held by this
    # run move past its last held slot + LEAD.
    planned: dict[int, tuple[dt.timedelta, list[dt.datetime]]] = {}
    last_held = held_end
    for endpoint_id in sorted(wanting):
        ids = wanting[endpoint_id]
        endpoint_query = select(endpoints.c.rate_limit, endpoints.c.throttle_next_at).where(
            endpoints.c.id == endpoint_id
        )
        if lock_rows:
            endpoint_query = endpoint_query.with_for_update()
        found = connection.execute(endpoint_query).first()
        if found is None or found.rate_limit is None:
            slots.update(dict.fromkeys(ids))  # the limit was removed meanwhile: send now
            continue
        step = interval(found.rate_limit)
        first = max(found.throttle_next_at or now, now)
        times = [first + n * step for n in range(len(ids))]
        held = [t for t in times if t <= hold_until]
        if held:
            last_held = max(last_held or held[-1], held[-1])
        planned[endpoint_id] = (step, times)
    reserved: list[dict[str, Any]] = []
    for endpoint_id, (step, times) in planned.items():
        if last_held is not None:
            later = last_held + LEAD
            for n, at in enumerate(times):
                if at > hold_until:
                    times[n] = at = max(at, later)
                    later = at + step
        for message_id, at in zip(wanting[endpoint_id], times, strict=True):
            slots[message_id] = at
            reserved.append({"message_id": message_id, "slot": at})
        connection.execute(
            update(endpoints).where(endpoints.c.id == endpoint_id).values(throttle_next_at=times[-1] + step)
        )
    if reserved:
        connection.execute(
            update(messages)
            .where(messages.c.id == bindparam("message_id"))
            .values(throttled_until=bindparam("slot")),
            reserved,
        )
    return slots
