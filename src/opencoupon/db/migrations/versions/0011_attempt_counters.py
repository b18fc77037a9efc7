"""attempt_counters: wrong-PIN lockouts and sign-in limits counted in the database.

They were counted in each API process's memory, so N processes (`serve --workers N`, or several
machines on one PostgreSQL) allowed N times the attempts. One row per key and window, bumped by a
single-statement upsert (atomic on SQLite and PostgreSQL).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempt_counters",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_attempt_counters")),
    )
    op.create_index(op.f("ix_attempt_counters_expires_at"), "attempt_counters", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_attempt_counters_expires_at"), table_name="attempt_counters")
    op.drop_table("attempt_counters")
