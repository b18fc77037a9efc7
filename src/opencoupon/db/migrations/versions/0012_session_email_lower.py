"""An index on a claimed session's email in lower case (sessions that hold an email only).

A privacy export or erasure (privacy/) looks a person up by email in any letter case across the
caller's sessions; without this index that read every session of the account, about two seconds
at a million sessions, and an erasure held the SQLite write lock meanwhile. Partial: sessions
opened without a claim (most of them) hold no email and add nothing to it.

On PostgreSQL it is built CONCURRENTLY, as 0010's index is (writes to coupon_sessions go on).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

INDEX = "ix_coupon_sessions_email_lower"
COLUMNS: list[str | sa.TextClause] = [sa.text("lower(email)")]
WHERE = sa.text("email <> ''")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(INDEX, "coupon_sessions", COLUMNS, unique=False, sqlite_where=WHERE)
        return
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="coupon_sessions", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            INDEX,
            "coupon_sessions",
            COLUMNS,
            unique=False,
            postgresql_where=WHERE,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(INDEX, table_name="coupon_sessions")
        return
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="coupon_sessions", postgresql_concurrently=True)
