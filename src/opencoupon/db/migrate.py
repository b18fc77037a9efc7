"""Run Alembic migrations programmatically (`opencoupon migrate`, app start-up, tests)."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import make_url

from opencoupon.db.engine import normalize_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


@contextmanager
def migration_turn(url: str) -> Iterator[None]:
    """On SQLite, one process at a time reads or changes the schema: a lock on a file beside the
    database (several `migrate` or `serve` started together on one machine). The check before a
    migration runs in the same turn: read while another process was creating the database or
    switching it to WAL, it failed with "database is locked". PostgreSQL takes its own turn
    (an advisory lock, in migrations/env.py)."""
    parsed = make_url(normalize_url(url))
    database = parsed.database or ""
    if (
        parsed.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
    ):
        yield
        return
    path = Path(database + ".migrate-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(url: str, revision: str = "head", *, before: Callable[[str], None] | None = None) -> None:
    """Migrate to `revision`; `before(url)` runs first in the same turn (e.g. refusing a database
    a newer version migrated)."""
    with migration_turn(url):
        if before is not None:
            before(url)
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    with migration_turn(url):
        command.downgrade(alembic_config(url), revision)
