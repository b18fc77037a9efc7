from __future__ import annotations

import time

from alembic import context
from sqlalchemy import Connection, text

from opencoupon import models  # noqa: F401  (registers every table on Base.metadata)
from opencoupon.db.base import Base
from opencoupon.db.engine import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""

# Two `opencoupon migrate` (or `serve`, which migrates first) started together on PostgreSQL: the
# second waits on this session-level lock (it outlives the autocommit blocks some migrations use)
# and then finds the schema up to date, instead of racing to create alembic_version or to move
# its one row. On SQLite (one machine) a lock on a file beside the database does the same
# (db.migrate.migration_turn): each migration there commits on its own, so the database's write
# lock alone does not serialize them.
MIGRATION_LOCK_KEY = 0x6F63_6D69_6772  # "ocmigr"


def _lock(connection: Connection) -> None:
    """Take the lock by polling, each attempt in a transaction of its own: a process blocked in
    pg_advisory_lock would hold a transaction open, which the holder's CREATE INDEX CONCURRENTLY
    waits for (a deadlock)."""
    while True:
        taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        got = bool(taken.scalar_one())
        connection.commit()
        if got:
            return
        time.sleep(0.2)


def run_migrations_online() -> None:
    # On SQLite, db.migrate.upgrade/downgrade have taken their turn on the file lock already.
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                _lock(connection)
            try:
                context.configure(
                    connection=connection,
                    target_metadata=Base.metadata,
                    render_as_batch=connection.dialect.name == "sqlite",
                    compare_type=True,
                    # Each migration commits with its version stamp (as SQLite always did): on
                    # PostgreSQL one transaction for all kept every ALTER TABLE's lock (campaigns,
                    # accounts...) until the end, the API waiting meanwhile, and an interrupted
                    # run lost the migrations it had finished.
                    transaction_per_migration=True,
                )
                with context.begin_transaction():
                    context.run_migrations()
            finally:
                if postgres:
                    if connection.in_transaction():
                        connection.rollback()
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    connection.commit()
    finally:
        engine.dispose()


run_migrations_online()
