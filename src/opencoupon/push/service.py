"""Subscriptions and fan-outs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Select, delete, exists, func, select
from sqlalchemy.orm import Session

from opencoupon.db.session import upsert_insert
from opencoupon.errors import ApiError, bad_value
from opencoupon.kit import ids
from opencoupon.kit.dates import fmt
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import CouponSession, PushFanout, PushSubscription
from opencoupon.push import ece
from opencoupon.push.targets import COUPON, Group, Subscriber
from opencoupon.push.vapid import b64url_decode
from opencoupon.webhooks import ssrf
from opencoupon.worker.queue import enqueue

FANOUT = "push.fanout"
PREFIX = "psh_"
MAX_MESSAGE = 1000
# Subscriptions kept per coupon session or card holder: a new one beyond this replaces the one
# subscribed longest ago (a person has a few browsers, not hundreds).
MAX_PER_TARGET = 10
FANOUT_NOT_FOUND = ApiError(404, "Push notification not found.", http_status=404)


class BadSubscription(ValueError):
    pass


def check_subscription(endpoint: str, p256dh: str, auth: str, *, allow_private: bool) -> None:
    """A browser PushSubscription: an https push service URL under the webhook SSRF rules (its
    host resolved now: every address public), a P-256 public key, a 16-byte secret. Blocking (the
    name lookup): call it from a worker thread."""
    try:
        ssrf.split(endpoint, allow_private=allow_private)
    except ssrf.UnsafeTarget as exc:
        raise BadSubscription(f"endpoint: {exc}") from None
    try:
        key, secret = b64url_decode(p256dh), b64url_decode(auth)
    except ValueError:
        raise BadSubscription("keys are not base64url") from None
    if len(key) != 65 or key[0] != 4 or not valid_point(key):
        raise BadSubscription("keys.p256dh is not an uncompressed P-256 point")
    if len(secret) != 16:
        raise BadSubscription("keys.auth must be 16 bytes")
    # Last: the lookup is the slow part, and a malformed subscription needs none.
    try:
        ssrf.check_url(endpoint, allow_private=allow_private)
    except ssrf.UnsafeTarget as exc:
        raise BadSubscription(f"endpoint: {exc}") from None


def valid_point(key: bytes) -> bool:
    """Whether `key` is a point on P-256 (what encrypting for the subscriber needs)."""
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    except ValueError:
        return False
    return True


def subscribe(
    session: Session, target: Subscriber, endpoint: str, p256dh: str, auth: str, now: dt.datetime
) -> None:
    """Store (or refresh the keys of) a subscription; the same browser subscribing twice is one row.
    The target keeps its `MAX_PER_TARGET` most recently subscribed browsers."""
    subscribe_many(session, [(target, endpoint, p256dh, auth)], now)
    keep = (
        select(PushSubscription.id)
        .where(PushSubscription.target_kind == target.kind, PushSubscription.target_key == target.key)
        .order_by(PushSubscription.created_at.desc(), PushSubscription.id.desc())
        .limit(MAX_PER_TARGET)
    )
    session.execute(
        delete(PushSubscription).where(
            PushSubscription.target_kind == target.kind,
            PushSubscription.target_key == target.key,
            PushSubscription.id.not_in(list(session.scalars(keep))),
        )
    )


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
        set_={
            "p256dh": statement.excluded.p256dh,
            "auth": statement.excluded.auth,
            # Subscribed again: the most recent for the per-target cap.
            "created_at": statement.excluded.created_at,
        },
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


def payload(title: str, message: str, url: str, tag: str) -> bytes:
    """What a subscriber's browser gets (before encryption): compact JSON, UTF-8 as it is (escaping
    every non-ASCII character as \\uXXXX would take up to six bytes for one)."""
    return json.dumps(
        {"title": title, "body": message, "url": url, "tag": tag}, separators=(",", ":"), ensure_ascii=False
    ).encode()


# The longest target key and tag a payload can get (session codes are 21 characters; holder IDs
# and fan-out IDs are integers).
_LONGEST_KEY = "x" * 21
_LONGEST_TAG = f"{PREFIX}{'9' * 19}"


def _message(ctx: ApiContext, group: Group, raw: str, target_key: str) -> str:
    text = raw.strip()
    if not text:
        raise ApiError(200, "Missing parameter: message")
    if len(text) > MAX_MESSAGE:
        raise bad_value("message", f"At most {MAX_MESSAGE} characters.")
    # The API never accepts what cannot be sent: the payload must fit in one push record.
    url = ctx.url(group.url_template.replace("{key}", target_key or _LONGEST_KEY))
    size = len(payload(group.title[:200], text, url, _LONGEST_TAG))
    if size > ece.MAX_PLAINTEXT:
        raise bad_value(
            "message",
            f"Too long to send as a push notification: with the title and link it takes {size} bytes "
            f"as UTF-8, and one push message holds {ece.MAX_PLAINTEXT}. Shorten it (characters "
            "outside ASCII, such as emoji, take 2 to 4 bytes each).",
        )
    return text


def deliverable(query: Select[Any], kind: str) -> Select[Any]:
    """`query` over push subscriptions without those nothing is pushed to any more: the
    subscriptions of removed coupon sessions (removed single-use links)."""
    if kind == COUPON:
        removed = exists().where(
            CouponSession.code == PushSubscription.target_key, CouponSession.removed_at.is_not(None)
        )
        query = query.where(~removed)
    return query


def queue_fanout(ctx: ApiContext, group: Group, message: str, target_key: str = "") -> PushFanout:
    """A durable push to every subscription of the group (or of one target in it)."""
    text = _message(ctx, group, message, target_key)
    query = select(func.count()).where(
        PushSubscription.target_kind == group.kind, PushSubscription.group_id == group.id
    )
    if target_key:
        query = query.where(PushSubscription.target_key == target_key)
    count = int(ctx.session.scalar(deliverable(query, group.kind)) or 0)
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
