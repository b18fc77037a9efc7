from __future__ import annotations

from alembic import context

from opencoupon import models  # noqa: F401  (registers every table on Base.metadata)
from opencoupon.db.base import Base
from opencoupon.db.engine import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""


def run_migrations_online() -> None:
    engine = make_engine(url, pool_size=1)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
