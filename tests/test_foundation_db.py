"""The schema: migrations produce exactly what the models declare (on the suite's database, SQLite or
PostgreSQL), and every migration can be undone and redone on a scratch SQLite file."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from opencoupon import models  # noqa: F401  (registers every table)
from opencoupon.db.base import Base
from opencoupon.db.migrate import downgrade, upgrade
from opencoupon.db.session import Database
from opencoupon.runtime import Runtime


def _differences(database: Database) -> list[object]:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_models_and_migrations_agree(runtime: Runtime) -> None:
    assert _differences(runtime.db) == []


def test_migrations_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
    database = Database(url)
    try:
        assert _differences(database) == []
    finally:
        database.dispose()


def _custom_code_index(database: Database) -> tuple[str, bool] | None:
    with database.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :name"
            ),
            {"name": "ix_coupon_sessions_campaign_custom_code_lower"},
        ).one_or_none()
    return None if row is None else (str(row[0]), bool(row[1]))


def test_postgres_migrations_build_the_custom_code_index_concurrently(scratch_postgres: str) -> None:
    """Migration 0010 builds its index with CREATE INDEX CONCURRENTLY (writes to coupon_sessions go
    on meanwhile), outside the migration's transaction; an index of that name left behind by an
    interrupted build is replaced; downgrade and upgrade again leave the models' schema."""
    upgrade(scratch_postgres, "0009")
    database = Database(scratch_postgres)
    try:
        with database.engine.begin() as conn:  # what a build stopped half-way can leave behind
            conn.execute(
                text("CREATE INDEX ix_coupon_sessions_campaign_custom_code_lower ON coupon_sessions (id)")
            )
        upgrade(scratch_postgres)
        found = _custom_code_index(database)
        assert found is not None
        definition, valid = found
        assert valid
        assert "(campaign_id, lower((custom_validation_code)::text))" in definition
        downgrade(scratch_postgres, "0009")
        assert _custom_code_index(database) is None
        upgrade(scratch_postgres)
        assert _differences(database) == []
    finally:
        database.dispose()
