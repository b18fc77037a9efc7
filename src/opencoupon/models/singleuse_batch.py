"""A dashboard single-use batch (or recipient import): its progress and, once done, its links."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from opencoupon.db.base import Base


class SingleUseBatch(Base):
    """Kept in the database so any server process can show the progress and serve the CSV: the
    batch runs as an outbox job (`singleuse.batch`), possibly in another process. Public ID
    `batch_<id>`."""

    __tablename__ = "singleuse_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    # batch (links made by the job) / import (recipients from a CSV, made in the request)
    kind: Mapped[str] = mapped_column(String(16), default="batch")
    # queued / running / done / failed
    status: Mapped[str] = mapped_column(String(16), default="queued")
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    # The batch's settings (singleuse.service.BatchSpec as JSON).
    spec: Mapped[str] = mapped_column(Text, default="{}")
    # Why it failed, or a note on a finished import.
    message: Mapped[str] = mapped_column(Text, default="")
    # The links as CSV, zlib-compressed; NULL until done. Deferred: megabytes that only the
    # download reads, not the progress fragment polled every second.
    result: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # The outbox job that runs it (jobs.id; no foreign key: jobs are the worker's to clean up).
    job_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
