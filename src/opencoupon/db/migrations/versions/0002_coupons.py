"""coupons: lock date, PIN failures, custom-code counter and usage-data indexes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("coupon_sessions") as batch:
        batch.add_column(sa.Column("locked_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("pin_failures", sa.Integer(), server_default="0", nullable=False))
        batch.create_index("ix_coupon_sessions_campaign_opened", ["campaign_id", "opened_at"])
        batch.create_index("ix_coupon_sessions_campaign_claimed", ["campaign_id", "claimed_at"])
        batch.create_index("ix_coupon_sessions_campaign_validated", ["campaign_id", "validated_at"])
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("custom_codes_issued", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("custom_codes_issued")
    with op.batch_alter_table("coupon_sessions") as batch:
        batch.drop_index("ix_coupon_sessions_campaign_validated")
        batch.drop_index("ix_coupon_sessions_campaign_claimed")
        batch.drop_index("ix_coupon_sessions_campaign_opened")
        batch.drop_column("pin_failures")
        batch.drop_column("locked_at")
