"""An index on a session's custom validation code in lower case, per campaign.

The staff page and the session searches find a custom validation code in any letter case; a code
not found as typed, in upper or in lower case, was looked up by scanning the campaign's sessions.

On PostgreSQL the index is built CONCURRENTLY (outside the migration's transaction): a plain CREATE
INDEX would hold up every write to coupon_sessions (opens, claims, validations) while it reads the
whole table. An index left invalid by an interrupted build is dropped and built again.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEX = "ix_coupon_sessions_campaign_custom_code_lower"


COLUMNS: list[str | sa.TextClause] = ["campaign_id", sa.text("lower(custom_validation_code)")]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(INDEX, "coupon_sessions", COLUMNS, unique=False)
        return
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="coupon_sessions", postgresql_concurrently=True, if_exists=True)
        op.create_index(INDEX, "coupon_sessions", COLUMNS, unique=False, postgresql_concurrently=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(INDEX, table_name="coupon_sessions")
        return
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="coupon_sessions", postgresql_concurrently=True)
