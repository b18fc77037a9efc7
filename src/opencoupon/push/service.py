"""Subscriptions and fan-outs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, TypeVarTuple

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Select, delete, exists, func, select, update
from sqlalchemy.orm import Session, aliased

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

_Ts = TypeVarTuple("_Ts")

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
    check_keys(p256dh, auth)
    # Last: the lookup is the slow part, and a malformed subscription needs none.
    try:
        ssrf.check_url(endpoint, allow_private=allow_private)
    except ssrf.UnsafeTarget as exc:
        raise BadSubscription(f"endpoint: {exc}") from None


def check_keys(p256dh: str, auth: str) -> None:
    try:
        key, secret = b64url_decode(p256dh), b64url_decode(auth)
    except ValueError:
        raise BadSubscription("keys are not base64url") from None
    if len(key) != 65 or key[0] != 4 or not valid_point(key):
        raise BadSubscription("keys.p256dh is not an uncompressed P-256 point")
    if len(secret) != 16:
        raise BadSubscription("keys.auth must be 16 bytes")


def _keys_valid(p256dh: str, auth: str) -> bool:
    try:
        check_keys(p256dh, auth)
    except BadSubscription:
        return False
    return True


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
            "endpoint_digest": digest_of(endpoint),
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


def digest_of(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()


def refresh(session: Session, target: Subscriber, endpoint: str, p256dh: str, auth: str) -> bool:
    """Whether `target` holds this browser subscription; if it does, with keys the browser changed
    stored (only well-formed ones: the subscribe route's key checks)."""
    row = session.scalar(
        select(PushSubscription).where(
            PushSubscription.target_kind == target.kind,
            PushSubscription.target_key == target.key,
            PushSubscription.endpoint_digest == digest_of(endpoint),
        )
    )
    if row is None:
        return False
    if (row.p256dh, row.auth) != (p256dh, auth) and _keys_valid(p256dh, auth):
        row.p256dh, row.auth = p256dh, auth
    return True


def targets_of(session: Session, endpoint: str) -> int:
    """How many targets get pushes on this browser subscription."""
    query = select(func.count()).where(PushSubscription.endpoint_digest == digest_of(endpoint))
    return int(session.scalar(query) or 0)


def renew(session: Session, previous: str, endpoint: str, p256dh: str, auth: str) -> int:
    """Move every target of the `previous` endpoint to the renewed subscription (already checked);
    how many. A target that holds the new endpoint already keeps that row alone."""
    old, new = digest_of(previous), digest_of(endpoint)
    if old == new:
        result = session.execute(
            update(PushSubscription)
            .where(PushSubscription.endpoint_digest == old)
            .values(p256dh=p256dh, auth=auth)
        )
        return int(getattr(result, "rowcount", 0) or 0)
    newer = aliased(PushSubscription)
    both = exists().where(
        newer.target_kind == PushSubscription.target_kind,
        newer.target_key == PushSubscription.target_key,
        newer.endpoint_digest == new,
    )
    merged = session.execute(delete(PushSubscription).where(PushSubscription.endpoint_digest == old, both))
    moved = session.execute(
        update(PushSubscription)
        .where(PushSubscription.endpoint_digest == old)
        .values(endpoint=endpoint, endpoint_digest=new, p256dh=p256dh, auth=auth)
    )
    return int(getattr(merged, "rowcount", 0) or 0) + int(getattr(moved, "rowcount", 0) or 0)


def unsubscribe(session: Session, kind: str, key: str, endpoint: str) -> int:
    digest = digest_of(endpoint)
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


def page_path(url_template: str, target_key: str) -> str:
    """The page a notification opens for one target: a group's `url_template` with its key."""
    return url_template.replace("{key}", target_key)


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
    url = ctx.url(page_path(group.url_template, target_key or _LONGEST_KEY))
    size = len(payload(group.title[:200], text, url, _LONGEST_TAG))
    if size > ece.MAX_PLAINTEXT:
        raise bad_value(
            "message",
            f"Too long to send as a push notification: with the title and link it takes {size} bytes "
            f"as UTF-8, and one push message holds {ece.MAX_PLAINTEXT}. Shorten it (characters "
            "outside ASCII, such as emoji, take 2 to 4 bytes each).",
        )
    return text


def deliverable(query: Select[*_Ts], kind: str) -> Select[*_Ts]:
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
    query = select(func.count(), func.max(PushSubscription.id)).where(
        PushSubscription.target_kind == group.kind, PushSubscription.group_id == group.id
    )
    if target_key:
        query = query.where(PushSubscription.target_key == target_key)
    found = ctx.session.execute(deliverable(query, group.kind)).one()
    count = int(found[0] or 0)
    # The fan-out sends to these subscriptions only: one made after this call is not part of it
    # (it would make the counts overshoot `queued`).
    last_id = int(found[1] or 0)
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
        last_subscription_id=last_id,
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
    """Progress: once `done`, `sent + failed + removed == queued`."""
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
