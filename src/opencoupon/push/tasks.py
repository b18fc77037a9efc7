"""The push fan-out job: subscriptions in ID order, a chunk at a time, each payload encrypted for
its subscriber (aes128gcm, RFC 8291) and sent through the push pool (`push.outbound`). Progress,
the cursor and the subscriptions to try again are saved after every chunk, so a worker that dies
costs at most one chunk sent twice.

The walk ends at the highest subscription ID when the push was queued (`last_subscription_id`):
later subscriptions are not part of it. A push service answering 429 or 5xx, or not in time, is
temporary (RFC 8030): the subscription is kept in `push_retries` and tried again after its
Retry-After or the next delay of `OPENCOUPON_PUSH_RETRY_DELAYS`, while the message's TTL lasts;
after the last try it counts as failed (a request deferred behind a stalled origin was never
sent: it waits, but uses no try). Meanwhile the job waits (`Retry`, not an attempt). When
nothing is left the fan-out is done, and subscriptions it queued but found no more (opted out,
their session removed) are counted removed: `sent + failed + removed == queued`.

A subscription that cannot be encrypted for (a key that is not a P-256 point, stored before the
subscribe route checked it) or sent to counts as failed for that subscriber alone; one with an
unusable key is removed. If the job still fails for good (its last attempt), the fan-out is closed
with what was left counted as failed: a fan-out always ends."""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import CursorResult, Select, case, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session

from opencoupon.config import Settings
from opencoupon.kit.clock import utcnow
from opencoupon.models import Job, PushFanout, PushRetry, PushSubscription
from opencoupon.push import ece, service, vapid
from opencoupon.push.outbound import push_outbound_for
from opencoupon.push.service import FANOUT
from opencoupon.runtime import Runtime
from opencoupon.webhooks.outbound import Request, Response
from opencoupon.worker.queue import encode
from opencoupon.worker.registry import Retry, on_dead, task, worker_name

log = logging.getLogger("opencoupon.push")

CHUNK = 1000
TTL_SECONDS = 24 * 3600
# Give the lease back regularly: a long fan-out continues as the same job.
SLICE_SECONDS = 20.0
# Waits before the next try of a subscription its push service answered 429/5xx or not in time
# for (OPENCOUPON_PUSH_RETRY_DELAYS overrides them): the first try and up to four more.
DEFAULT_RETRY_DELAYS = (15.0, 60.0, 300.0, 1800.0)
JITTER = 0.1


def encrypt(plaintext: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291 aes128gcm body for one subscriber (a fresh sender key per message)."""
    return ece.encrypt(plaintext, vapid.b64url_decode(p256dh), vapid.b64url_decode(auth))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def retry_delays(settings: Settings) -> tuple[float, ...]:
    text = settings.push_retry_delays.strip()
    if not text:
        return DEFAULT_RETRY_DELAYS
    return tuple(float(part) for part in text.split(",") if part.strip())


def next_delay(settings: Settings, tries: int, retry_after: float | None) -> float | None:
    """Seconds until the next try after `tries` temporary failures (the push service's
    Retry-After when it gave one); None when there is no next try."""
    delays = retry_delays(settings)
    if tries > len(delays):
        return None
    if retry_after is not None:
        # Anyone's host can be a push service: a wait past the message's life (however large,
        # past any date) means no next try, decided before it becomes a date.
        return min(retry_after, float(TTL_SECONDS) + 1)
    return delays[tries - 1] * random.uniform(1.0, 1.0 + JITTER)


# How the outbound client reports a request the SSRF guard refused: an IP literal or scheme
# (before connecting), or a name resolving to a non-public address (its resolver).
_REFUSED = ("refused:", "connection failed: refused:")


def is_refused(response: Response) -> bool:
    return response.status == 0 and response.error.startswith(_REFUSED)


def _gone(response: Response) -> bool:
    """The subscription is no more: the push service says so (404, 410), or the SSRF guard refuses
    its endpoint (its host now resolves to a non-public address): deleted, counted `removed`."""
    return response.status in (404, 410) or is_refused(response)


def _temporary(response: Response) -> bool:
    """RFC 8030: too many requests, a server error, or no answer (timed out, connection failed,
    deferred behind a push service that stopped answering): worth another try."""
    return response.status == 429 or response.status >= 500 or response.status == 0


def _keys_usable(sub: PushSubscription) -> bool:
    """Whether the subscription's keys are a P-256 point and a 16-byte secret."""
    try:
        key, secret = vapid.b64url_decode(sub.p256dh), vapid.b64url_decode(sub.auth)
    except ValueError:
        return False
    return len(secret) == 16 and len(key) == 65 and service.valid_point(key)


def _payload(runtime: Runtime, fanout: PushFanout, key: str) -> bytes:
    url = runtime.url(service.page_path(fanout.url, key)) if fanout.url else ""
    return service.payload(fanout.title, fanout.message, url, f"psh_{fanout.id}")


def _remaining(job: PushFanout) -> Select[Any]:
    """The fan-out's subscriptions after its cursor (up to the last one when it was queued)."""
    query = select(PushSubscription).where(
        PushSubscription.target_kind == job.target_kind,
        PushSubscription.group_id == job.group_id,
        PushSubscription.id > job.cursor,
    )
    if job.last_subscription_id is not None:
        query = query.where(PushSubscription.id <= job.last_subscription_id)
    if job.target_key:
        query = query.where(PushSubscription.target_key == job.target_key)
    return service.deliverable(query, job.target_kind)


def _closing_values(left: int) -> dict[str, Any]:
    """The end of a fan-out, `left` subscriptions counted failed besides: what it queued and did
    not find any more (opted out, session removed) counts as removed, so the counts add up to
    `queued` (fan-outs queued before `last_subscription_id` existed keep their counts)."""
    missing = PushFanout.queued - PushFanout.sent - PushFanout.failed - left
    return {
        "status": "done",
        "failed": PushFanout.failed + left,
        "removed": case(
            (PushFanout.last_subscription_id.is_(None), PushFanout.removed),
            (missing > PushFanout.removed, missing),
            else_=PushFanout.removed,
        ),
        "finished_at": utcnow(),
    }


@task(FANOUT)
def fanout(runtime: Runtime, payload: dict[str, Any]) -> None:
    fanout_id = int(payload["fanout_id"])
    try:
        _fanout(runtime, fanout_id)
    except Retry:
        raise
    except Exception:
        # The runner retries the job with backoff; after its last attempt the fan-out must not
        # stay "running" (or "queued") for ever.
        try:
            if _last_attempt(runtime, payload):
                _close(runtime, fanout_id)
        except Exception:
            log.exception("fan-out %s could not be closed", fanout_id)
        raise


@on_dead(FANOUT)
def fanout_died(runtime: Runtime, payload: dict[str, Any]) -> None:
    """A fan-out whose worker stopped during each attempt: closed, what was not sent failed."""
    _close(runtime, int(payload["fanout_id"]))


def _last_attempt(runtime: Runtime, payload: dict[str, Any]) -> bool:
    with runtime.db.read() as session:
        found = session.execute(
            select(Job.attempts, Job.max_attempts).where(
                Job.kind == FANOUT,
                Job.payload == encode(payload),
                Job.status == "running",
                Job.locked_by == worker_name(),
            )
        ).first()
    return found is not None and found[0] >= found[1]


def _close(runtime: Runtime, fanout_id: int) -> None:
    """End a fan-out whose job failed for good: every subscription not yet sent to (and every one
    waiting to be tried again) has failed."""
    with runtime.db.transaction() as session:
        job = session.get(PushFanout, fanout_id)
        if job is None or job.status == "done":
            return
        left = int(session.scalar(select(func.count()).select_from(_remaining(job).subquery())) or 0)
        waiting = cast(
            "CursorResult[Any]", session.execute(delete(PushRetry).where(PushRetry.fanout_id == fanout_id))
        )
        left += int(waiting.rowcount or 0)
        session.execute(
            update(PushFanout)
            .where(PushFanout.id == fanout_id, PushFanout.cursor == job.cursor)
            .values(**_closing_values(left))
        )
    log.warning("fan-out %s failed for good; %d subscriptions counted as failed", fanout_id, left)


class _TakenOver(Exception):
    """Another worker recorded this part of the fan-out: this run's results are not kept."""


@dataclass
class _Outcome:
    # The subscriptions the push service accepted the message for, and when it answered.
    sent: list[int] = field(default_factory=list)
    sent_at: dt.datetime | None = None
    failed: int = 0
    gone: list[int] = field(default_factory=list)
    unusable: list[int] = field(default_factory=list)
    retries: list[dict[str, Any]] = field(default_factory=list)


def _deliver(
    runtime: Runtime, job: PushFanout, subs: list[PushSubscription], tries: dict[int, int]
) -> _Outcome:
    """Send to `subs` (`tries`: temporary failures each had before) and sort out the answers."""
    signer = vapid.signer(runtime)
    outcome = _Outcome()
    now = utcnow()
    expires = job.created_at + dt.timedelta(seconds=TTL_SECONDS)
    # A try later on carries what is left of the message's TTL.
    ttl = max(0, int((expires - now).total_seconds()))
    requests = []
    sending = []
    t0 = time.monotonic()
    for sub in subs:
        try:
            body = encrypt(_payload(runtime, job, sub.target_key), sub.p256dh, sub.auth)
            headers = {
                "authorization": signer.authorization(_origin(sub.endpoint)),
                "content-encoding": "aes128gcm",
                "content-type": "application/octet-stream",
                "ttl": str(ttl),
                "urgency": "normal",
            }
        except Exception as exc:
            # This subscriber alone: the others of the chunk are sent.
            outcome.failed += 1
            if not _keys_usable(sub):
                outcome.unusable.append(sub.id)
            log.warning("fan-out %s: subscription %s cannot be sent to: %r", job.id, sub.id, exc)
            continue
        requests.append(Request(sub.endpoint, body, headers))
        sending.append(sub)
    log.debug("fan-out %s: %d encrypted in %.3f s", job.id, len(requests), time.monotonic() - t0)
    responses = push_outbound_for(runtime.settings).send_all(requests) if requests else []
    done_at = utcnow()
    outcome.sent_at = done_at
    for sub, response in zip(sending, responses, strict=True):
        if response.success:
            outcome.sent.append(sub.id)
        elif _gone(response):
            outcome.gone.append(sub.id)
        elif _temporary(response):
            # A request deferred behind a stalled origin never left: not a try, though it waits
            # as one (the TTL still bounds how long a subscriber is tried).
            count = tries.get(sub.id, 0) + (0 if response.deferred else 1)
            delay = next_delay(runtime.settings, max(count, 1), response.retry_after)
            run_at = None if delay is None else done_at + dt.timedelta(seconds=delay)
            if run_at is None or run_at > expires:
                outcome.failed += 1
            else:
                outcome.retries.append(
                    {"fanout_id": job.id, "subscription_id": sub.id, "tries": count, "run_at": run_at}
                )
        else:
            outcome.failed += 1
    return outcome


def _record(session: Session, fanout_id: int, outcome: _Outcome, **values: Any) -> None:
    """A chunk's (or a round of retries') answers, in the transaction that moved the fan-out on."""
    session.execute(
        update(PushFanout)
        .where(PushFanout.id == fanout_id)
        .values(
            status="running",
            sent=PushFanout.sent + len(outcome.sent),
            failed=PushFanout.failed + outcome.failed,
            removed=PushFanout.removed + len(outcome.gone),
            **values,
        )
    )
    if outcome.sent:
        # One statement for the chunk: the privacy export shows when a device last got a push.
        session.execute(
            update(PushSubscription)
            .where(PushSubscription.id.in_(outcome.sent))
            .values(last_sent_at=outcome.sent_at)
        )
    if outcome.retries:
        session.execute(insert(PushRetry), outcome.retries)
    if outcome.gone or outcome.unusable:
        session.execute(
            delete(PushSubscription).where(PushSubscription.id.in_(outcome.gone + outcome.unusable))
        )


def _fanout(runtime: Runtime, fanout_id: int) -> None:
    started = time.monotonic()
    while True:
        now = utcnow()
        with runtime.db.read() as session:
            job = session.get(PushFanout, fanout_id)
            if job is None or job.status == "done":
                return
            # Tries again that are due go first, then the walk.
            due = list(
                session.execute(
                    select(PushRetry.id, PushRetry.subscription_id, PushRetry.tries)
                    .where(PushRetry.fanout_id == fanout_id, PushRetry.run_at <= now)
                    .order_by(PushRetry.run_at, PushRetry.id)
                    .limit(CHUNK)
                )
            )
            next_retry: dt.datetime | None = None
            if due:
                # Not found: opted out or its session removed meanwhile (counted removed at the end).
                query = select(PushSubscription).where(PushSubscription.id.in_([row[1] for row in due]))
                subs = list(
                    session.scalars(service.deliverable(query, job.target_kind).order_by(PushSubscription.id))
                )
            else:
                subs = list(session.scalars(_remaining(job).order_by(PushSubscription.id).limit(CHUNK)))
                if not subs:
                    next_retry = session.scalar(
                        select(func.min(PushRetry.run_at)).where(PushRetry.fanout_id == fanout_id)
                    )
        cursor = job.cursor
        if due:
            outcome = _deliver(runtime, job, subs, {row[1]: row[2] for row in due})
            try:
                with runtime.db.transaction() as session:
                    taken = cast(
                        "CursorResult[Any]",
                        session.execute(delete(PushRetry).where(PushRetry.id.in_([row[0] for row in due]))),
                    )
                    if taken.rowcount != len(due):
                        raise _TakenOver
                    _record(session, fanout_id, outcome)
            except _TakenOver:
                return
        elif subs:
            outcome = _deliver(runtime, job, subs, {})
            with runtime.db.transaction() as session:
                moved = cast(
                    "CursorResult[Any]",
                    session.execute(
                        update(PushFanout)
                        .where(PushFanout.id == fanout_id, PushFanout.cursor == cursor)
                        .values(cursor=subs[-1].id)
                    ),
                )
                if moved.rowcount == 0:
                    return  # another worker took this fan-out over
                _record(session, fanout_id, outcome)
        elif next_retry is not None:
            # Every subscription was tried; some wait for their next try. Not an attempt.
            wait = max(dt.timedelta(0), next_retry - utcnow())
            raise Retry(wait, "waiting to try busy push services again")
        else:
            with runtime.db.transaction() as session:
                session.execute(
                    update(PushFanout)
                    .where(
                        PushFanout.id == fanout_id,
                        PushFanout.cursor == cursor,
                        ~exists().where(PushRetry.fanout_id == fanout_id),
                    )
                    .values(**_closing_values(0))
                )
            return
        if time.monotonic() - started > SLICE_SECONDS:
            raise Retry(dt.timedelta(0), "continuing")
