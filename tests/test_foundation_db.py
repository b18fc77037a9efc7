"""The schema: migrations produce exactly what the models declare (on the suite's database, SQLite or
PostgreSQL), and every migration can be undone and redone on a scratch SQLite file."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

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
