"""The push fan-out job: subscriptions in ID order, a chunk at a time, each payload encrypted for
its subscriber (aes128gcm, RFC 8291) and sent through the shared aiohttp session. Progress and the
cursor are saved after every chunk, so a worker that dies costs at most one chunk sent twice."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import CursorResult, delete, select, update

from opencoupon.kit.clock import utcnow
from opencoupon.models import PushFanout, PushSubscription
from opencoupon.push import ece, vapid
from opencoupon.push.service import FANOUT
from opencoupon.runtime import Runtime
from opencoupon.webhooks.outbound import Request, outbound_for
from opencoupon.worker.registry import Retry, task

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


def _payload(runtime: Runtime, fanout: PushFanout, key: str) -> bytes:
    return json.dumps(
        {
            "title": fanout.title,
            "body": fanout.message,
            "url": runtime.url(fanout.url.replace("{key}", key)) if fanout.url else "",
            "tag": f"psh_{fanout.id}",
        },
        separators=(",", ":"),
    ).encode()


@task(FANOUT)
def fanout(runtime: Runtime, payload: dict[str, Any]) -> None:
    fanout_id = int(payload["fanout_id"])
    started = time.monotonic()
    signer = vapid.signer(runtime)
    sender = outbound_for(runtime.settings)
    while True:
        with runtime.db.read() as session:
            job = session.get(PushFanout, fanout_id)
            if job is None or job.status == "done":
                return
            query = select(PushSubscription).where(
                PushSubscription.target_kind == job.target_kind,
                PushSubscription.group_id == job.group_id,
                PushSubscription.id > job.cursor,
            )
            if job.target_key:
                query = query.where(PushSubscription.target_key == job.target_key)
            subs = list(session.scalars(query.order_by(PushSubscription.id).limit(CHUNK)))
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
        t0 = time.monotonic()
        for sub in subs:
            headers = {
                "authorization": signer.authorization(_origin(sub.endpoint)),
                "content-encoding": "aes128gcm",
                "content-type": "application/octet-stream",
                "ttl": str(TTL_SECONDS),
                "urgency": "normal",
            }
            body = encrypt(_payload(runtime, job, sub.target_key), sub.p256dh, sub.auth)
            requests.append(Request(sub.endpoint, body, headers))
        log.debug("fan-out %s: %d encrypted in %.3f s", fanout_id, len(requests), time.monotonic() - t0)
        responses = sender.send_all(requests)
        gone = [sub.id for sub, r in zip(subs, responses, strict=True) if r.status in (404, 410)]
        sent = sum(1 for r in responses if r.success)
        failed = len(responses) - sent - len(gone)
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
            if gone:
                session.execute(delete(PushSubscription).where(PushSubscription.id.in_(gone)))
        if time.monotonic() - started > SLICE_SECONDS:
            raise Retry(dt.timedelta(0), "continuing")
