"""The push fan-out job: subscriptions in ID order, a chunk at a time, each payload encrypted for
its subscriber (aes128gcm, RFC 8291) and sent through the shared aiohttp session. Progress and the
cursor are saved after every chunk, so a worker that dies costs at most one chunk sent twice.

A subscription that cannot be encrypted for (a key that is not a P-256 point, stored before the
subscribe route checked it) or sent to counts as failed for that subscriber alone; one with an
unusable key is removed. If the job still fails for good (its last attempt), the fan-out is closed
with what was left counted as failed: a fan-out always ends."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import CursorResult, Select, delete, func, select, update

from opencoupon.kit.clock import utcnow
from opencoupon.models import Job, PushFanout, PushSubscription
from opencoupon.push import ece, service, vapid
from opencoupon.push.service import FANOUT
from opencoupon.runtime import Runtime
from opencoupon.webhooks.outbound import Request, Response, outbound_for
from opencoupon.worker.queue import encode
from opencoupon.worker.registry import Retry, on_dead, task, worker_name

log = logging.getLogger("opencoupon.push")

CHUNK = 1000
TTL_SECONDS = 24 * 3600
# Give the lease back regularly: a long fan-out continues as the same job.
SLICE_SECONDS = 20.0


def encrypt(plaintext: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291 aes128gcm body for one subscriber (a fresh sender key per message)."""
    return ece.encrypt(plaintext, vapid.b64url_decode(p256dh), vapid.b64url_decode(auth))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# How the outbound client reports a request the SSRF guard refused: an IP literal or scheme
# (before connecting), or a name resolving to a non-public address (its resolver).
_REFUSED = ("refused:", "connection failed: refused:")


def is_refused(response: Response) -> bool:
    return response.status == 0 and response.error.startswith(_REFUSED)


def _gone(response: Response) -> bool:
    """The subscription is no more: the push service says so (404, 410), or the SSRF guard refuses
    its endpoint (its host now resolves to a non-public address): deleted, counted `removed`."""
    return response.status in (404, 410) or is_refused(response)


def _keys_usable(sub: PushSubscription) -> bool:
    """Whether the subscription's keys are a P-256 point and a 16-byte secret."""
    try:
        key, secret = vapid.b64url_decode(sub.p256dh), vapid.b64url_decode(sub.auth)
    except ValueError:
        return False
    return len(secret) == 16 and len(key) == 65 and service.valid_point(key)


def _payload(runtime: Runtime, fanout: PushFanout, key: str) -> bytes:
    url = runtime.url(fanout.url.replace("{key}", key)) if fanout.url else ""
    return service.payload(fanout.title, fanout.message, url, f"psh_{fanout.id}")


def _remaining(job: PushFanout) -> Select[Any]:
    """The fan-out's subscriptions after its cursor."""
    query = select(PushSubscription).where(
        PushSubscription.target_kind == job.target_kind,
        PushSubscription.group_id == job.group_id,
        PushSubscription.id > job.cursor,
    )
    if job.target_key:
        query = query.where(PushSubscription.target_key == job.target_key)
    return service.deliverable(query, job.target_kind)


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
    """End a fan-out whose job failed for good: every subscription not yet sent to has failed."""
    with runtime.db.transaction() as session:
        job = session.get(PushFanout, fanout_id)
        if job is None or job.status == "done":
            return
        left = int(session.scalar(select(func.count()).select_from(_remaining(job).subquery())) or 0)
        session.execute(
            update(PushFanout)
            .where(PushFanout.id == fanout_id, PushFanout.cursor == job.cursor)
            .values(status="done", failed=PushFanout.failed + left, finished_at=utcnow())
        )
    log.warning("fan-out %s failed for good; %d subscriptions counted as failed", fanout_id, left)


def _fanout(runtime: Runtime, fanout_id: int) -> None:
    started = time.monotonic()
    signer = vapid.signer(runtime)
    sender = outbound_for(runtime.settings)
    while True:
        with runtime.db.read() as session:
            job = session.get(PushFanout, fanout_id)
            if job is None or job.status == "done":
                return
            subs = list(session.scalars(_remaining(job).order_by(PushSubscription.id).limit(CHUNK)))
        cursor = job.cursor
        if not subs:
            with runtime.db.transaction() as session:
                session.execute(
                    update(PushFanout)
                    .where(PushFanout.id == fanout_id, PushFanout.cursor == cursor)
                    .values(status="done", finished_at=utcnow())
                )
            return
        requests = []
        sending = []
        unusable: list[int] = []
        failed = 0
        t0 = time.monotonic()
        for sub in subs:
            try:
                body = encrypt(_payload(runtime, job, sub.target_key), sub.p256dh, sub.auth)
                headers = {
                    "authorization": signer.authorization(_origin(sub.endpoint)),
                    "content-encoding": "aes128gcm",
                    "content-type": "application/octet-stream",
                    "ttl": str(TTL_SECONDS),
                    "urgency": "normal",
                }
            except Exception as exc:
                # This subscriber alone: the others of the chunk are sent.
                failed += 1
                if not _keys_usable(sub):
                    unusable.append(sub.id)
                log.warning("fan-out %s: subscription %s cannot be sent to: %r", fanout_id, sub.id, exc)
                continue
            requests.append(Request(sub.endpoint, body, headers))
            sending.append(sub)
        log.debug("fan-out %s: %d encrypted in %.3f s", fanout_id, len(requests), time.monotonic() - t0)
        responses = sender.send_all(requests) if requests else []
        gone = [sub.id for sub, r in zip(sending, responses, strict=True) if _gone(r)]
        sent = sum(1 for r in responses if r.success)
        failed += len(responses) - sent - len(gone)
        with runtime.db.transaction() as session:
            moved = cast(
                "CursorResult[Any]",
                session.execute(
                    update(PushFanout)
                    .where(PushFanout.id == fanout_id, PushFanout.cursor == cursor)
                    .values(
                        cursor=subs[-1].id,
                        status="running",
                        sent=PushFanout.sent + sent,
                        failed=PushFanout.failed + failed,
                        removed=PushFanout.removed + len(gone),
                    )
                ),
            )
            if moved.rowcount == 0:
                return  # another worker took this fan-out over
            if gone or unusable:
                session.execute(delete(PushSubscription).where(PushSubscription.id.in_(gone + unusable)))
        if time.monotonic() - started > SLICE_SECONDS:
            raise Retry(dt.timedelta(0), "continuing")
