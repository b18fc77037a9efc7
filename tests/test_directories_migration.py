"""Migration 0006 creates exactly what the directory models describe, and can be undone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import opencoupon.models  # noqa: F401  (every table on the metadata)
from opencoupon.config import Settings
from opencoupon.db.base import Base
from opencoupon.db.engine import normalize_url
from opencoupon.db.migrate import downgrade, upgrade

TABLES = {"categories", "directories", "directory_items", "directory_users"}


def _differences(url: str) -> list[Any]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    return [d for d in diffs if TABLES & set(_tables(d))]


def _tables(diff: Any) -> list[str]:
    items = diff if isinstance(diff, list) else [diff]
    names: list[str] = []
    for item in items:
        for part in item:
            table = getattr(part, "table", None)
            name = getattr(part, "name", None)
            if table is not None:
                names.append(str(table.name))
            elif isinstance(part, str):
                names.append(part)
            elif name is not None:
                names.append(str(name))
    return names


def test_the_migrated_database_matches_the_models(settings: Settings) -> None:
    # The suite's own database (SQLite or PostgreSQL), migrated at session start.
    assert _differences(settings.database_url) == []


def test_downgrade_removes_the_tables_and_upgrade_restores_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'migrate.db'}"
    upgrade(url, "0006")
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        downgrade(url, "0005")
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(url)
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()
    assert _differences(url) == []
