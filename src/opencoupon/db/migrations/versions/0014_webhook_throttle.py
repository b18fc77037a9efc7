"""webhook_throttle: a per-endpoint delivery rate limit (messages per second).

`webhook_endpoints.rate_limit` (NULL: no limit, as before) and `throttle_next_at` (the endpoint's
first free sending slot, moved on by every reservation); `webhook_messages.throttled_until` (the
slot a message's next attempt reserved). All nullable: existing rows keep their behaviour, and
adding them is a catalogue change only on both databases (no table rewrite).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_endpoints", sa.Column("rate_limit", sa.Integer(), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("throttle_next_at", sa.DateTime(), nullable=True))
    op.add_column("webhook_messages", sa.Column("throttled_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35): a batch copy of webhook_endpoints would have
    # to carry 0013's partial unique index over by reflection.
    op.drop_column("webhook_messages", "throttled_until")
    op.drop_column("webhook_endpoints", "throttle_next_at")
    op.drop_column("webhook_endpoints", "rate_limit")
