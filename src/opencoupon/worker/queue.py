"""Enqueue work in the caller's transaction (the outbox)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from opencoupon.db import raw
from opencoupon.kit.clock import utcnow
from opencoupon.models import Job


def encode(payload: dict[str, Any]) -> str:
    """A job's payload as stored (`jobs.payload`); `pending` finds jobs by it."""
    return json.dumps(payload, sort_keys=True)


def pending(session: Session, kind: str, payloads: list[dict[str, Any]]) -> set[str]:
    """Which of `payloads` (encoded) have a job of `kind` still queued or running. One query for
    them all, through the status index: asked one payload at a time, a replay of thousands of
    events read every queued job once per event."""
    encoded = [encode(payload) for payload in payloads]
    found: set[str] = set()
    for start in range(0, len(encoded), 500):
        found.update(
            session.scalars(
                select(Job.payload).where(
                    Job.status.in_(("queued", "running")),
                    Job.kind == kind,
                    Job.payload.in_(encoded[start : start + 500]),
                )
            )
        )
    return found


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
        payload=encode(payload),
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
            "payload": encode(payload),
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


# `enqueue` for the hot paths (every validation's event), as one statement on the driver.
_INSERT_QUEUED = raw.RawStatement(
    "INSERT INTO jobs (kind, payload, status, attempts, max_attempts, run_at, locked_by, last_error, "
    "created_at) VALUES (:kind, :payload, 'queued', 0, :max_attempts, :now, '', '', :now)"
)


def enqueue_fast(session: Session, kind: str, payload: dict[str, Any], *, max_attempts: int = 10) -> None:
    """`enqueue` without an ORM object: a queued job with the same defaults, in the caller's
    transaction."""
    params = {"kind": kind, "payload": encode(payload), "max_attempts": max_attempts, "now": utcnow()}
    raw.execute(session, _INSERT_QUEUED, params)
