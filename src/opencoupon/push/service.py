"""Subscriptions and fan-outs."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from opencoupon.db.session import upsert_insert
from opencoupon.errors import ApiError, bad_value
from opencoupon.kit import ids
from opencoupon.kit.dates import fmt
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import PushFanout, PushSubscription
from opencoupon.push.targets import Group, Subscriber
from opencoupon.push.vapid import b64url_decode
from opencoupon.webhooks import ssrf
from opencoupon.worker.queue import enqueue

FANOUT = "push.fanout"
PREFIX = "psh_"
MAX_MESSAGE = 1000
FANOUT_NOT_FOUND = ApiError(404, "Push notification not found.", http_status=404)


class BadSubscription(ValueError):
    pass


def check_subscription(endpoint: str, p256dh: str, auth: str, *, allow_private: bool) -> None:
    """A browser PushSubscription: an https push service URL, a P-256 public key, a 16-byte secret."""
    try:
        ssrf.split(endpoint, allow_private=allow_private)
    except ssrf.UnsafeTarget as exc:
        raise BadSubscription(f"endpoint: {exc}") from None
    try:
        key, secret = b64url_decode(p256dh), b64url_decode(auth)
    except ValueError:
        raise BadSubscription("keys are not base64url") from None
    if len(key) != 65 or key[0] != 4:
        raise BadSubscription("keys.p256dh is not an uncompressed P-256 point")
    if len(secret) != 16:
        raise BadSubscription("keys.auth must be 16 bytes")


def subscribe(
    session: Session, target: Subscriber, endpoint: str, p256dh: str, auth: str, now: dt.datetime
) -> None:
    """Store (or refresh the keys of) a subscription; the same browser subscribing twice is one row."""
    subscribe_many(session, [(target, endpoint, p256dh, auth)], now)


def subscribe_many(session: Session, items: list[tuple[Subscriber, str, str, str]], now: dt.datetime) -> None:
    """`subscribe` for many subscriptions in one statement (imports, tests, benchmarks)."""
    rows = [
        {
            "account_id": target.account_id,
            "target_kind": target.kind,
            "group_id": target.group_id,
            "target_key": target.key,
            "endpoint": endpoint,
            "endpoint_digest": hashlib.sha256(endpoint.encode()).hexdigest(),
            "p256dh": p256dh,
            "auth": auth,
            "created_at": now,
        }
        for target, endpoint, p256dh, auth in items
    ]
    if not rows:
        return
    statement = upsert_insert(session, PushSubscription)
    statement = statement.on_conflict_do_update(
        index_elements=["target_kind", "target_key", "endpoint_digest"],
        set_={"p256dh": statement.excluded.p256dh, "auth": statement.excluded.auth},
    )
    session.execute(statement, rows)


def unsubscribe(session: Session, kind: str, key: str, endpoint: str) -> int:
    digest = hashlib.sha256(endpoint.encode()).hexdigest()
    result = session.execute(
        delete(PushSubscription).where(
            PushSubscription.target_kind == kind,
            PushSubscription.target_key == key,
            PushSubscription.endpoint_digest == digest,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _message(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise ApiError(200, "Missing parameter: message")
    if len(text) > MAX_MESSAGE:
        raise bad_value("message", f"At most {MAX_MESSAGE} characters.")
    return text


def queue_fanout(ctx: ApiContext, group: Group, message: str, target_key: str = "") -> PushFanout:
    """A durable push to every subscription of the group (or of one target in it)."""
    text = _message(message)
    query = select(func.count()).where(
        PushSubscription.target_kind == group.kind, PushSubscription.group_id == group.id
    )
    if target_key:
        query = query.where(PushSubscription.target_key == target_key)
    count = int(ctx.session.scalar(query) or 0)
    fanout = PushFanout(
        account_id=group.account_id,
        target_kind=group.kind,
        group_id=group.id,
        target_key=target_key,
        message=text,
        title=group.title[:200],
        url=group.url_template,
        status="queued" if count else "done",
        queued=count,
        sent=0,
        failed=0,
        removed=0,
        cursor=0,
        created_at=ctx.now,
        finished_at=None if count else ctx.now,
    )
    ctx.session.add(fanout)
    ctx.session.flush()
    if count:
        enqueue(ctx.session, FANOUT, {"fanout_id": fanout.id}, run_at=ctx.now)
    return fanout


def answer(ctx: ApiContext, fanout: PushFanout) -> dict[str, Any]:
    """The v3 answer: the vendor's OK plus how many subscriptions were queued and where to follow."""
    return {
        "queued": str(fanout.queued),
        "notification": f"{PREFIX}{fanout.id}",
        "progress_url": ctx.url(f"/v4/push/fanouts/{PREFIX}{fanout.id}"),
    }


def to_public(fanout: PushFanout) -> dict[str, Any]:
    return {
        "id": f"{PREFIX}{fanout.id}",
        "kind": fanout.target_kind,
        "status": fanout.status,
        "message": fanout.message,
        "queued": fanout.queued,
        "sent": fanout.sent,
        "failed": fanout.failed,
        "removed": fanout.removed,
        "created_at": fmt(fanout.created_at),
        "finished_at": fmt(fanout.finished_at),
    }


def get_fanout(ctx: ApiContext, raw: str) -> PushFanout:
    fanout_id = ids.parse_public_id(raw, PREFIX, "id", FANOUT_NOT_FOUND)
    found = ctx.session.scalar(
        select(PushFanout).where(PushFanout.id == fanout_id, ctx.scope(PushFanout.account_id))
    )
    if found is None:
        raise FANOUT_NOT_FOUND
    return found
