"""Dashboard batches of single-use links kept in the database (table singleuse_batches).

A batch is queued in the request's transaction together with its outbox job, so it survives the
process that started it; any process reads its progress and its CSV from the row. The links
themselves are made by singleuse.service.create_batch, the same all-or-nothing code as the API."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import zlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from opencoupon.errors import ApiError
from opencoupon.kit import ids
from opencoupon.kit.csvcell import csv_cell
from opencoupon.models import SingleUseBatch
from opencoupon.singleuse.service import BatchSpec
from opencoupon.worker import housekeeping
from opencoupon.worker.queue import enqueue_many

KIND = "singleuse.batch"
# A failure is recorded on the batch row by the handler, so the job itself is not retried; more
# attempts only serve a process that died during one.
MAX_ATTEMPTS = 5
PREFIX = "batch_"
# Finished batches (and their links) are kept this long; the worker's housekeeping deletes older
# ones, and so does the account starting another one.
KEEP = housekeeping.LINK_BATCH_RETENTION
RECENT = 10
CSV_COLUMNS = [
    "single_use_code",
    "single_use_url",
    "widget_validation_code",
    "custom_validation_code",
    "customid",
]


def public_id(batch: SingleUseBatch) -> str:
    return ids.public_id(PREFIX, batch.id)


def links_csv(items: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow([csv_cell(item.get(name, "")) for name in CSV_COLUMNS])
    return out.getvalue()


def pack(text: str) -> bytes:
    # Level 1: most of a link list is random codes, which no level compresses; the repeated URL
    # prefix compresses at any level, and level 1 keeps 100,000 links well under a second.
    return zlib.compress(text.encode("utf-8"), 1)


def unpack(blob: bytes) -> str:
    return zlib.decompress(blob).decode("utf-8")


def _forget_old(session: Session, account_id: int, now: dt.datetime) -> None:
    session.execute(
        delete(SingleUseBatch).where(
            SingleUseBatch.account_id == account_id,
            SingleUseBatch.status.in_(("done", "failed")),
            SingleUseBatch.finished_at < now - KEEP,
        )
    )


def queue_batch(
    session: Session,
    account_id: int,
    campaign_id: int,
    spec: BatchSpec,
    *,
    now: dt.datetime,
    runner: str,
    lease: dt.timedelta,
) -> tuple[SingleUseBatch, int]:
    """The batch row and its job, in the caller's transaction. The job starts out claimed by
    `runner` (the caller runs it right after the commit); if that process dies, the job is claimed
    again by a worker when the lease runs out, and runs then."""
    _forget_old(session, account_id, now)
    batch = SingleUseBatch(
        account_id=account_id,
        campaign_id=campaign_id,
        kind="batch",
        status="queued",
        total=spec.amount,
        done=0,
        spec=json.dumps(dataclasses.asdict(spec)),
        message="",
        created_at=now,
        updated_at=now,
    )
    session.add(batch)
    session.flush()
    [job_id] = enqueue_many(
        session, KIND, [{"batch": batch.id}], claimed_by=runner, lease=lease, max_attempts=MAX_ATTEMPTS
    )
    batch.job_id = job_id
    session.flush()
    return batch, job_id


def record_import(
    session: Session,
    account_id: int,
    campaign_id: int,
    csv_text: str,
    total: int,
    note: str,
    now: dt.datetime,
) -> SingleUseBatch:
    """A finished recipient import (made in the caller's transaction, with its links)."""
    _forget_old(session, account_id, now)
    batch = SingleUseBatch(
        account_id=account_id,
        campaign_id=campaign_id,
        kind="import",
        status="done",
        total=total,
        done=total,
        spec="{}",
        message=note,
        result=pack(csv_text),
        created_at=now,
        updated_at=now,
        finished_at=now,
    )
    session.add(batch)
    session.flush()
    return batch


def spec_of(batch: SingleUseBatch) -> BatchSpec:
    return BatchSpec(**json.loads(batch.spec))


def get(session: Session, scope: ColumnElement[bool], raw: str) -> SingleUseBatch | None:
    """The batch `batch_N` within the tenancy scope; None when malformed, unknown or not reachable."""
    if not raw.startswith(PREFIX):
        return None
    try:
        number = ids.parse_public_id(raw, PREFIX, "batch", ApiError(404, "No such batch."))
    except ApiError:
        return None
    return session.scalar(select(SingleUseBatch).where(SingleUseBatch.id == number, scope))


def recent(session: Session, scope: ColumnElement[bool]) -> Sequence[SingleUseBatch]:
    return session.scalars(
        select(SingleUseBatch).where(scope).order_by(SingleUseBatch.id.desc()).limit(RECENT)
    ).all()


def mark(session: Session, batch_id: int, from_states: tuple[str, ...], **values: Any) -> bool:
    """Move the batch on, only from one of `from_states` (a conditional UPDATE: of two runs of
    one job, only one changes the row); True when it did."""
    result = session.execute(
        update(SingleUseBatch)
        .where(SingleUseBatch.id == batch_id, SingleUseBatch.status.in_(from_states))
        .values(**values)
    )
    return bool(getattr(result, "rowcount", 0))
