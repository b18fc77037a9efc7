"""Enqueue work in the caller's transaction (the outbox)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import insert
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
) -> None:
    """`enqueue` for many jobs of one kind in one statement (fan-outs)."""
    if not payloads:
        return
    now = utcnow()
    rows = [
        {
            "kind": kind,
            "payload": json.dumps(payload),
            "status": "queued",
            "attempts": 0,
            "max_attempts": max_attempts,
            "run_at": run_at or now,
            "locked_by": "",
            "last_error": "",
            "created_at": now,
        }
        for payload in payloads
    ]
    session.execute(insert(Job), rows)
