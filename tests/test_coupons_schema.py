"""The coupon models and the migration chain describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import opencoupon.models  # noqa: F401  (every table registered on the metadata)
from opencoupon.db.base import Base
from opencoupon.runtime import Runtime

OURS = ("campaigns", "coupon_sessions", "validations", "campaign_daily_stats")


def _mentions_ours(diff: object) -> bool:
    return any(name in repr(diff) for name in OURS)


def test_coupon_tables_match_the_migrations(runtime: Runtime) -> None:
    with runtime.db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    assert [d for d in diffs if _mentions_ours(d)] == []
