"""Enqueue work in the caller's transaction (the outbox)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from opencoupon.kit.clock import utcnow
from opencoupon.models import Job


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: dt.datetime | None = None,
    max_attempts: int = 10,
) -> Job:
    now = utcnow()
    job = Job(
        kind=kind,
        payload=json.dumps(payload),
        status="queued",
        attempts=0,
        max_attempts=max_attempts,
        run_at=run_at or now,
        locked_by="",
        last_error="",
        created_at=now,
    )
    session.add(job)
    return job


def enqueue_many(
    session: Session,
    kind: str,
    payloads: list[dict[str, Any]],
    *,
    run_at: dt.datetime | None = None,
    max_attempts: int = 10,
    claimed_by: str = "",
    lease: dt.timedelta | None = None,
) -> list[int]:
    """`enqueue` for many jobs of one kind in one statement; their IDs in order.

    With `claimed_by` the jobs start out claimed by that runner (for `lease`): it runs them right
    after the commit, and if it dies they are claimed again when the lease runs out, like any job.
    """
    if not payloads:
        return []
    now = utcnow()
    claimed = bool(claimed_by)
    rows = [
        {
            "kind": kind,
            "payload": json.dumps(payload),
            "status": "running" if claimed else "queued",
            "attempts": 1 if claimed else 0,
            "max_attempts": max_attempts,
            "run_at": run_at or now,
            "locked_by": claimed_by,
            "locked_until": now + lease if claimed and lease else None,
            "last_error": "",
            "created_at": now,
        }
        for payload in payloads
    ]
    table = cast(Table, Job.__table__)
    return list(session.execute(insert(table).returning(table.c.id), rows).scalars().all())
