"""The worker's housekeeping: rows past their use are deleted, in batches; everything still in use
is kept."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from conftest import TestAccount
from coupons_fixtures import create_campaign
from opencoupon.kit.clock import utcnow
from opencoupon.models import AttemptCounter, IdempotencyRecord, Job, OneTimeToken, SingleUseBatch
from opencoupon.runtime import Runtime
from opencoupon.worker import housekeeping


def test_sweep_deletes_what_is_past_its_use_and_keeps_the_rest(
    runtime: Runtime, account: TestAccount
) -> None:
    now = utcnow()
    day = dt.timedelta(days=1)
    ttl = dt.timedelta(hours=runtime.settings.idempotency_ttl_hours)
    tag = f"hk-{now.timestamp()}"
    with runtime.db.transaction() as session:
        for name, created in (("old-1", now - ttl - day), ("old-2", now - ttl - day), ("fresh", now)):
            session.add(
                IdempotencyRecord(
                    account_id=account.id, key=f"{tag}-{name}", request_hash="h", created_at=created
                )
            )
        for name, expires in (("expired-1", now - day), ("expired-2", now - day), ("live", now + day)):
            session.add(
                OneTimeToken(
                    account_id=account.id,
                    purpose="reset",
                    token_digest=f"{tag}-{name}",
                    created_at=now - 2 * day,
                    expires_at=expires,
                )
            )
        jobs = (
            ("done", now - 8 * day),  # past JOB_RETENTION: goes
            ("done", now - day),  # kept
            ("dead", now - 8 * day),  # dead ones are kept longer
            ("dead", now - 31 * day),  # past DEAD_JOB_RETENTION: goes
            ("queued", None),  # never touched
        )
        for status, finished in jobs:
            session.add(
                Job(
                    kind=tag,
                    payload="{}",
                    status=status,
                    run_at=now - 40 * day,
                    created_at=now - 40 * day,
                    finished_at=finished,
                )
            )
        # Wrong-PIN and sign-in counts: two whose window is over, one still running.
        for name, expires in (("over-1", now - day), ("over-2", now), ("running", now + day)):
            session.add(AttemptCounter(key=f"{tag}:{name}", count=3, expires_at=expires))
    swept = housekeeping.sweep(runtime, now=now, batch=1)  # one row per transaction: batches loop
    assert swept.idempotency_records >= 2
    assert swept.one_time_tokens >= 2
    assert swept.jobs >= 2
    assert swept.attempt_counters >= 2
    with runtime.db.read() as session:
        keys = set(
            session.scalars(select(IdempotencyRecord.key).where(IdempotencyRecord.key.startswith(tag)))
        )
        tokens = set(
            session.scalars(
                select(OneTimeToken.token_digest).where(OneTimeToken.token_digest.startswith(tag))
            )
        )
        counters = set(session.scalars(select(AttemptCounter.key).where(AttemptCounter.key.startswith(tag))))
        left = sorted(
            session.execute(select(Job.status, Job.finished_at).where(Job.kind == tag)).all(), key=str
        )
    assert keys == {f"{tag}-fresh"}
    assert tokens == {f"{tag}-live"}
    assert counters == {f"{tag}:running"}
    assert sorted(status for status, _finished in left) == ["dead", "done", "queued"]
    assert all(finished is None or finished > now - 9 * day for _status, finished in left)


def test_sweep_deletes_link_batches_finished_past_their_keep(runtime: Runtime, account: TestAccount) -> None:
    """Dashboard batches of single-use links (their lists may hold customids that are emails)
    are kept 7 days for download, as the privacy docs say; they stayed until the same account
    started another batch, which might be never."""
    campaign_id = int(create_campaign(account)["id"].removeprefix("cam_"))
    now = utcnow()
    day = dt.timedelta(days=1)
    rows = {
        "old done": ("done", now - 8 * day),
        "old failed": ("failed", now - 8 * day),
        "recent": ("done", now - day),
        "running": ("running", None),
    }
    with runtime.db.transaction() as session:
        for name, (status, finished) in rows.items():
            session.add(
                SingleUseBatch(
                    account_id=account.id,
                    campaign_id=campaign_id,
                    status=status,
                    message=name,
                    created_at=now - 9 * day,
                    updated_at=now - 9 * day,
                    finished_at=finished,
                )
            )
    swept = housekeeping.sweep(runtime, now=now)
    assert swept.link_batches >= 2
    with runtime.db.read() as session:
        left = set(
            session.scalars(select(SingleUseBatch.message).where(SingleUseBatch.campaign_id == campaign_id))
        )
    assert left == {"recent", "running"}
