"""An index on a session's custom validation code in lower case, per campaign.

The staff page and the session searches find a custom validation code in any letter case; a code
not found as typed, in upper or in lower case, was looked up by scanning the campaign's sessions.

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


def upgrade() -> None:
    op.create_index(
        INDEX, "coupon_sessions", ["campaign_id", sa.text("lower(custom_validation_code)")], unique=False
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="coupon_sessions")
